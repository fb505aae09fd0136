"""Validate every image/mask pair before anything trains on it.

Errors (the pair is left out): undecodable or truncated files, image/mask size mismatch.
Warnings (the pair is kept, converted): RGBA or 16-bit images, masks with colour or many grey levels.
Empty masks are not problems: they are negative frames, counted.

Checking decodes every file (about 6 s for CVC-ClinicDB on 2 cores), so the per-pair results are
cached, keyed like the decoded cache by every file's path, size and mtime: a training or evaluation
run on unchanged data starts without re-reading it, and any changed file is checked again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from polypseg import atomic
from polypseg.data.cache import cache_home, fingerprint
from polypseg.data.layouts import Dataset, Pair
from polypseg.errors import PolypsegError
from polypseg.imageio import to_rgb_uint8, truncation_problem


def frame_hash(rgb: np.ndarray) -> str:
    """A decoded frame's identity, by its pixels: the same frame in another file, folder, name or lossless
    format has the same hash. Checkpoints list their training frames' hashes, so that `evaluate` never
    scores a model on a frame it trained on, wherever that frame is found."""
    rgb = np.ascontiguousarray(rgb)
    return hashlib.sha256(f"{rgb.shape}".encode() + rgb.tobytes()).hexdigest()[:16]


@dataclass
class PairReport:
    pair: Pair
    size: tuple[int, int] | None = None  # (height, width)
    negative: bool = False
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    hash: str | None = None  # frame_hash of the image, as read_rgb decodes it


@dataclass
class Validation:
    dataset: Dataset
    reports: list[PairReport]

    @property
    def good(self) -> list[Pair]:
        return [r.pair for r in self.reports if not r.errors]

    @property
    def hashes(self) -> dict[str, str]:
        """Each usable frame's name -> the hash of its pixels (what checkpoints list as training frames)."""
        return {r.pair.name: r.hash for r in self.reports if not r.errors and r.hash}

    @property
    def problems(self) -> list[tuple[str, str, str]]:
        """(severity, file, message) for every problem, pairing problems first."""
        out = [("error", f, m) for f, m in self.dataset.problems]
        for r in self.reports:
            out += [("error", str(r.pair.image), m) for m in r.errors]
            out += [("warning", str(r.pair.image), m) for m in r.warnings]
        return out

    def summary(self) -> dict:
        good = [r for r in self.reports if not r.errors]
        sizes = Counter(f"{w}x{h}" for r in good for (h, w) in [r.size])
        return {
            "root": self.dataset.label,
            "layout": self.dataset.layout,
            "pairs": len(good),
            "negatives": sum(r.negative for r in good),
            "image_sizes": dict(sizes.most_common()),
            "errors": sum(1 for s, _, _ in self.problems if s == "error"),
            "warnings": sum(1 for s, _, _ in self.problems if s == "warning"),
            "problems": [{"severity": s, "file": f, "problem": m} for s, f, m in self.problems],
        }


def _read(path) -> tuple[np.ndarray | None, str | None]:
    trunc = truncation_problem(path)
    if trunc:
        return None, trunc
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        return None, "cannot decode (corrupt or unsupported file)"
    return img, None


def check_pair(pair: Pair) -> PairReport:
    rep = PairReport(pair)
    img, err = _read(pair.image)
    if err:
        rep.errors.append(f"image: {err}")
    mask, err = _read(pair.mask)
    if err:
        rep.errors.append(f"mask {pair.mask.name}: {err}")
    if img is None or mask is None:
        return rep
    rep.size = img.shape[:2]
    try:
        rep.hash = frame_hash(to_rgb_uint8(img, bgr=True))  # the pixels read_rgb gives, decoded once here
    except PolypsegError:
        pass  # an unsupported pixel type: reported below
    if img.dtype == np.uint16:
        rep.warnings.append("16-bit image (converted to 8-bit)")
    elif img.dtype != np.uint8:
        rep.errors.append(f"unsupported pixel type {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 4:
        rep.warnings.append("RGBA image (alpha channel dropped)")
    if mask.shape[:2] != img.shape[:2]:
        h, w = img.shape[:2]
        mh, mw = mask.shape[:2]
        rep.errors.append(f"mask {pair.mask.name} is {mw}x{mh} but image is {w}x{h}")
        return rep
    if mask.dtype == np.uint16:
        mask = (mask / 257).astype(np.uint8)
    if mask.ndim == 3:
        m3 = mask[:, :, :3].astype(np.int16)
        if np.abs(m3 - m3.mean(axis=2, keepdims=True)).max() > 40:
            rep.warnings.append(f"mask {pair.mask.name} has colour (binarised on its brightest channel)")
        mask = mask[:, :, :3].max(axis=2)
    binary = mask > 127
    rep.negative = not binary.any()
    # Anti-aliased edges are normal; a mask whose mid-grey pixels are a large share is probably not a mask.
    mid = np.count_nonzero((mask > 32) & (mask < 224))
    if mid > 0.2 * max(1, np.count_nonzero(binary)) and mid > 1000:
        rep.warnings.append(f"mask {pair.mask.name} has many grey levels (binarised at > 127)")
    return rep


CHECK_VERSION = 2  # bump when check_pair's rules change: old cached results are then ignored


def _to_json(r: PairReport) -> dict:
    return {
        "size": r.size,
        "negative": r.negative,
        "errors": r.errors,
        "warnings": r.warnings,
        "hash": r.hash,
    }


def _from_json(pair: Pair, d: dict) -> PairReport:
    size = tuple(d["size"]) if d["size"] else None
    return PairReport(pair, size, bool(d["negative"]), list(d["errors"]), list(d["warnings"]), d["hash"])


def validate(
    dataset: Dataset,
    workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> Validation:
    """Check every pair; results for unchanged files come from the cache (`use_cache=False` re-reads all)."""
    entry = None
    if use_cache and dataset.pairs:
        try:
            key = f"v{CHECK_VERSION}-{fingerprint(dataset.pairs)}"
        except OSError:  # a file vanished since discovery: check_pair reports it
            key = None
        if key:
            entry = Path(cache_dir or cache_home()) / "validated" / f"{key}.json"
            try:
                saved = json.loads(entry.read_text())
                return _mark_duplicates(
                    Validation(dataset, [_from_json(p, saved[p.name]) for p in dataset.pairs])
                )
            except (OSError, ValueError, KeyError, TypeError):
                pass  # no entry, or a damaged one: check again and rewrite it
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        reports = list(pool.map(check_pair, dataset.pairs))
    if entry is not None:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_json(entry, {r.pair.name: _to_json(r) for r in reports})
        except OSError:
            pass  # a read-only cache only costs speed
    return _mark_duplicates(Validation(dataset, reports))


def _mark_duplicates(v: Validation) -> Validation:
    """A warning on every frame whose pixels another frame repeats under another name: if the two fall on
    both sides of a split, the test frame was trained on."""
    by_hash: dict[str, list[PairReport]] = {}
    for r in v.reports:
        if r.hash and not r.errors:
            by_hash.setdefault(r.hash, []).append(r)
    for same in by_hash.values():
        for r in same if len(same) > 1 else ():
            others = ", ".join(o.pair.name for o in same if o is not r)
            r.warnings.append(
                f"the same pixels as {others} (a duplicate frame: keep copies on one side of a split)"
            )
    return v

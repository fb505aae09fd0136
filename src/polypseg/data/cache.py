"""Decode and resize a dataset once into uint8 arrays, cached on disk.

Layout of one cache entry (a folder named by the fingerprint):
  images.npy  (N, 3, H, W) uint8 RGB
  masks.npy   (N, 1, H, W) uint8 in {0, 1}
  meta.json   names, original sizes, fingerprint
The fingerprint covers the file list, sizes, mtimes and the target size, so any changed,
added or removed file gives a new entry. Nothing is written next to the data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polypseg.data.layouts import Pair
from polypseg.imageio import read_mask, read_rgb, resize_mask, resize_to

CACHE_VERSION = 1


def cache_home() -> Path:
    env = os.environ.get("POLYPSEG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "polypseg"


def fingerprint(pairs: list[Pair], size: tuple[int, int] | None = None) -> str:
    """Hash of names, paths, byte sizes and mtimes of every file (and the target size, if given)."""
    h = hashlib.sha256(f"v{CACHE_VERSION} size={size}".encode())
    for p in pairs:
        for f in (p.image, p.mask):
            st = f.stat()
            h.update(f"{p.name}|{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def content_fingerprint(pairs: list[Pair]) -> str:
    """Hash of names and file contents: identifies a dataset wherever it is copied (paths and mtimes aside).

    Checkpoints record it, so `evaluate --split test` recognises the training data in any copy.
    """
    h = hashlib.sha256(b"polypseg-dataset-v1")
    for p in pairs:
        h.update(p.name.encode() + b"\0")
        for f in (p.image, p.mask):
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:20]


@dataclass
class Decoded:
    images: np.ndarray  # (N, 3, H, W) uint8
    masks: np.ndarray  # (N, 1, H, W) uint8 0/1
    names: list[str]
    sizes: list[tuple[int, int]]  # original (height, width) of each frame
    fingerprint: str

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.images.shape[2:])


def _decode_one(pair: Pair, height: int, width: int):
    img = read_rgb(pair.image)
    mask = read_mask(pair.mask)
    return resize_to(img, height, width).transpose(2, 0, 1), resize_mask(mask, height, width), img.shape[:2]


def decode(
    pairs: list[Pair], height: int, width: int, workers: int | None = None, progress: bool = False
) -> Decoded:
    """Decode and resize every pair (no cache)."""
    workers = workers or min(8, os.cpu_count() or 1)
    n = len(pairs)
    images = np.empty((n, 3, height, width), np.uint8)
    masks = np.empty((n, 1, height, width), np.uint8)
    sizes: list[tuple[int, int]] = [(0, 0)] * n
    with ThreadPoolExecutor(workers) as pool:
        it = pool.map(lambda p: _decode_one(p, height, width), pairs)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=n, desc="decoding", unit="img", leave=False, disable=None)
        for i, (img, mask, size) in enumerate(it):
            images[i], masks[i, 0], sizes[i] = img, mask, size
    return Decoded(images, masks, [p.name for p in pairs], sizes, fingerprint(pairs, (height, width)))


def load_decoded(
    pairs: list[Pair],
    height: int,
    width: int,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Decoded:
    """Decoded arrays for `pairs` at (height, width), from the cache when its fingerprint matches."""
    fp = fingerprint(pairs, (height, width))
    entry = Path(cache_dir or cache_home()) / "decoded" / fp
    if (entry / "meta.json").is_file():
        try:
            meta = json.loads((entry / "meta.json").read_text())
            return Decoded(
                np.load(entry / "images.npy"),
                np.load(entry / "masks.npy"),
                meta["names"],
                [tuple(s) for s in meta["sizes"]],
                fp,
            )
        except (OSError, ValueError, KeyError):
            shutil.rmtree(entry, ignore_errors=True)  # a damaged entry is rebuilt, never trusted
    dec = decode(pairs, height, width, progress=progress)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".tmp-"))
        np.save(tmp / "images.npy", dec.images)
        np.save(tmp / "masks.npy", dec.masks)
        (tmp / "meta.json").write_text(
            json.dumps({"names": dec.names, "sizes": dec.sizes, "fingerprint": fp})
        )
        try:
            os.replace(tmp, entry)  # atomic: readers see a whole entry or none
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
    except OSError:
        pass  # a read-only cache only costs speed
    return dec

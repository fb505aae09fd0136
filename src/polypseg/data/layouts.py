"""Recognise dataset layouts and pair every image with its mask.

Layouts (DESIGN.md):
  * CVC-ClinicDB: ``Original/`` + ``Ground Truth/``, PNG or TIFF, optionally under ``PNG/`` or ``TIF/``.
  * Kvasir-SEG / PraNet: ``images/`` + ``masks/`` with equal stems.
  * PolypGen: ``images/X.jpg`` + ``masks/X_mask.jpg``.
  * explicit ``--images DIR --masks DIR``.
Pairing is by file stem, never by sort order, so a missing file can never shift masks onto wrong images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from polypseg.errors import PolypsegError
from polypseg.imageio import is_image_file

DEFAULT_DATASET = "CVC-ClinicDB"
KNOWN_NAMES = {"cvc-clinicdb": "CVC-ClinicDB", "polypgen-val": "PolypGen-val"}


@dataclass(frozen=True)
class Pair:
    name: str  # the image's stem, unique within a dataset
    image: Path
    mask: Path


@dataclass
class Dataset:
    root: Path
    layout: str
    pairs: list[Pair]
    # Files that could not be paired or are not images: (path, problem).
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.pairs]


def data_home() -> Path:
    """Folder of datasets: $POLYPSEG_DATA, else ~/.cache/polypseg/datasets."""
    env = os.environ.get("POLYPSEG_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "polypseg" / "datasets"


def resolve_data(data: str | os.PathLike | None) -> Path:
    """Turn ``--data`` into a folder: a path, a known dataset name, or (None) the default dataset."""
    if data is None:
        path = data_home() / DEFAULT_DATASET
    else:
        path = Path(data).expanduser()
        if not path.exists() and str(data).lower() in KNOWN_NAMES:
            path = data_home() / KNOWN_NAMES[str(data).lower()]
    if not path.is_dir():
        hint = (
            ""
            if data is not None
            else " (set --data or $POLYPSEG_DATA, or run `polypseg data download cvc-clinicdb`)"
        )
        raise PolypsegError(f"data folder not found: {path}{hint}")
    return path


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _find_cvc(root: Path) -> tuple[Path, Path] | None:
    for base in (root, root / "PNG", root / "TIF", root / "png", root / "tif"):
        if (base / "Original").is_dir() and (base / "Ground Truth").is_dir():
            return base / "Original", base / "Ground Truth"
    return None


def _find_images_masks(root: Path) -> tuple[Path, Path] | None:
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return root / "images", root / "masks"
    return None


def pair_folders(images: Path, masks: Path, root: Path | None = None, layout: str = "explicit") -> Dataset:
    """Pair images and masks by stem; a mask may carry a ``_mask`` suffix (PolypGen)."""
    if not images.is_dir():
        raise PolypsegError(f"images folder not found: {images}")
    if not masks.is_dir():
        raise PolypsegError(f"masks folder not found: {masks}")
    problems: list[tuple[str, str]] = []
    mask_by_stem: dict[str, Path] = {}
    for m in _files(masks):
        if not is_image_file(m):
            problems.append((str(m), "not an image file (ignored)"))
            continue
        stem = m.stem[: -len("_mask")] if m.stem.endswith("_mask") else m.stem
        if stem in mask_by_stem:
            problems.append((str(m), f"second mask for image stem {stem!r} (ignored)"))
            continue
        mask_by_stem[stem] = m
    pairs, seen = [], set()
    for img in _files(images):
        if not is_image_file(img):
            problems.append((str(img), "not an image file (ignored)"))
            continue
        if img.stem in seen:
            problems.append((str(img), f"second image with stem {img.stem!r} (ignored)"))
            continue
        seen.add(img.stem)
        mask = mask_by_stem.get(img.stem)
        if mask is None:
            problems.append((str(img), "no mask with the same name"))
            continue
        pairs.append(Pair(img.stem, img, mask))
    for stem, m in mask_by_stem.items():
        if stem not in seen:
            problems.append((str(m), "mask without an image"))
    pairs.sort(key=lambda p: _natural_key(p.name))
    if layout == "images+masks" and any(p.mask.stem.endswith("_mask") for p in pairs):
        layout = "polypgen"
    return Dataset(root or images.parent, layout, pairs, problems)


def _natural_key(name: str):
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def discover(
    data: str | os.PathLike | None = None, images: str | None = None, masks: str | None = None
) -> Dataset:
    """Find every image/mask pair of a dataset folder (or of explicit image and mask folders)."""
    if images or masks:
        if not (images and masks):
            raise PolypsegError("--images and --masks go together")
        return pair_folders(Path(images), Path(masks))
    root = resolve_data(data)
    found = _find_cvc(root)
    if found:
        return pair_folders(*found, root=root, layout="cvc-clinicdb")
    found = _find_images_masks(root)
    if found:
        return pair_folders(*found, root=root, layout="images+masks")
    raise PolypsegError(
        f"{root}: no known layout (expected Original/ + 'Ground Truth/', or images/ + masks/; "
        "or pass --images DIR --masks DIR)"
    )

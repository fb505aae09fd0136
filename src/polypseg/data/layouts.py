"""Recognise dataset layouts and pair every image with its mask.

Layouts (DESIGN.md):
  * CVC-ClinicDB: ``Original/`` + ``Ground Truth/``, PNG or TIFF, optionally under ``PNG/`` or ``TIF/``.
  * Kvasir-SEG / PraNet: ``images/`` + ``masks/`` with equal stems.
  * PolypGen: ``images/X.jpg`` + ``masks/X_mask.jpg``.
  * explicit ``--images DIR --masks DIR``.
Pairing is by file stem, never by sort order, so a missing file can never shift masks onto wrong images.
Several dataset folders combine into one (``--data A --data B``, e.g. the PraNet protocol's Kvasir-SEG +
CVC-ClinicDB): each frame is then named ``FOLDER/stem`` and keeps its own dataset's groups.
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
    # A combination's datasets by the prefix of their frames' names (empty for one dataset).
    parts: dict[str, Dataset] = field(default_factory=dict)
    # Each usable frame's name -> the hash of its pixels (validate.frame_hash), once training has validated it.
    hashes: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.pairs]

    @property
    def roots(self) -> list[Path]:
        return [d.root for d in self.parts.values()] if self.parts else [self.root]

    @property
    def label(self) -> str:
        """The data folder, or the combined folders joined by ' + ', for messages and reports."""
        return " + ".join(str(r) for r in self.roots)


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
        if data is None:
            hint = " (set --data or $POLYPSEG_DATA, or run `polypseg data download cvc-clinicdb`)"
        elif os.sep in str(data) or str(data).lower() in KNOWN_NAMES:
            hint = ""
        else:  # a bare word: perhaps a misspelt dataset name
            hint = f" (a folder, or one of the names {', '.join(sorted(KNOWN_NAMES))} under {data_home()})"
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


def discover(data=None, images: str | None = None, masks: str | None = None) -> Dataset:
    """Find every image/mask pair of a dataset folder (or of explicit image and mask folders).

    `data` is a folder or name, or a list of them: two or more are combined (see `combine`).
    """
    if isinstance(data, (list, tuple)):
        if len(data) > 1:
            if images or masks:
                raise PolypsegError(
                    "--images/--masks name one dataset; combine dataset folders with --data only"
                )
            return combine([discover(d) for d in data])
        data = data[0] if data else None
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


def combined_name(dataset: str, stem: str) -> str:
    """The name of a frame of a combination: FOLDER/stem (stems and folder names hold no '/')."""
    return f"{dataset}/{stem}"


def split_name(name: str) -> tuple[str, str]:
    """(dataset, stem) of a frame's name; dataset is '' for a frame of a single dataset."""
    dataset, _, stem = name.rpartition("/")
    return dataset, stem


def combine(datasets: list[Dataset]) -> Dataset:
    """One dataset of several: frames named ``FOLDER/stem`` (unique even where stems repeat across
    datasets), in the given order; problems pooled; each part kept for its groups (splits.load_groups)."""
    parts: dict[str, Dataset] = {}
    for d in datasets:
        prefix = d.root.name
        if prefix in parts:
            same = parts[prefix].root.resolve() == d.root.resolve()
            raise PolypsegError(
                f"{d.root}: given twice"
                if same
                else f"two datasets are named {prefix!r} ({parts[prefix].root}, {d.root}); frames are named "
                "FOLDER/stem, so the folders' names must differ"
            )
        parts[prefix] = d
    pairs = [
        Pair(combined_name(prefix, p.name), p.image, p.mask) for prefix, d in parts.items() for p in d.pairs
    ]
    layout = " + ".join(f"{prefix} ({d.layout})" for prefix, d in parts.items())
    problems = [pr for d in datasets for pr in d.problems]
    return Dataset(datasets[0].root, f"combined: {layout}", pairs, problems, parts)

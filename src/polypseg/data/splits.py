"""Frame groups (video sequences) and leak-free, reproducible splits.

Frames of one sequence show the same polyp from nearly the same view; a split that puts one
sequence on both sides leaks test polyps into training. Group splits are the default.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

import numpy as np

from polypseg import atomic
from polypseg.data.layouts import Dataset, combined_name, split_name
from polypseg.errors import PolypsegError

METHODS = ("group", "frame", "kfold", "none")
NO_GROUPS = "no groups given: each frame is its own group (pass --groups CSV for video sequences)"


def _read_group_csv(lines) -> dict[str, str]:
    rows = list(csv.reader(lines))
    if not rows:
        return {}
    start = 1 if not rows[0][0].strip().isdigit() and len(rows) > 1 else 0
    out = {}
    for row in rows[start:]:
        if len(row) >= 2 and row[0].strip():
            path = Path(row[0].strip())
            out[path.stem] = row[1].strip()
            if path.parent.name:  # FOLDER/stem names a frame of combined datasets
                out[combined_name(path.parent.name, path.stem)] = row[1].strip()
    return out


def cvc_clinicdb_groups() -> dict[str, str]:
    """Frame -> sequence of CVC-ClinicDB (29 sequences), as published with the database."""
    text = resources.files("polypseg.data").joinpath("cvc_clinicdb_sequences.csv").read_text()
    return _read_group_csv(text.splitlines())


def load_groups(dataset: Dataset, groups_csv: str | os.PathLike | None = None) -> tuple[list[str], str]:
    """Return one group id per pair and a sentence saying where they came from.

    Combined datasets: a CSV names frames FOLDER/stem (or stem alone); without one, each part's own groups
    (a built-in table, or one per frame), prefixed FOLDER/ so that no two datasets share a group.
    """
    names = dataset.names
    if groups_csv:
        path = Path(groups_csv)
        if not path.is_file():
            raise PolypsegError(f"groups file not found: {path}")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise PolypsegError(f"cannot read groups file {path}: {e}") from None
        table = _read_group_csv(text.splitlines())
        if dataset.parts:  # a bare stem names a frame only where no other dataset has that stem
            stems = [split_name(n)[1] for n in names]
            once = {st for st, c in Counter(stems).items() if c == 1}
            table.update(
                {n: table[st] for n, st in zip(names, stems) if n not in table and st in once & table.keys()}
            )
        missing = [n for n in names if n not in table]
        if missing:
            raise PolypsegError(f"{path}: no group for {len(missing)} frames, e.g. {missing[0]!r}")
        return [table[n] for n in names], f"groups from {path}"
    if dataset.parts:
        group_of, sources = {}, []
        for prefix, part in dataset.parts.items():
            groups, source = load_groups(part)
            group_of.update(
                {combined_name(prefix, n): combined_name(prefix, g) for n, g in zip(part.names, groups)}
            )
            sources.append(f"{prefix}: {source}")
        return [group_of[n] for n in names], f"each dataset's own groups ({'; '.join(sources)})"
    if dataset.layout == "cvc-clinicdb":
        table = cvc_clinicdb_groups()
        if all(n in table for n in names):
            return [table[n] for n in names], "CVC-ClinicDB sequences (built-in table, 29 sequences)"
    return list(names), NO_GROUPS


@dataclass
class Split:
    method: str
    seed: int
    train: list[str]
    val: list[str]
    fold: int | None = None
    folds: int | None = None
    val_groups: list[str] = field(default_factory=list)
    train_fraction: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        atomic.write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict, source: str = "") -> Split:
        what = (
            f"{source}: not a polypseg split (the split.json a run writes)"
            if source
            else "not a polypseg split"
        )
        if not isinstance(d, dict):
            raise PolypsegError(f"{what}: expected a JSON object, got {type(d).__name__}")
        missing = [k for k in ("method", "seed", "train", "val") if k not in d]
        if missing:
            raise PolypsegError(f"{what}: no {', '.join(missing)}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise PolypsegError(f"{what}: unknown key(s) {', '.join(unknown)}")
        split = cls(**d)
        if not all(
            isinstance(v, list) and all(isinstance(n, str) for n in v) for v in (split.train, split.val)
        ):
            raise PolypsegError(f"{what}: train and val must be lists of frame names")
        return split

    @classmethod
    def load(cls, path: str | os.PathLike) -> Split:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PolypsegError(f"cannot read split {path}: {e}") from None
        return cls.from_dict(d, str(path))

    def indices(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the train and val frames in `names`; every split name must be present."""
        pos = {n: i for i, n in enumerate(names)}
        missing = [n for n in self.train + self.val if n not in pos]
        if missing:
            raise PolypsegError(f"split names {len(missing)} frames not in the data, e.g. {missing[0]!r}")
        return np.array([pos[n] for n in self.train], dtype=np.int64), np.array(
            [pos[n] for n in self.val], dtype=np.int64
        )


def kfold_assign(names: list[str], groups: list[str], folds: int, seed: int) -> dict[str, int]:
    """Assign whole groups to `folds` folds, balancing frame counts (largest groups first)."""
    uniq, counts = np.unique(np.asarray(groups), return_counts=True)
    if len(uniq) < folds:
        raise PolypsegError(
            f"{len(uniq)} group(s) cannot make {folds} folds; set data.folds to at most {len(uniq)}"
            if len(uniq) >= 2
            else f"grouped k-fold needs at least 2 groups (video sequences); this data has {len(uniq)}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-counts[order], kind="stable")]
    load = np.zeros(folds, dtype=np.int64)
    fold_of = {}
    for i in order:
        f = int(np.argmin(load + rng.random(folds) * 1e-3))  # ties broken at random, reproducibly
        fold_of[str(uniq[i])] = f
        load[f] += counts[i]
    return fold_of


def make_split(
    names: list[str],
    groups: list[str],
    method: str = "group",
    val_fraction: float = 0.2,
    folds: int = 5,
    fold: int = 0,
    seed: int = 0,
    train_fraction: float = 1.0,
) -> Split:
    """Grouped holdout ("group"), grouped k-fold ("kfold", fold `fold` of `folds` is val), random ("frame"),
    or "none": every frame trains (a final model; nothing is held out, so nothing is validated).

    `train_fraction` < 1 then keeps that share of the training groups (see `subsample_groups`)."""
    if method not in METHODS:
        raise PolypsegError(f"unknown split method {method!r}; choose from {', '.join(METHODS)}")
    if len(names) != len(groups):
        raise ValueError("one group per name")
    rng = np.random.default_rng(seed)
    garr = np.asarray(groups)
    if method == "none":
        train = list(names)
        if train_fraction < 1:
            train = subsample_groups(train, list(groups), train_fraction, seed)
        return Split(method, seed, train, [], train_fraction=train_fraction)
    if method == "frame":
        perm = rng.permutation(len(names))
        n_val = max(1, round(val_fraction * len(names)))
        val_idx = set(perm[:n_val].tolist())
        val_groups: list[str] = []
    elif method == "kfold":
        if not 0 <= fold < folds:
            raise PolypsegError(f"fold must be in 0..{folds - 1}")
        fold_of = kfold_assign(names, groups, folds, seed)
        val_groups = sorted(g for g, f in fold_of.items() if f == fold)
        val_idx = set(np.flatnonzero(np.isin(garr, val_groups)).tolist())
    else:
        uniq = np.unique(garr)
        if len(uniq) < 2:
            raise PolypsegError(
                f"a grouped split needs at least 2 groups (video sequences); this data has {len(uniq)}. "
                "Pass a --groups CSV with more sequences, or use data.split_by=frame (leaky)"
            )
        target = val_fraction * len(names)
        val_groups, count = [], 0
        for g in rng.permutation(uniq):
            if count >= target:
                break
            val_groups.append(str(g))
            count += int((garr == g).sum())
        val_groups.sort()
        val_idx = set(np.flatnonzero(np.isin(garr, val_groups)).tolist())
    train = [n for i, n in enumerate(names) if i not in val_idx]
    val = [n for i, n in enumerate(names) if i in val_idx]
    if not train or not val:
        raise PolypsegError("split leaves one side empty; use more data or another val fraction")
    if train_fraction < 1:
        group_of = dict(zip(names, groups if method != "frame" else names))
        train = subsample_groups(train, [group_of[n] for n in train], train_fraction, seed)
    return Split(
        method,
        seed,
        train,
        val,
        fold=fold if method == "kfold" else None,
        folds=folds if method == "kfold" else None,
        val_groups=val_groups,
        train_fraction=train_fraction,
    )


def subsample_groups(names: list[str], groups: list[str], fraction: float, seed: int) -> list[str]:
    """Keep the frames of round(fraction x groups) whole groups, at least one, in `names`' order.

    The groups are ranked once per seed, by their own random stream (the split's draws are unchanged),
    and the first ones kept: for one seed, a smaller fraction's frames are a subset of a larger one's,
    so a learning curve varies only the amount of data.
    """
    if not 0 < fraction <= 1:
        raise PolypsegError(f"train fraction must be in (0, 1], got {fraction}")
    uniq = sorted(set(groups))
    rank = np.random.default_rng([seed, 1]).permutation(len(uniq))
    keep = {uniq[i] for i in rank[: max(1, round(fraction * len(uniq)))]}
    return [n for n, g in zip(names, groups) if g in keep]


def check_no_leak(split: Split, names: list[str], groups: list[str]) -> None:
    """Raise if a group appears on both sides (a frame split is allowed to, by design)."""
    if split.method in ("frame", "none"):
        return
    g = dict(zip(names, groups))
    both = {g[n] for n in split.train} & {g[n] for n in split.val}
    if both:
        raise PolypsegError(f"split leaks groups across train and val: {sorted(both)[:5]}")

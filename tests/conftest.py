"""Shared fixtures: the real data in ../shared/datasets, a small real subset, and a tiny trained model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _datasets() -> Path:
    env = os.environ.get("POLYPSEG_DATA")
    return Path(env).resolve() if env else ROOT.parent / "shared" / "datasets"


DATASETS = _datasets()
CVC = DATASETS / "CVC-ClinicDB"
POLYPGEN = DATASETS / "PolypGen-val"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # Tests never write into the user's ~/.cache.
    os.environ["POLYPSEG_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["POLYPSEG_DATA"] = str(DATASETS)


@pytest.fixture(scope="session")
def cvc() -> Path:
    if not CVC.is_dir():
        pytest.skip(f"real data not found at {CVC} (CI always has it)")
    return CVC


@pytest.fixture(scope="session")
def polypgen() -> Path:
    if not POLYPGEN.is_dir():
        pytest.skip(f"real data not found at {POLYPGEN} (CI always has it)")
    return POLYPGEN


def cli(command: str, checkpoint, *args) -> int:
    """`polypseg COMMAND --checkpoint CHECKPOINT ARGS...` in this process: its exit status."""
    from polypseg.cli import main

    return main([command, "--checkpoint", str(checkpoint), *map(str, args)])


def plain_mode(is_dir: bool) -> int:
    """The permission bits a plain open() or mkdir() gives here (the umask applied)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if is_dir else 0o666) & ~umask


def real_batch(cvc: Path, frames, height: int, width: int):
    """CVC-ClinicDB frames resized for the network: uint8 images (B,3,H,W) and masks (B,1,H,W)."""
    import numpy as np
    import torch

    from polypseg.imageio import read_mask, read_rgb, resize_mask, resize_to

    imgs = [resize_to(read_rgb(cvc / "PNG" / "Original" / f"{n}.png"), height, width) for n in frames]
    masks = [resize_mask(read_mask(cvc / "PNG" / "Ground Truth" / f"{n}.png"), height, width) for n in frames]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(np.stack(masks))[:, None].to(torch.uint8)


SUBSET_FRAMES = {  # frame -> sequence: 10 frames from each of 4 CVC-ClinicDB sequences
    **{n: 1 for n in range(1, 11)},
    **{n: 2 for n in range(26, 36)},
    **{n: 3 for n in range(51, 61)},
    **{n: 5 for n in range(80, 90)},
}


@pytest.fixture(scope="session")
def cvc_subset(cvc, tmp_path_factory) -> Path:
    """40 real CVC-ClinicDB frames as images/ + masks/ symlinks, with groups.csv beside them."""
    root = tmp_path_factory.mktemp("subset")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for n in SUBSET_FRAMES:
        (root / "images" / f"{n}.png").symlink_to(cvc / "PNG" / "Original" / f"{n}.png")
        (root / "masks" / f"{n}.png").symlink_to(cvc / "PNG" / "Ground Truth" / f"{n}.png")
    (root.parent / f"{root.name}_groups.csv").write_text(
        "frame,sequence\n" + "".join(f"{n},{s}\n" for n, s in SUBSET_FRAMES.items())
    )
    return root


@pytest.fixture(scope="session")
def subset_groups(cvc_subset) -> Path:
    return cvc_subset.parent / f"{cvc_subset.name}_groups.csv"


TINY = [
    "model.width=4",
    "data.height=64",
    "data.width=80",
    "optim.epochs=2",
    "optim.batch_size=8",
    "optim.warmup_epochs=1",
    "augment.rotate=10",
]


@pytest.fixture(scope="session")
def tiny_run(cvc_subset, subset_groups, tmp_path_factory) -> Path:
    """A tiny UNet++ trained for 2 epochs on the real subset: a real checkpoint for downstream tests."""
    from polypseg.config import load_config
    from polypseg.train import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = load_config(overrides=TINY + [f"data.groups={subset_groups}"])
    train(cfg, out=out, data=cvc_subset, progress=False)
    return out


def csv_rows(path) -> list[dict]:
    """The rows of a CSV file the tools wrote (metrics.csv, per_image.csv), the file closed again."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))

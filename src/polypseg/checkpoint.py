"""Self-describing checkpoints: saved atomically, loaded with a clear error when they are not ours.

A checkpoint is a plain dict (nanoGPT style). `describe()` is everything except tensors, so the same
description travels in .pt files, in safetensors metadata and in ONNX metadata.

    format, format_version, package_version
    arch        {"name": "unetpp", "kwargs": {...}}
    input       {"height", "width", "color": "RGB", "dtype": "uint8 0-255", "normalization"}
    threshold   probability threshold for masks
    min_score   (optional, set by `export --min-score`) lowest peak probability of a component counted
                as a polyp; absent means 0, every component above the threshold
    config, split, dataset {"fingerprint", "root", "frames"}, metrics, epoch
    model       state_dict
    (last.pt only) optimizer, scheduler, ema, rng, train_state
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from polypseg import __version__, atomic
from polypseg.errors import PolypsegError
from polypseg.models import MODELS, create_model, set_head
from polypseg.models.blocks import IMAGENET_MEAN, IMAGENET_STD

FORMAT = "polypseg-checkpoint"
FORMAT_VERSION = 1
TENSOR_KEYS = ("model", "optimizer", "scheduler", "ema", "rng")


def input_spec(height: int, width: int) -> dict:
    return {
        "height": height,
        "width": width,
        "color": "RGB",
        "dtype": "uint8 0-255 (float 0-255 accepted)",
        "normalization": {
            "inside_model": True,
            "mean": [m * 255 for m in IMAGENET_MEAN],
            "std": [s * 255 for s in IMAGENET_STD],
        },
        "resize": "cv2.INTER_AREA when shrinking, INTER_LINEAR when growing (polypseg.imageio.resize_to)",
    }


def make_checkpoint(model: nn.Module, arch: dict, height: int, width: int, **extra) -> dict:
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "arch": arch,
        "input": input_spec(height, width),
        "threshold": 0.5,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    ckpt.update(extra)
    return ckpt


def describe(ckpt: dict) -> dict:
    return {k: v for k, v in ckpt.items() if k not in TENSOR_KEYS}


def save_atomic(ckpt: dict, path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename: a kill never leaves half a file."""
    with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
        torch.save(ckpt, f)
        f.flush()
        os.fsync(f.fileno())


def _check(ckpt, path) -> dict:
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise PolypsegError(f"{path}: not a polypseg checkpoint")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise PolypsegError(f"{path}: checkpoint format {ckpt['format_version']} is newer than this polypseg")
    arch = ckpt.get("arch") or {}
    if arch.get("name") not in MODELS:
        raise PolypsegError(f"{path}: unknown architecture {arch.get('name')!r}; known: {', '.join(MODELS)}")
    return ckpt


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a .pt or .safetensors checkpoint as a dict (weights only: no code is unpickled)."""
    path = Path(path)
    if path.is_dir():
        if (path / "cv.json").is_file():
            raise PolypsegError(
                f"{path} is a cross-validation folder: pass one fold's model, such as {path / 'fold0' / 'best.pt'} "
                "(predict, evaluate, serve and export take the folder itself as an ensemble)"
            )
        hint = f" such as {path / 'best.pt'}" if (path / "best.pt").is_file() else ""
        raise PolypsegError(f"{path} is a folder: pass a checkpoint file{hint}")
    if not path.is_file():
        raise PolypsegError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    if path.suffix == ".onnx":
        raise PolypsegError(
            f"{path} is an exported ONNX model; this needs the .pt or .safetensors model it came from"
        )
    with open(path, "rb") as f:
        magic = f.read(4)
    # torch.save writes a zip archive (a pickle, protocol 2+, before PyTorch 1.6); anything else is not one,
    # and torch.load's message for it is an unpickler's opcode number
    if not (magic.startswith(b"PK\x03\x04") or magic.startswith(b"\x80")):
        raise PolypsegError(
            f"{path}: not a checkpoint (expected a .pt file from `polypseg train` or a .safetensors file "
            "from `polypseg export`)"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (
        Exception
    ) as e:  # torch.load raises many types (IndexError, UnpicklingError, RuntimeError...) on junk
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PolypsegError(f"{path}: corrupt or truncated checkpoint ({first[:120]})") from None
    return _check(ckpt, path)


def build_model(ckpt: dict, prune: int | None = None) -> nn.Module:
    """The model a checkpoint describes, with its weights, in eval mode; `prune` as in `set_head`
    (None: the deepest head alone, 0: the mean of the heads, 1..depth: that head's sub-network)."""
    arch = ckpt["arch"]
    model = create_model(arch["name"], **arch.get("kwargs", {}))
    try:
        model.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
        )
    except RuntimeError as e:
        raise PolypsegError(
            f"weights do not fit architecture {arch['name']}: {str(e).splitlines()[0]}"
        ) from None
    return set_head(model, prune).eval()


def save_safetensors(ckpt: dict, path: str | os.PathLike, half: bool = True) -> None:
    """Weights (fp16 if `half`) + the description as JSON metadata: the format bundled models ship in."""
    from safetensors.torch import save_file

    tensors = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in ckpt["model"].items()
    }
    # A last.pt's resume state (history, RNG, best so far) is not part of what the model is.
    meta = {"polypseg": json.dumps({k: v for k, v in describe(ckpt).items() if k != "train_state"})}
    with atomic.replacing(path) as tmp:  # which also gives the file normal permissions (safetensors: 0600)
        save_file(tensors, str(tmp), metadata=meta)


def load_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise PolypsegError(f"{path}: corrupt or unreadable safetensors file ({e})") from None
    if "polypseg" not in meta:
        raise PolypsegError(f"{path}: safetensors file without polypseg metadata")
    ckpt = json.loads(meta["polypseg"])
    ckpt["model"] = tensors
    return _check(ckpt, path)

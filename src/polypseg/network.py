"""One model behind a `Predictor`, and the checkpoints a `--checkpoint` names.

A `Network` is a PyTorch module on a device, or an ONNX Runtime session, with the input size it was
trained at: RGB uint8 frames at that size in, polyp probabilities out. A Predictor holds one, or several
(an ensemble, as nnU-Net runs its five folds), and averages their probabilities.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from polypseg.checkpoint import build_model, describe, load_checkpoint
from polypseg.devices import device_name, pick_device, use_bf16
from polypseg.errors import PolypsegError
from polypseg.models import head_name

BUNDLED = {"full": "unetpp_cvc.safetensors", "fast": "unetpp_fast_cvc.safetensors"}


def bundled_checkpoint(which: str = "full") -> Path:
    path = Path(str(resources.files("polypseg").joinpath("weights", BUNDLED[which])))
    if not path.is_file():
        raise PolypsegError("no bundled model in this install; pass --checkpoint")
    return path


def resolve_checkpoint(path: str | os.PathLike | None, default: str = "full") -> Path:
    """A checkpoint path; None or the names "full"/"fast" (with no such file: a folder of that name, such
    as a run folder, does not count) mean the bundled models."""
    if path is None:
        return bundled_checkpoint(default)
    if str(path) in BUNDLED and not Path(path).is_file():
        return bundled_checkpoint(str(path))
    return Path(path)


def cv_folds(folder: Path) -> int:
    """The number of folds a finished `polypseg cv` folder's cv.json records, or a one-line error."""
    path = folder / "cv.json"
    try:
        k = json.loads(path.read_text())["k"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise PolypsegError(
            f"{path}: not a cv.json that `polypseg cv` wrote (unreadable, or no 'k')"
        ) from None
    if not isinstance(k, int) or k < 2:
        raise PolypsegError(f"{path}: 'k' must be a number of folds (2 or more), found {k!r}")
    return k


def cv_checkpoints(folder: Path) -> list[Path]:
    """The folds' models of a finished `polypseg cv` folder (the ones its table was measured with)."""
    k = cv_folds(folder)
    paths = [folder / f"fold{i}" / "best.pt" for i in range(k)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise PolypsegError(f"{folder}: a cross-validation folder without {missing[0]}")
    return paths


def resolve_checkpoints(spec) -> list[Path]:
    """Every model a --checkpoint names: None, a path or a bundled name (one model), a finished
    `polypseg cv` folder (its folds' models), or a list of these (an ensemble)."""
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    paths: list[Path] = []
    for item in items or [None]:
        if item is not None and (Path(item) / "cv.json").is_file():
            paths += cv_checkpoints(Path(item))
        else:
            paths.append(resolve_checkpoint(item))
    return paths


def agreed(metas: list[dict], key: str, default, hint: str):
    """The value every model of an ensemble stores for `key` (its operating point), else a one-line error
    that ends with `hint`."""
    values = {m.get(key) if m.get(key) is not None else default for m in metas}
    if len(values) > 1:
        shown = ", ".join(map(str, sorted(values)))
        raise PolypsegError(f"the models store different {key.replace('_', ' ')}s ({shown}); {hint}")
    return values.pop()


def trained_frames(meta: dict) -> list[str]:
    """The pixel hashes of the frames a model trained on (`data.validate.frame_hash`); empty for a
    checkpoint from before they were recorded."""
    return list((meta.get("dataset") or {}).get("trained_frames") or ())


def head_of(meta: dict) -> str:
    kwargs = (meta.get("arch") or {}).get("kwargs", {})
    return head_name(
        int(meta.get("prune", 0)), bool(kwargs.get("deep_supervision", False)), kwargs.get("depth", 4)
    )


class Network:
    """One model: `net` (a torch module on `device`) or `session` (ONNX Runtime, CPU), and its description."""

    def __init__(self, meta: dict, device: torch.device, net=None, session=None):
        self.net = net
        self.session = session
        self.meta = meta
        self.device = device
        self.height = int(meta["input"]["height"])
        self.width = int(meta["input"]["width"])
        self.prune = int(meta.get("prune", 0))  # 0: the mean of the heads (or a single-head model)
        self.head = head_of(meta)
        self.models = len(meta.get("ensemble") or [meta])  # an ONNX graph may hold an ensemble's mean
        # bf16 where the training loop uses it (CUDA; a CPU with native bf16, unless depthwise convolutions weigh)
        self.amp = net is not None and use_bf16(device, net)

    @classmethod
    def load(cls, path: Path, device: str = "auto", prune: int | None = None) -> Network:
        """`prune`: None = the deepest head alone, 0 = the mean of the heads, 1..depth = that head's
        sub-network (an ONNX model is fixed to the head it was exported with)."""
        if path.suffix == ".onnx":
            from polypseg.export import load_onnx

            session, meta = load_onnx(path, device)
            if prune is not None and prune != meta.get("prune", 0):
                raise PolypsegError(
                    f"{path}: this ONNX model is fixed to {head_of(meta)}; export it again with --prune instead"
                )
            meta["checkpoint_path"] = str(path)
            return cls(meta, torch.device("cpu"), session=session)
        ckpt = load_checkpoint(path)
        dev = pick_device(device)
        # channels_last is faster on CUDA and, with PyTorch 2.13's oneDNN, on the CPU too (NOTES.md 36).
        model = build_model(ckpt, prune).to(dev).to(memory_format=torch.channels_last)
        meta = describe(ckpt)
        meta["checkpoint_path"] = str(path)
        meta["prune"] = getattr(model, "prune", 0)
        return cls(meta, dev, net=model)

    @torch.no_grad()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 at network size -> (B, H, W) float32 probabilities."""
        if self.session is not None:
            inp = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
            spec = self.session.get_inputs()[0]
            # A model exported without --dynamic-batch takes a fixed batch: feed it that many at a time.
            step = spec.shape[0] if isinstance(spec.shape[0], int) else len(inp)
            outs = [
                self.session.run(None, {spec.name: inp[i : i + step]})[0] for i in range(0, len(inp), step)
            ]
            return np.concatenate(outs)[:, 0]
        t = torch.from_numpy(x).to(self.device).permute(0, 3, 1, 2).float()
        t = t.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return torch.sigmoid(self.net(t).float())[:, 0].cpu().numpy()

    def flip_mean(self, x: np.ndarray) -> np.ndarray:
        """Flip TTA: the mean of the output on (B, H, W, 3) uint8 frames and their two flips."""
        p = self(x)
        p = p + self(np.ascontiguousarray(x[:, :, ::-1]))[:, :, ::-1]
        p = p + self(np.ascontiguousarray(x[:, ::-1]))[:, ::-1]
        return p / 3

    def device_name(self) -> str:
        if self.session is not None:
            provider = self.session.get_providers()[0]
            return f"{'GPU' if provider.startswith('CUDA') else 'CPU'} (ONNX Runtime, {provider})"
        return device_name(self.device)

    @property
    def precision(self) -> str:
        if self.session is not None:
            return (self.meta.get("onnx") or {}).get("precision", "fp32")
        return "bf16 autocast" if self.amp else "fp32"

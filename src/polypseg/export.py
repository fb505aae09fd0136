"""ONNX export with the preprocessing inside the graph, a parity check on real frames, and loading.

The exported graph takes ``image``: (B, 3, H, W) uint8 RGB at the checkpoint's input size, and returns
``probability``: (B, 1, H, W) float32 in 0..1. Resizing to H x W stays outside (``imageio.resize_to``),
as in training. The checkpoint's description is stored in the model's metadata under "polypseg".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from polypseg import atomic
from polypseg.checkpoint import build_model, describe, load_checkpoint, save_safetensors
from polypseg.detection import DEFAULT_MIN_AREA, check_operating_point
from polypseg.devices import parse_device
from polypseg.errors import PolypsegError
from polypseg.imageio import read_rgb, resize_to
from polypseg.network import agreed, resolve_checkpoints, trained_frames

OPSET = 17


class ProbabilityModel(nn.Module):
    """uint8 RGB batch -> probabilities: the whole inference graph in one module; with several models (an
    ensemble of one input size), the mean of their probabilities."""

    def __init__(self, model: nn.Module, *more: nn.Module):
        super().__init__()
        self.model = model
        self.more = nn.ModuleList(more)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float()
        p = torch.sigmoid(self.model(x))
        for m in self.more:
            p = p + torch.sigmoid(m(x))
        return p / (1 + len(self.more))


def sample_frames(data, height: int, width: int, n: int = 4) -> np.ndarray:
    """(n, 3, H, W) uint8 real frames from the dataset, for the parity check and calibration."""
    from polypseg.data.layouts import discover

    pairs = discover(data).pairs
    step = max(1, len(pairs) // n)
    frames = [resize_to(read_rgb(p.image), height, width) for p in pairs[::step][:n]]
    return np.stack(frames).transpose(0, 3, 1, 2).copy()


def _parity_frames(data, height: int, width: int) -> tuple[np.ndarray, str]:
    """Frames for the parity check, gathered before anything is written: real ones from `data` (or the
    default dataset); with no `data` and no default dataset installed, four seeded random frames, so that
    a checkpoint exports on a machine without data. Returns (frames, "real" | "synthetic")."""
    from polypseg.data.layouts import resolve_data

    if data is None:
        try:
            resolve_data(None)
        except PolypsegError:
            rng = np.random.default_rng(0)
            return rng.integers(0, 256, (4, 3, height, width), dtype=np.uint8), "synthetic"
    return sample_frames(data, height, width), "real"


def export_module(wrapper: nn.Module, path: Path, h: int, w: int, dynamic_batch: bool = False) -> None:
    """torch.onnx.export of a ProbabilityModel with a uint8 (B, 3, h, w) input."""
    kwargs = dict(input_names=["image"], output_names=["probability"], opset_version=OPSET)
    if dynamic_batch:
        kwargs["dynamic_axes"] = {"image": {0: "batch"}, "probability": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        # An EfficientNet encoder's stride-2 padding exports as a Slice the exporter cannot fold; it says so
        # three times per export, to the user, who can do nothing about it.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        # The TorchScript exporter: a plain conv net needs nothing more, it exports in a few seconds, and it
        # needs no onnxscript. The dynamo exporter (dynamo=True) gave the same parity (~2e-7) on both bundled
        # models with torch 2.13 but took 12-14 s per export; it is the way if TorchScript export goes.
        torch.onnx.export(
            wrapper.eval(), (torch.zeros(1, 3, h, w, dtype=torch.uint8),), str(path), dynamo=False, **kwargs
        )


def onnx_session(path: str | os.PathLike, providers=("CPUExecutionProvider",)):
    """An onnxruntime session (the CPU's unless `providers` say otherwise) with every graph optimisation,
    logging errors only: its optimiser folds an int8 graph's activations into their scales and would warn
    about every constant that leaves unused."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=list(providers))


def onnx_providers(device: str = "auto") -> list:
    """ONNX Runtime's execution providers for `device`: CUDA's for `cuda`/`cuda:N`, and for `auto` where
    this onnxruntime has it (the onnxruntime-gpu package); else the CPU's. `cuda` asked of an onnxruntime
    without it is a one-line error, not a silent CPU run."""
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "auto":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if has_cuda else ["CPUExecutionProvider"]
    dev = parse_device(device)
    if dev.type == "cpu":
        return ["CPUExecutionProvider"]
    if not has_cuda:
        raise PolypsegError(
            f"--device {device}: this ONNX Runtime runs on the CPU only (pip install onnxruntime-gpu for "
            "CUDA), or give the .pt or .safetensors model for PyTorch on the GPU"
        )
    return [("CUDAExecutionProvider", {"device_id": dev.index or 0}), "CPUExecutionProvider"]


def load_onnx(path: str | os.PathLike, device: str = "cpu"):
    """An onnxruntime session on `device` (onnx_providers) and the polypseg description of an exported model."""
    path = Path(path)
    if not path.is_file():
        raise PolypsegError(f"model not found: {path}")
    providers = onnx_providers(device)
    try:
        session = onnx_session(path, providers)
    except Exception as e:  # onnxruntime raises its own exception types for any unreadable file
        raise PolypsegError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:120]})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if "polypseg" not in meta:
        raise PolypsegError(f"{path}: an ONNX model, but not a polypseg polyp model (no polypseg metadata)")
    desc = json.loads(meta["polypseg"])
    inp = session.get_inputs()[0]
    if len(inp.shape) != 4 or inp.shape[1] != 3:
        raise PolypsegError(f"{path}: expected an input of shape (B, 3, H, W), found {inp.shape}")
    return session, desc


def _load(
    checkpoint, min_score: float | None, threshold: float | None = None
) -> tuple[list[dict], list[Path]]:
    """The checkpoints to export (one, or an ensemble's: --checkpoint repeated or a cv folder), with the
    operating point they are to carry (`--min-score`, `--threshold`), where given, and the files they
    came from."""
    check_operating_point(threshold, DEFAULT_MIN_AREA, min_score)
    srcs = resolve_checkpoints(checkpoint)
    ckpts = [load_checkpoint(src) for src in srcs]
    for ckpt in ckpts:
        for key, value in (("min_score", min_score), ("threshold", threshold)):
            if value is not None:
                ckpt[key] = value
    return ckpts, srcs


def _ensemble_description(ckpts: list[dict], srcs: list[Path], models: list[nn.Module]) -> dict:
    """One description for an ensemble's graph: the first model's, with the union of the models' training
    frames (so that evaluate leaves out any frame one of them trained on), and each model named."""
    sizes = {(c["input"]["height"], c["input"]["width"]) for c in ckpts}
    if len(sizes) > 1:
        raise PolypsegError(
            "an ONNX ensemble takes one input size; these models take "
            + ", ".join(f"{h}x{w}" for h, w in sorted(sizes))
        )
    agreed(ckpts, "threshold", 0.5, "choose one with --threshold")
    agreed(ckpts, "min_score", 0.0, "choose one with --min-score")
    desc = describe(ckpts[0])
    if len(ckpts) > 1:
        from polypseg.data.download import sha256_of

        listed = [trained_frames(c) for c in ckpts]
        if any(c.get("split") != ckpts[0].get("split") for c in ckpts):
            if not all(listed):
                raise PolypsegError(
                    "these models were trained on different splits by a polypseg that did not list their "
                    "training frames: one graph of them could not tell evaluate which frames it saw; "
                    "export them one by one"
                )
            desc.pop("split", None)  # no one split: the training frames' hashes say what each model saw
        frames = sorted({h for hashes in listed for h in hashes})
        desc["dataset"] = {**(desc.get("dataset") or {}), "trained_frames": frames}
        desc["ensemble"] = [{"checkpoint": str(s), "sha256": sha256_of(s)} for s in srcs]
    desc["prune"] = getattr(models[0], "prune", 0)
    return desc


def export_safetensors(
    checkpoint: str | None,
    out: str,
    min_score: float | None = None,
    overwrite: bool = False,
    threshold: float | None = None,
) -> None:
    """fp16 weights and the description, the format the bundled models ship in."""
    ckpts, srcs = _load(checkpoint, min_score, threshold)
    if len(ckpts) > 1:
        raise PolypsegError("a safetensors file holds one model; export an ensemble with --format onnx")
    save_safetensors(ckpts[0], atomic.claim_output_file(out, overwrite, srcs))


def export_onnx(
    checkpoint: str | None,
    out: str,
    prune: int | None = None,
    dynamic_batch: bool = False,
    data=None,
    quantize: str = "none",
    verify: bool = True,
    quiet: bool = False,
    min_score: float | None = None,
    overwrite: bool = False,
    threshold: float | None = None,
) -> dict:
    """Export, attach metadata, and check ONNX Runtime against PyTorch on real frames (fp32, max |dp| <= 1e-3).
    The file is put in place only once the check has passed; an existing one is kept unless `overwrite`."""
    import onnx

    ckpts, srcs = _load(checkpoint, min_score, threshold)
    models = [build_model(ckpt, prune) for ckpt in ckpts]
    desc = _ensemble_description(ckpts, srcs, models)
    h, w = desc["input"]["height"], desc["input"]["width"]
    # Every frame the checks need is read first: missing data fails before a file is written.
    frames, kind = _parity_frames(data, h, w) if verify else (None, "")
    calibration = sample_frames(data, h, w, n=16) if quantize == "int8" else None
    wrapper = ProbabilityModel(*models).eval()
    out_path = atomic.claim_output_file(out, overwrite, srcs)
    if quantize == "int8":
        atomic.claim_output_file(int8_path(out_path), overwrite, srcs)
    desc["onnx"] = {
        "input": "image (B,3,H,W) uint8 RGB",
        "output": "probability (B,1,H,W) float32",
        "dynamic_batch": dynamic_batch,
    }
    with atomic.replacing(out_path) as tmp:
        export_module(wrapper, tmp, h, w, dynamic_batch)
        m = onnx.load(str(tmp))
        entry = m.metadata_props.add()
        entry.key, entry.value = "polypseg", json.dumps(desc)
        onnx.save(m, str(tmp))
        report = {"onnx": str(out_path), "input_size": [h, w], "prune": desc["prune"], "models": len(models)}
        if verify:
            session, _ = load_onnx(tmp)
            with torch.no_grad():
                ref = wrapper(torch.from_numpy(frames)).numpy()
            got = np.concatenate(
                [session.run(None, {"image": frames[i : i + 1]})[0] for i in range(len(frames))]
            )
            diff = float(np.abs(ref - got).max())
            report.update(parity_frames=len(frames), parity_on=kind, max_abs_diff=diff)
            if not quiet:
                note = " (no data found; --data checks real frames)" if kind == "synthetic" else ""
                print(
                    f"parity on {len(frames)} {kind} frames{note}: max |p_onnx - p_torch| = {diff:.2e} (limit 1e-3)"
                )
            if diff > 1e-3:  # leaving the block with an error removes the temp file; out_path is untouched
                raise PolypsegError(f"ONNX output differs from PyTorch by {diff:.2e} > 1e-3; nothing written")
    if quantize == "int8":
        report["int8"] = quantize_int8(out_path, calibration)
        if verify:
            # against the fp32 graph's answers the parity check already has (`got`): no second fp32 pass
            agree = int8_agreement(got, load_onnx(report["int8"])[0], frames, desc.get("threshold", 0.5))
            report["int8_agreement"] = agree
            if not quiet:
                print(
                    f"int8 against fp32 on {len(frames)} {kind} frames: max |dp| = {agree['max_abs_diff']:.3f}, "
                    f"masks agree at Dice {agree['mask_dice']:.4f} (int8 is lossy: evaluate it before use)"
                )
        if not quiet:
            print(f"int8 model: {report['int8']}")
    if not quiet:
        print(f"wrote {out_path}")
    return report


def int8_path(fp32_path: Path) -> Path:
    return fp32_path.with_name(fp32_path.stem + "_int8.onnx")


def output_tail(model) -> list[str]:
    """Names of the nodes between the graph's output and the last convolution on each path to it (that
    convolution included): the head convolution, any resize, the sigmoid and an ensemble's mean. int8
    keeps them in float: quantised, the probability took 256 levels, so on frames the model is sure of
    their highest probability tied at 1.0, and the bundled full model's frame AUROC on PolypGen-val fell
    from 0.831 to 0.655 while its Dice held (benchmarks/NOTES.md 54)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    todo, tail = [o.name for o in model.graph.output], {}
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in tail:
            continue
        tail[node.name] = node
        if node.op_type != "Conv":
            todo.extend(node.input)
    return sorted(tail)


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization advises pre-processing through the root logger, to the user; on the
    bundled full model ORT's pre-processing changed the int8 graph's speed by nothing measurable."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(fp32_path: Path, frames: np.ndarray) -> str:
    """Static QDQ int8 quantisation calibrated on real (N, 3, H, W) uint8 frames (onnxruntime.quantization):
    weights per channel, activations per tensor, the output's tail (`output_tail`) kept in float."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(frames[i : i + 1] for i in range(len(frames)))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"image": x}

    out = int8_path(fp32_path)
    src = onnx.load(str(fp32_path))
    with atomic.replacing(out) as tmp, _quiet_root_logger():
        quantize_static(
            str(fp32_path),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            nodes_to_exclude=output_tail(src),
        )
        m = onnx.load(str(tmp))
        for p in src.metadata_props:
            e = m.metadata_props.add()
            e.key, e.value = p.key, p.value
            if p.key == "polypseg":  # says what it runs in, for predict's and evaluate's reports
                desc = json.loads(p.value)
                desc.setdefault("onnx", {})["precision"] = f"int8 (calibrated on {len(frames)} frames)"
                e.value = json.dumps(desc)
        onnx.save(m, str(tmp))
    return str(out)


def int8_agreement(fp32: np.ndarray, int8, frames: np.ndarray, threshold: float) -> dict:
    """How far an int8 graph's answers (an onnxruntime session) are from the fp32 graph's probabilities on
    the same (N, 3, H, W) frames: the largest probability difference and the Dice between their masks at
    the threshold, over all frames' pixels (1.0 when both masks are empty)."""
    q = np.concatenate([int8.run(None, {"image": frames[i : i + 1]})[0] for i in range(len(frames))])
    ma, mb = fp32 > threshold, q > threshold
    both = int(ma.sum() + mb.sum())
    dice = 1.0 if both == 0 else 2 * int((ma & mb).sum()) / both
    return {"max_abs_diff": float(np.abs(fp32 - q).max()), "mask_dice": dice}

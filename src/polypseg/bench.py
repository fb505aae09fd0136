"""`polypseg benchmark`: latency (batch 1, p50/p95) and throughput of full and pruned models,
PyTorch on the chosen device and ONNX Runtime on the CPU, with the device named in every row."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from polypseg import atomic
from polypseg.checkpoint import build_model, load_checkpoint
from polypseg.config import input_stride
from polypseg.devices import device_name, pick_device, use_bf16
from polypseg.errors import PolypsegError, at_least_one
from polypseg.export import (
    ProbabilityModel,
    export_module,
    load_onnx,
    onnx_session,
    quantize_int8,
    sample_frames,
)
from polypseg.models import count_parameters, create_model


def gflops(model, h: int, w: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.zeros(1, 3, h, w))
    return fc.get_total_flops() / 1e9 / 2  # multiply-adds, the convention papers report as "GFLOPs"


def _time(fn, iters: int, sync) -> list[float]:
    for _ in range(3):
        fn()
    sync()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _summary(lat_ms: list[float], thr_ms: list[float], batch: int, precision: str) -> dict:
    """Latency percentiles at batch 1 and throughput at `batch`, from per-call times in ms."""
    return {
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p95_ms": float(np.percentile(lat_ms, 95)),
        "fps_batch1": 1000 / float(np.median(lat_ms)),
        "throughput_img_s": batch * 1000 / float(np.median(thr_ms)),
        "batch": batch,
        "precision": precision,
    }


def bench_torch(model, device, h, w, iters, batch) -> dict:
    cuda = device.type == "cuda"
    # As the Predictor runs it: channels_last, bf16 autocast where devices.use_bf16 says so.
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    amp = use_bf16(device, model)
    if cuda:
        torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def run(b):
        x = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, device=device).float()
        x = x.contiguous(memory_format=torch.channels_last)

        def f():
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                torch.sigmoid(model(x))

        return f

    lat = _time(run(1), iters, sync)
    thr = _time(run(batch), max(3, iters // 4), sync)
    return _summary(lat, thr, batch, "bf16" if amp else "fp32")


def bench_onnx(model, h, w, iters, batch, int8_frames: np.ndarray | None = None) -> dict:
    """ONNX Runtime on the CPU, the graph `polypseg export` writes; with `int8_frames`, the int8 graph
    `export --quantize int8` writes, calibrated on those (N, 3, h, w) uint8 frames."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export_module(ProbabilityModel(model.cpu().eval()), path, h, w, dynamic_batch=True)
        if int8_frames is not None:
            path = Path(quantize_int8(path, int8_frames))
        sess = onnx_session(path)
    return bench_session(sess, h, w, iters, batch, "fp32" if int8_frames is None else "int8")


def bench_session(sess, h, w, iters, batch, precision: str) -> dict:
    """An ONNX Runtime session's latency at batch 1 and throughput at `batch`, on random uint8 frames."""
    name = sess.get_inputs()[0].name
    x1 = np.random.randint(0, 256, (1, 3, h, w), dtype=np.uint8)
    xb = np.random.randint(0, 256, (batch, 3, h, w), dtype=np.uint8)
    lat = _time(lambda: sess.run(None, {name: x1}), iters, lambda: None)
    thr = _time(lambda: sess.run(None, {name: xb}), max(3, iters // 4), lambda: None)
    return _summary(lat, thr, batch, precision)


def _onnx_file(path, device, height, width, batch, iters):
    """An exported .onnx file timed as it is: (device name, height, width, batch, rows to time)."""
    session, meta = load_onnx(path, device)
    shape = session.get_inputs()[0].shape
    h, w = shape[2], shape[3]
    if (height or h) != h or (width or w) != w:
        raise PolypsegError(f"{path} takes {h}x{w} frames; drop --height/--width or export it at that size")
    fixed = shape[0] if isinstance(shape[0], int) else None
    if batch is not None and fixed is not None and batch != fixed:
        raise PolypsegError(f"{path} was exported for batch {fixed} (export --dynamic-batch for any)")
    provider = session.get_providers()[0]
    on_gpu = provider.startswith("CUDA")
    name = f"{device_name(torch.device('cuda' if on_gpu else 'cpu'))} ({provider})"
    batch = batch or fixed or (32 if on_gpu else 4)
    params = sum(
        int(np.prod(t.dims)) for t in onnx.load(str(path), load_external_data=False).graph.initializer
    )
    precision = (meta.get("onnx") or {}).get("precision", "fp32")
    base = {"model": Path(path).name, "params": params, "gflops": None}
    job = (base, "onnxruntime", name, lambda: bench_session(session, h, w, iters, batch, precision))
    return name, h, w, batch, [job]


def candidates(ck: dict | None):
    """(label, model) pairs: a loaded checkpoint (mean of heads + each pruned head) or the default architectures."""
    if ck:
        if not ck["arch"].get("kwargs", {}).get("deep_supervision"):
            yield f"{ck['arch']['name']} (checkpoint)", build_model(ck)
            return
        yield f"{ck['arch']['name']} accurate", build_model(ck, prune=0)
        for level in range(1, ck["arch"]["kwargs"].get("depth", 4) + 1):
            yield f"{ck['arch']['name']} prune L{level}", build_model(ck, prune=level)
        return
    yield "unet w32", create_model("unet", width=32)
    yield "unetpp w32 accurate", create_model("unetpp", width=32)
    for level in (1, 2, 3, 4):
        yield f"unetpp w32 prune L{level}", create_model("unetpp", width=32, prune=level)
    yield "unetpp w16 prune L2", create_model("unetpp", width=16, prune=2)


def _torch_jobs(checkpoint, device, height, width, batch, iters, onnx, int8, data):
    """A checkpoint's heads, or the default architectures, in PyTorch (and ONNX Runtime and its int8 on
    the CPU): (device name, height, width, batch, rows to time, each model built when its turn comes)."""
    ck = None
    if checkpoint:
        from polypseg.network import resolve_checkpoint

        ck = load_checkpoint(resolve_checkpoint(checkpoint))
        height, width = height or ck["input"]["height"], width or ck["input"]["width"]
    height, width = height or 288, width or 384
    kwargs = ck["arch"].get("kwargs", {}) if ck else {}
    stride, why = input_stride(kwargs.get("encoder", "none"), kwargs.get("depth", 4))
    if height % stride or width % stride:
        raise PolypsegError(
            f"--height and --width must be multiples of {stride} ({why}), got {height}x{width}"
        )
    dev = pick_device(device)
    batch = batch or (32 if dev.type == "cuda" else 4)
    name = device_name(dev)

    if int8 and not (onnx and dev.type == "cpu"):
        raise PolypsegError(
            "--int8 times ONNX Runtime on the CPU: use it with --device cpu and without --no-onnx"
        )
    calibration = sample_frames(data, height, width, n=16) if int8 else None
    cpu = device_name(torch.device("cpu"))

    def jobs():
        for label, model in candidates(ck):
            model.eval()
            base = {
                "model": label,
                "params": count_parameters(model),
                "gflops": round(gflops(model, height, width), 2),
            }
            yield (
                base,
                "pytorch-" + dev.type,
                name,
                lambda m=model: bench_torch(m, dev, height, width, iters, batch),
            )
            if onnx and dev.type == "cpu":
                yield base, "onnxruntime", cpu, lambda m=model: bench_onnx(m, height, width, iters, batch)
            if calibration is not None:
                yield (
                    base,
                    "ort-int8",
                    cpu,
                    lambda m=model: bench_onnx(m, height, width, iters, batch, calibration),
                )

    return name, height, width, batch, jobs()


def run_benchmark(
    checkpoint=None,
    device="auto",
    height=None,
    width=None,
    iters=20,
    json_path=None,
    onnx=True,
    batch=None,
    int8=False,
    data=None,
) -> list[dict]:
    """Sizes default to the checkpoint's input size, or CVC-ClinicDB's 288x384 for the default architectures.
    `int8` adds ONNX Runtime int8 rows, calibrated on 16 frames of `data` (default: the default dataset)."""
    at_least_one("--iters", iters)
    if json_path:
        atomic.claim_output_file(json_path, overwrite=True)  # an unwritable path fails now, not after timing
    for flag, value in (("--height", height), ("--width", width), ("batch", batch)):
        if value is not None:
            at_least_one(flag, value)
    if checkpoint and Path(str(checkpoint)).suffix == ".onnx":
        if int8:
            raise PolypsegError("--int8 quantises a PyTorch model; give an int8 .onnx file as --checkpoint")
        name, height, width, batch, jobs = _onnx_file(checkpoint, device, height, width, batch, iters)
    else:
        name, height, width, batch, jobs = _torch_jobs(
            checkpoint, device, height, width, batch, iters, onnx, int8, data
        )
    print(f"device: {name}; input {height}x{width}; latency at batch 1, throughput at batch {batch}")
    print(
        f"{'model':24s} {'params':>8s} {'GFLOPs':>7s} {'backend':>12s} {'p50 ms':>8s} {'p95 ms':>8s} {'fps b1':>7s} {'img/s':>8s}"
    )
    rows = []
    for base, backend, where, fn in jobs:
        r = {**base, "backend": backend, "device": where, **fn()}
        rows.append(r)
        flops = "-" if r["gflops"] is None else f"{r['gflops']:.1f}"
        print(
            f"{r['model']:24s} {r['params'] / 1e6:7.2f}M {flops:>7s} {backend:>12s} {r['p50_ms']:8.1f} "
            f"{r['p95_ms']:8.1f} {r['fps_batch1']:7.1f} {r['throughput_img_s']:8.1f}"
        )
    if json_path:
        atomic.write_json(
            json_path,
            {
                "device": name,
                "torch": torch.__version__,
                "height": height,
                "width": width,
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "rows": rows,
            },
        )
        print(f"wrote {json_path}")
    return rows

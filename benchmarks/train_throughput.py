"""Training throughput, side by side in one run, same model and size:

  network   the training step alone on synthetic tensors already on the device (the ceiling)
  polypseg  `polypseg.train.train`: device-resident uint8 data, batch augmentation on the device, channels_last,
            bf16 autocast where the loop uses it (CUDA; CPUs with native bf16, polypseg.devices.use_bf16)
  conventional  torch DataLoader, per-image CPU augmentation with albumentations (OpenCV if it is missing),
            fp32: what the seed and most published polyp code do

Prints the device and writes JSON. Examples:
  python benchmarks/train_throughput.py --device cpu --width 8 --size 96 128 --seconds 40
  python benchmarks/train_throughput.py --device cuda --width 32 --size 256 256 --batch 16
  python benchmarks/train_throughput.py --device cpu --width 8 --size 96 128 --batch 8 --loop-variants ddp2
  python benchmarks/train_throughput.py --device cpu --width 8 --size 64 80 --batch 8 --seconds 10 \
      --variants torch-bn --repeat 5 --skip loop,conventional
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from polypseg.config import load_config
from polypseg.data.layouts import discover, resolve_data
from polypseg.devices import device_name, native_bf16_cpu, use_bf16
from polypseg.losses import seg_loss
from polypseg.models import blocks, create_model
from polypseg.step import TrainStep, make_optimizer
from polypseg.train import train


def synthetic_step(
    device, width, size, batch, amp, channels_last=True, compile_mode=None, cuda_graph=False, norm_layer=None
) -> tuple[TrainStep, torch.Tensor, torch.Tensor]:
    """The loop's training step (polypseg.step) on unetpp with synthetic tensors already on the device.

    compile_mode: None (eager) or a torch.compile mode; cuda_graph: capture the whole step (forward,
    backward, clipping, AdamW) in one CUDA graph and replay it; norm_layer: None (the model's own) or
    another BatchNorm class. Returns (step, x, y).
    """
    model = create_model("unetpp", width=width, norm_layer=norm_layer).to(device)
    cuda = device.type == "cuda"
    if cuda_graph and not cuda:
        raise RuntimeError("CUDA graphs need a CUDA device")
    amp = amp and use_bf16(device, model)  # the loop's rule
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    if cuda:
        torch.backends.cudnn.benchmark = True
    opt = make_optimizer(model.parameters(), 1e-3, 1e-4, device, cuda_graph)
    x = (torch.rand(batch, 3, *size, device=device) * 255).contiguous(memory_format=fmt)
    y = (torch.rand(batch, 1, *size, device=device) > 0.5).float()
    net = torch.compile(model, mode=compile_mode) if compile_mode else model
    # The loop's own step, so that a variant that wins here is the one the loop runs.
    return TrainStep(model, opt, seg_loss, amp, 1.0, net=net, cuda_graph=cuda_graph, warmup=5), x, y


@contextlib.contextmanager
def process_switches(cudnn_limit=None, cat_grad_devices=None, upsample_matmul_devices=None):
    """Process-wide speed-ups under test, restored afterwards. cudnn_limit: how many cuDNN algorithms
    cudnn.benchmark tries per convolution (0 = all; torch's default tries 10); cat_grad_devices: where the
    nodes' concatenation hands back channels_last gradients (models.blocks.CAT_GRAD_DEVICES);
    upsample_matmul_devices: where training up-samples with matrix products (UPSAMPLE_MATMUL_DEVICES)."""
    limit = torch.backends.cudnn.benchmark_limit
    cat_devices, mm_devices = blocks.CAT_GRAD_DEVICES, blocks.UPSAMPLE_MATMUL_DEVICES
    if cudnn_limit is not None:
        torch.backends.cudnn.benchmark_limit = cudnn_limit
    if cat_grad_devices is not None:
        blocks.CAT_GRAD_DEVICES = cat_grad_devices
    if upsample_matmul_devices is not None:
        blocks.UPSAMPLE_MATMUL_DEVICES = upsample_matmul_devices
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark_limit = limit
        blocks.CAT_GRAD_DEVICES, blocks.UPSAMPLE_MATMUL_DEVICES = cat_devices, mm_devices


def split_switches(opts: dict) -> tuple[dict, dict]:
    """A variant's options as (process_switches' arguments, synthetic_step's)."""
    switches = {k: v for k, v in opts.items() if k in inspect.signature(process_switches).parameters}
    return switches, {k: v for k, v in opts.items() if k not in switches}


def network_alone(device, width, size, batch, seconds, amp, **opts) -> dict:
    """img/s of the training step alone on synthetic tensors; `opts`, the speed-ups under test, go to
    `process_switches` or to `synthetic_step`. Returns {"img_s", "warmup_s"}."""
    switches, step_opts = split_switches(opts)
    with process_switches(**switches):
        return _time_step(
            device, batch, seconds, *synthetic_step(device, width, size, batch, amp, **step_opts)
        )


def _time_step(device, batch, seconds, step, x, y) -> dict:
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t_warm = time.perf_counter()
    for _ in range(6):  # eager warm-up (and, with a graph, the capture)
        step(x, y)
    sync()
    warmup_s = time.perf_counter() - t_warm
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(x, y)
        n += 1
        if n % 10 == 0:
            sync()
    sync()
    return {"img_s": n * batch / (time.perf_counter() - t0), "warmup_s": round(warmup_s, 1)}


class NativeBatchNorm2d(blocks.BatchNorm2d):
    """Batch norm through ATen's own CUDA kernels (native_batch_norm, with channels_last versions) even where
    torch would hand it to cuDNN: which of the two is faster on bf16 channels_last maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and x.is_cuda and self.track_running_stats):
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        return torch.ops.aten.native_batch_norm(
            x, self.weight, self.bias, self.running_mean, self.running_var, True, self.momentum, self.eps
        )[0]


# Speed-ups to try on the network alone (--variants), each against the same run's baseline.
VARIANTS = {
    "b32": dict(batch=32),
    "b64": dict(batch=64),
    "nchw": dict(channels_last=False),
    # fp32 in the default NCHW layout is the conventional pipeline's own step: the two apart say how much
    # of the loop's lead is precision and layout, how much the input pipeline.
    "fp32": dict(amp=False),
    "fp32-nchw": dict(amp=False, channels_last=False),
    "compile": dict(compile_mode="default"),
    "compile-max": dict(compile_mode="max-autotune-no-cudagraphs"),
    "compile-graphs": dict(compile_mode="reduce-overhead"),
    "graph": dict(cuda_graph=True),
    # torch's BatchNorm2d without polypseg's CPU detour for narrow channels_last maps (NOTES 64).
    "torch-bn": dict(norm_layer=torch.nn.BatchNorm2d),
    "native-bn": dict(norm_layer=NativeBatchNorm2d),
    # cudnn.benchmark times every algorithm cuDNN offers for each convolution, not just its heuristics'
    # top 10 (NOTES 65). On an H200 it gave nothing: the heuristics' picks were the fastest (NOTES 69).
    "cudnn-all": dict(cudnn_limit=0),
    "cudnn-all-b64": dict(cudnn_limit=0, batch=64),
    # The nodes' concatenation with channels_last gradients on CUDA as on the CPU (NOTES 66; on an H200
    # 0.98x, NOTES 69), and the CPU without it (torch.cat's strided gradient slices).
    "cat-grad": dict(cat_grad_devices={"cpu", "cuda"}),
    "torch-cat": dict(cat_grad_devices=set()),
    "torch-bn-cat": dict(norm_layer=torch.nn.BatchNorm2d, cat_grad_devices=set()),  # neither CPU detour
    "b128": dict(batch=128),
    # Every lever that needs no compiling at once, so that one window measures their sum as well as
    # each alone: the CUDA graph, every cuDNN algorithm tried, channels_last concatenation gradients.
    "all-b64": dict(batch=64, cuda_graph=True, cudnn_limit=0, cat_grad_devices={"cpu", "cuda"}),
    "all-b128": dict(batch=128, cuda_graph=True, cudnn_limit=0, cat_grad_devices={"cpu", "cuda"}),
    # Up-sampling as two matrix products (models.blocks.upsample2x_matmul), CUDA's default since the
    # H200 measured it (NOTES 69): `up-mm` turns them on on the CPU too, `torch-up` off on CUDA too.
    "up-mm": dict(upsample_matmul_devices={"cpu", "cuda"}),
    "torch-up": dict(upsample_matmul_devices=set()),
    "torch-up-graph-b64": dict(batch=64, cuda_graph=True, upsample_matmul_devices=set()),
    "up-mm-b64": dict(batch=64, upsample_matmul_devices={"cpu", "cuda"}),
    "up-mm-graph-b64": dict(batch=64, cuda_graph=True, upsample_matmul_devices={"cpu", "cuda"}),
}


def _error(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def variants(names, device, width, size, batch, seconds, amp) -> dict:
    out = {}
    for name in names:
        opts = dict(VARIANTS[name])
        b = opts.pop("batch", batch)
        try:
            r = network_alone(device, width, size, b, seconds, opts.pop("amp", amp), **opts)
            out[name] = {"batch": b, "img_s": round(r["img_s"], 1), "warmup_s": r["warmup_s"]}
            print(
                f"  network alone, {name:15s} (batch {b:3d}):   {r['img_s']:8.1f} img/s  (warm-up {r['warmup_s']} s)"
            )
        except Exception as e:  # a variant that fails is a result too
            out[name] = {"batch": b, "error": _error(e)}
            print(f"  network alone, {name:15s}: failed: {out[name]['error']}")
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            torch._dynamo.reset()
    return out


# The same speed-ups in the real loop (--loop-variants): its img/s, next to the network-alone variant.
COMPILE_MAX = ["compile=true", "compile_mode=max-autotune-no-cudagraphs"]
LOOP_VARIANTS = {
    "graph": dict(sets=["cuda_graph=true"]),
    "b64": dict(batch=64),
    "graph-b64": dict(batch=64, sets=["cuda_graph=true"]),
    # The network-alone `all-b64` in the loop (process_switches for the two that are no config keys).
    "all-b64": dict(
        batch=64, sets=["cuda_graph=true"], switches=dict(cudnn_limit=0, cat_grad_devices={"cpu", "cuda"})
    ),
    "all-b128": dict(
        batch=128, sets=["cuda_graph=true"], switches=dict(cudnn_limit=0, cat_grad_devices={"cpu", "cuda"})
    ),
    "up-mm": dict(switches=dict(upsample_matmul_devices={"cpu", "cuda"})),
    "up-mm-graph-b64": dict(
        batch=64, sets=["cuda_graph=true"], switches=dict(upsample_matmul_devices={"cpu", "cuda"})
    ),
    "torch-up-graph-b64": dict(
        batch=64, sets=["cuda_graph=true"], switches=dict(upsample_matmul_devices=set())
    ),
    # torch.compile with autotuned kernels (Triton, fused BatchNorm + ReLU epilogues): the untried route to
    # 600 img/s at 256x256 (NOTES 59). Compiling (minutes with autotuning) happens in the first epoch, which
    # the rate leaves out; a time budget would end the run inside it, so these run a fixed 8 epochs.
    "compile-max": dict(sets=[*COMPILE_MAX, "optim.epochs=8", "time_limit_s=0"]),
    "compile-max-b64": dict(batch=64, sets=[*COMPILE_MAX, "optim.epochs=8", "time_limit_s=0"]),
    # The same loop as two torchrun processes (gloo on CPU, NCCL on two GPUs), the batch split between
    # them, each with half the cores for its threads (NOTES.md 31: small ops scale poorly over threads).
    "ddp2": dict(procs=2),
    # Shallower UNet++ (model.depth): the nodes of the deepest diagonals are not built at all
    "depth3": dict(sets=["model.depth=3"]),
    "depth2": dict(sets=["model.depth=2"]),
}


def _loop_overrides(device, width, size, batch, seconds, amp, backend, sets=()) -> list[str]:
    return [
        f"model.width={width}",
        f"data.height={size[0]}",
        f"data.width={size[1]}",
        f"optim.batch_size={batch}",
        "optim.epochs=10000",
        "val_every=100000",
        f"time_limit_s={seconds}",
        f"device={device}",
        f"amp={str(amp).lower()}",
        "data.split_by=frame",
        f"augment.backend={backend}",
        *sets,
    ]


def epoch_rate(run: Path) -> float:
    # Epoch-time img/s from the real loop (validation is outside the timed part); the first epoch is warm-up.
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rates = [float(r["img_per_s"]) for r in rows[1:]] or [float(rows[0]["img_per_s"])]
    return float(np.median(rates))


def ours(data, device, width, size, batch, seconds, amp, backend, sets=()) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(overrides=_loop_overrides(device, width, size, batch, seconds, amp, backend, sets))
        train(cfg, out=Path(tmp) / "run", data=data, progress=False)
        return epoch_rate(Path(tmp) / "run")


def ours_ddp(data, device, width, size, batch, seconds, amp, sets, procs) -> float:
    """`ours` launched as `procs` torchrun processes; img/s counts the whole batch of all of them."""
    if str(device).startswith("cuda") and torch.cuda.device_count() < procs:
        raise RuntimeError(f"needs {procs} GPUs, this machine has {torch.cuda.device_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
        cmd += [
            "-m",
            "polypseg",
            "train",
            "--data",
            str(data),
            "--out",
            str(Path(tmp) / "run"),
            "--no-progress",
        ]
        for o in _loop_overrides(device, width, size, batch, seconds, amp, "torch", sets):
            cmd += ["--set", o]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // procs))}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode:
            raise RuntimeError(f"torchrun exit {r.returncode}: {(r.stderr.strip().splitlines() or [''])[-1]}")
        return epoch_rate(Path(tmp) / "run")


class ConventionalDataset(torch.utils.data.Dataset):
    """Reads each PNG from disk and augments it on the CPU, one image at a time."""

    def __init__(self, pairs, size):
        self.pairs, self.size = pairs, size
        try:
            import albumentations as A

            self.tf = A.Compose(
                [
                    A.Resize(*size),
                    A.HorizontalFlip(),
                    A.VerticalFlip(),
                    A.Affine(scale=(0.8, 1.2), rotate=(-30, 30), translate_percent=(-0.1, 0.1), p=1.0),
                    A.ColorJitter(0.2, 0.2, 0.2, 0.03, p=1.0),
                    A.Normalize(),
                ]
            )
            self.library = f"albumentations {A.__version__}"
        except ImportError:
            self.tf = None
            self.library = "OpenCV (albumentations not installed)"

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        p = self.pairs[i]
        img = cv2.cvtColor(cv2.imread(str(p.image)), cv2.COLOR_BGR2RGB)
        mask = (cv2.imread(str(p.mask), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
        if self.tf is not None:
            out = self.tf(image=img, mask=mask)
            img, mask = out["image"], out["mask"]
        else:
            h, w = self.size
            img, mask = cv2.resize(img, (w, h)), cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
            m = cv2.getRotationMatrix2D(
                (w / 2, h / 2), np.random.uniform(-30, 30), np.random.uniform(0.8, 1.2)
            )
            img, mask = (
                cv2.warpAffine(img, m, (w, h)),
                cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST),
            )
            img = (img.astype(np.float32) / 255 - 0.45) / 0.225
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float(), torch.from_numpy(
            mask[None].astype(np.float32)
        )


def conventional(pairs, device, width, size, batch, seconds, workers) -> tuple[float, str]:
    ds = ConventionalDataset(pairs, size)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    model = create_model("unetpp", width=width).to(device)
    model.normalize = torch.nn.Identity()  # this pipeline normalises on the CPU, as the seed does
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    n, t0, warm = 0, None, 3
    while True:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = seg_loss(model(x, heads=True), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if t0 is None:
                warm -= 1
                if warm == 0:
                    sync()
                    t0 = time.perf_counter()
                continue
            n += 1
            if time.perf_counter() - t0 > seconds:
                sync()
                return n * batch / (time.perf_counter() - t0), ds.library


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--size", type=int, nargs=2, default=[256, 256])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument(
        "--backends", default="torch,kornia", help="augmentation backends to time in the polypseg loop"
    )
    ap.add_argument(
        "--variants",
        default="",
        help=f"network-alone speed-ups to time too, comma-separated: {','.join(VARIANTS)}",
    )
    ap.add_argument(
        "--loop-variants",
        default="",
        help=f"the same in the polypseg loop, comma-separated: {','.join(LOOP_VARIANTS)}",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="time the network alone and its --variants, then the loop and the conventional pipeline, this "
        "many times each, alternating; report medians",
    )
    ap.add_argument("--skip", default="", help="parts to leave out, comma-separated: loop,conventional")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every polypseg-loop run, e.g. ema=0.99 to time the loop as a recipe trains",
    )
    # Default outside the recorded results (out/ is ignored by git): a run records itself only when asked.
    ap.add_argument(
        "--json", default="out/train_throughput.json", help="write the results here (default: %(default)s)"
    )
    a = ap.parse_args()
    unknown = [v for v in a.variants.split(",") if v and v not in VARIANTS]
    unknown += [v for v in a.loop_variants.split(",") if v and v not in LOOP_VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)} / {list(LOOP_VARIANTS)}")
    device = torch.device(a.device)
    skip = set(a.skip.split(","))
    # The network alone needs no data; the loops and the conventional pipeline do.
    needs_data = {"loop", "conventional"} - skip or a.loop_variants
    data = resolve_data(a.data) if needs_data else None
    size = tuple(a.size)
    res = {
        "device": device_name(device),
        "torch": torch.__version__,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": f"unetpp width {a.width}",
        "size": list(size),
        "batch": a.batch,
        "amp_bf16": (not a.no_amp) and use_bf16(device, create_model("unetpp", width=a.width)),
        "native_bf16_cpu": native_bf16_cpu(),
        "loop_overrides": a.set,
    }
    precision = "bf16 autocast" if res["amp_bf16"] else "fp32"
    print(
        f"device: {res['device']}; unetpp width {a.width} at {size[0]}x{size[1]}, batch {a.batch}; "
        f"loop: {precision}, channels_last"
    )
    # With --repeat, the baseline and the variants alternate, so that drifting machine load hits all alike;
    # so do the loop and the conventional pipeline below. rounds: key -> one img/s per round.
    names = [v for v in a.variants.split(",") if v]
    rounds: dict[str, list[float]] = {}
    var_runs = []
    for _ in range(a.repeat):
        v = round(network_alone(device, a.width, size, a.batch, a.seconds, not a.no_amp)["img_s"], 1)
        rounds.setdefault("network_alone_img_s", []).append(v)
        print(f"  network alone (synthetic, on device):   {v:8.1f} img/s")
        if names:
            var_runs.append(variants(names, device, a.width, size, a.batch, a.seconds, not a.no_amp))
    res["network_alone_img_s"] = statistics.median(rounds["network_alone_img_s"])
    if names:
        res["variants"] = var_runs[0]
        for name, r in res["variants"].items():
            rates = [v[name]["img_s"] for v in var_runs if "img_s" in v[name]]
            if a.repeat > 1 and rates:
                r.update(img_s=statistics.median(rates), img_s_all=rates)
    if a.repeat > 1:
        print(
            f"  medians of {a.repeat}: network alone {res['network_alone_img_s']}, "
            + ", ".join(f"{n} {r.get('img_s')}" for n, r in res.get("variants", {}).items())
        )
    # The loop and the conventional pipeline alternate too: their ratio is the target.
    for _ in range(a.repeat):
        for backend in a.backends.split(",") if "loop" not in skip else []:
            v = ours(data, a.device, a.width, size, a.batch, a.seconds, not a.no_amp, backend, a.set)
            rounds.setdefault(f"polypseg_{backend}_img_s", []).append(round(v, 1))
            print(f"  polypseg loop (augment: {backend:7s}):     {v:8.1f} img/s")
        if "conventional" not in skip:
            v, lib = conventional(discover(data).pairs, device, a.width, size, a.batch, a.seconds, a.workers)
            rounds.setdefault("conventional_img_s", []).append(round(v, 1))
            res["conventional_aug"], res["conventional_workers"] = lib, a.workers
            print(f"  conventional (DataLoader x{a.workers}, {lib}, fp32 NCHW): {v:8.1f} img/s")
    for key, values in rounds.items():
        res[key] = statistics.median(values)
        if a.repeat > 1:
            res[key.replace("_img_s", "_img_s_all")] = values
    for name in [v for v in a.loop_variants.split(",") if v]:
        opts = LOOP_VARIANTS[name]
        b = opts.get("batch", a.batch)
        try:
            if "cuda_graph=true" in opts.get("sets", ()) and device.type != "cuda":
                raise RuntimeError("CUDA graphs need a CUDA device (the loop would run eagerly)")
            sets = [*a.set, *opts.get("sets", ())]
            if opts.get("procs"):
                v = ours_ddp(data, a.device, a.width, size, b, a.seconds, not a.no_amp, sets, opts["procs"])
            else:
                with process_switches(**opts.get("switches", {})):
                    v = ours(data, a.device, a.width, size, b, a.seconds, not a.no_amp, "torch", sets)
            res.setdefault("loop_variants", {})[name] = {"batch": b, "img_s": round(v, 1)}
            print(f"  polypseg loop, {name:15s} (batch {b:3d}):   {v:8.1f} img/s")
        except Exception as e:  # recorded, like the network-alone variants
            res.setdefault("loop_variants", {})[name] = {"batch": b, "error": _error(e)}
            print(f"  polypseg loop, {name:15s}: failed: {res['loop_variants'][name]['error']}")
    loops = [res[k] for k in res if k.startswith("polypseg_") and k.endswith("_img_s")]
    if loops:
        res["loop_vs_network"] = round(max(loops) / res["network_alone_img_s"], 3)
        print(f"  loop / network alone: {res['loop_vs_network']}")
    if loops and "conventional_img_s" in res:
        res["speedup_vs_conventional"] = round(max(loops) / res["conventional_img_s"], 2)
        if a.repeat > 1:  # round by round: the best loop of the round against that round's pipeline
            per_round = zip(*(rounds[k] for k in rounds if k.startswith("polypseg_")))
            res["speedup_vs_conventional_all"] = [
                round(max(r) / c, 2) for r, c in zip(per_round, rounds["conventional_img_s"])
            ]
        print(f"  polypseg / conventional: {res['speedup_vs_conventional']}x")
    for name, r in res.get("loop_variants", {}).items():
        if "img_s" in r and "conventional_img_s" in res:
            r["vs_conventional"] = round(r["img_s"] / res["conventional_img_s"], 2)
            print(f"  polypseg loop, {name} / conventional: {r['vs_conventional']}x")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()

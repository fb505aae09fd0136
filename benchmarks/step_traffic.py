"""What one training step moves through memory and computes, op by op: a roofline for the GPU target.

Runs the loop's training step (forward on every head, `seg_loss`, backward) once on the `meta` device,
where no data exist and nothing is computed, in bf16 (what autocast gives the convolutions on CUDA),
and counts for every ATen op the FLOPs (torch.utils.flop_counter) and the bytes it reads and writes
(its tensor arguments and results; views are free). The optimiser is added by hand: fused AdamW reads
parameter, gradient and two moments in fp32 and writes three of them back.

From the counts it prints, per op family, the time each would take at the card's peak bandwidth and
peak dense bf16 rate (whichever binds), and three bounds on img/s:
  eager      every op pays its own traffic (what stock kernels do, one kernel per op)
  conv+bn    BatchNorm's statistics and the ReLU folded into the convolutions, but the BN apply, the
             bilinear up-sampling and the concatenations still a pass each
  conv-only  everything but the convolutions fused into their prologue/epilogue (the ideal a compiler
             or cuDNN fusion graph approaches)
A measured img/s (--measured) gives the fraction of the eager bound stock kernels reach; the same
fraction of the other bounds is the prediction for a fused step. Peak figures are the vendor's (dense,
no sparsity), so every bound is optimistic.

--profile DEVICE runs the same step for real (the loop's TrainStep on synthetic tensors, as
train_throughput.py's network alone: bf16 autocast, channels_last, cudnn.benchmark, fused AdamW) under
torch.profiler and adds, per family, the measured kernel time (CUDA) or operator time (CPU) per step
with the TFLOP/s and GB/s that makes (counted work over measured time) and, on a GPU, the fraction of
its roofline bound each family reaches: which family holds the step back, so which fusion or kernel is
worth trying. Writes JSON. Examples:
  python benchmarks/step_traffic.py --width 32 --size 256 256 --batch 16 --card h200 --measured 398.7
  python benchmarks/step_traffic.py --width 32 --size 256 256 --batch 16 --card h200 --profile cuda
  python benchmarks/step_traffic.py --width 8 --size 96 128 --batch 8 --profile cpu
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from polypseg.devices import device_name
from polypseg.losses import seg_loss
from polypseg.models import create_model

# Vendor peaks (dense bf16 tensor-core FLOP/s, HBM bytes/s): NVIDIA H100 SXM and H200 SXM datasheets.
CARDS = {"h100": (989e12, 3.35e12), "h200": (989e12, 4.8e12)}

FAMILIES = {  # ATen op name prefix -> family
    "convolution": "conv",
    "cudnn_convolution": "conv",
    "mkldnn_convolution": "conv",
    "native_batch_norm": "batchnorm",
    "_native_batch_norm_legit": "batchnorm",
    "cudnn_batch_norm": "batchnorm",
    "relu": "relu",
    "threshold_backward": "relu",
    "upsample_bilinear2d": "upsample",
    "max_pool2d": "pool",
    "cat": "concat",
    "slice_backward": "concat",
    "add": "grad-sum",  # backward: a map read by several nodes gets its gradients summed
    "_fused_adamw": "adamw",
    "_foreach": "adamw",  # unfused AdamW (CPU) and the gradient-norm clipping
    "bmm": "matmul",  # up-sampling as matrix products (train_throughput's `up-mm` variants)
    "mm": "matmul",
}
VIEWS = {
    "view",
    "_unsafe_view",
    "t",
    "transpose",
    "permute",
    "expand",
    "as_strided",
    "detach",
    "alias",
    "slice",
    "select",
    "unsqueeze",
    "squeeze",
    "split",
    "split_with_sizes",
}


def family(name: str) -> str:
    for prefix, fam in FAMILIES.items():
        if name.startswith(prefix):
            return fam
    return "other"


class ByteCounter(TorchDispatchMode):
    """Per op: bytes of distinct tensor arguments (read) and results (written)."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        if name.rstrip("_") not in VIEWS:
            seen: set[int] = set()
            read = sum(
                t.nbytes
                for t in tree_flatten((args, kwargs))[0]
                if isinstance(t, torch.Tensor) and id(t) not in seen and not seen.add(id(t))
            )
            written = sum(t.nbytes for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
            self.ops.append((name, read, written))
        return out


def count(width: int, size: tuple[int, int], batch: int) -> dict:
    """FLOPs and bytes per op family of one training step (forward, loss, backward, AdamW)."""
    with torch.device("meta"):
        model = create_model("unetpp", width=width).to(torch.bfloat16)
        x = torch.empty(batch, 3, *size, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        y = torch.empty(batch, 1, *size)
    model = model.to(memory_format=torch.channels_last).train()
    flops = FlopCounterMode(display=False)
    bytes_ = ByteCounter()
    with flops, bytes_:
        seg_loss(model(x, heads=True), y).backward()
    fams: dict[str, dict] = defaultdict(lambda: {"flop": 0, "read": 0, "written": 0, "ops": 0})
    for name, read, written in bytes_.ops:
        f = fams[family(name)]
        f["read"] += read
        f["written"] += written
        f["ops"] += 1
    for op, n in flops.get_flop_counts()["Global"].items():
        fams[family(op.__name__.split(".")[0])]["flop"] += n
    n_params = sum(p.numel() for p in model.parameters())
    # fused AdamW in fp32: reads param, grad, exp_avg, exp_avg_sq; writes param, exp_avg, exp_avg_sq.
    fams["adamw"] = {"flop": 0, "read": 16 * n_params, "written": 12 * n_params, "ops": 1}
    return {"params": n_params, "families": dict(fams)}


def profile(
    device: torch.device,
    width: int,
    size: tuple[int, int],
    batch: int,
    steps: int,
    variant: str | None = None,
) -> tuple[dict, list]:
    """Measured time per op family and step: CUDA kernel time on a GPU, operator self time on a CPU; and
    the ATen ops that took the most, [op, family, ms per step, calls per step]. variant: one of
    train_throughput's network-alone variants (its batch, if it has one, replaces `batch`)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    from train_throughput import VARIANTS, process_switches, split_switches, synthetic_step

    opts = dict(VARIANTS[variant]) if variant else {}
    batch, amp = opts.pop("batch", batch), opts.pop("amp", True)
    switches, step_opts = split_switches(opts)
    cuda = device.type == "cuda"
    with process_switches(**switches):
        step, x, y = synthetic_step(device, width, size, batch, amp, **step_opts)
        for _ in range(6):  # cuDNN autotuning, optimiser state
            step(x, y)
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        sync()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with torch_profile(activities=activities) as prof:
            for _ in range(steps):
                step(x, y)
            sync()
    fams: dict[str, float] = defaultdict(float)
    ops = []
    for e in prof.key_averages():
        if not e.key.startswith("aten::"):
            continue  # kernels are counted through the ATen op that launched them
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        name = e.key.removeprefix("aten::")
        fams[family(name)] += us / 1e3 / steps
        if us > 0:
            ops.append([name, family(name), round(us / 1e3 / steps, 3), round(e.count / steps, 1)])
    top = sorted(ops, key=lambda o: -o[2])[:15]
    return {k: round(v, 3) for k, v in sorted(fams.items(), key=lambda kv: -kv[1]) if v > 0}, top


def bounds(fams: dict, peak_flop: float, peak_bw: float, batch: int) -> dict:
    """Roofline time per family and img/s bounds for the eager, conv+bn and conv-only steps."""

    def t(f: dict) -> float:
        return max(f["flop"] / peak_flop, (f["read"] + f["written"]) / peak_bw)

    times = {k: t(f) for k, f in fams.items()}
    bn = fams.get("batchnorm", {"read": 0, "written": 0})
    # conv+bn: the statistics pass (one read of every BN input, forward and backward) and the ReLU go;
    # the BN apply stays as one read and one write of its output, forward and backward.
    bn_apply = {"flop": 0, "read": bn["written"], "written": bn["written"]}
    eager = sum(times.values())
    conv_bn = eager - times.get("batchnorm", 0) - times.get("relu", 0) + t(bn_apply)
    conv_only = times.get("conv", 0) + times.get("adamw", 0)
    return {
        "ms_per_family": {k: round(1e3 * v, 3) for k, v in sorted(times.items(), key=lambda kv: -kv[1])},
        "img_s_bound": {
            "eager": round(batch / eager, 1),
            "conv+bn": round(batch / conv_bn, 1),
            "conv-only": round(batch / conv_only, 1),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument(
        "--card",
        choices=["auto", *sorted(CARDS)],
        default="auto",
        help="whose peaks; auto: the CUDA card's if it is one of these, else h200",
    )
    ap.add_argument("--measured", type=float, help="img/s measured for the eager step on that card")
    ap.add_argument("--profile", metavar="DEVICE", help="also run the step on DEVICE (cpu, cuda) and time it")
    ap.add_argument("--steps", type=int, default=10, help="profiled steps (with --profile)")
    ap.add_argument(
        "--variant",
        help="profile one of benchmarks/train_throughput.py's network-alone variants (e.g. up-mm) instead "
        "of the default step; the counts stay the default step's",
    )
    ap.add_argument("--json", type=Path, default=Path("out/step_traffic.json"))
    args = ap.parse_args()
    if args.variant:
        from train_throughput import VARIANTS

        if args.variant not in VARIANTS:
            ap.error(f"unknown variant {args.variant!r}; choose from {', '.join(VARIANTS)}")
        args.batch = VARIANTS[args.variant].get("batch", args.batch)

    counted = count(args.width, tuple(args.size), args.batch)
    fams = counted["families"]
    if args.card == "auto":
        name = torch.cuda.get_device_name().lower() if torch.cuda.is_available() else ""
        args.card = next((c for c in CARDS if c in name), "h200")
    peak_flop, peak_bw = CARDS[args.card]
    result = {
        "model": f"unetpp width {args.width}",
        "size": args.size,
        "batch": args.batch,
        "card": args.card,
        "peak_bf16_flop_s": peak_flop,
        "peak_bytes_s": peak_bw,
        "params": counted["params"],
        "per_image": {
            k: {
                "gflop": round(f["flop"] / args.batch / 1e9, 2),
                "mb": round((f["read"] + f["written"]) / args.batch / 1e6, 1),
                "ops": f["ops"],
            }
            for k, f in sorted(fams.items())
        },
        **bounds(fams, peak_flop, peak_bw, args.batch),
    }
    if args.measured:
        frac = args.measured / result["img_s_bound"]["eager"]
        result["measured_img_s"] = args.measured
        result["fraction_of_eager_bound"] = round(frac, 3)
        result["predicted_img_s_at_that_fraction"] = {
            k: round(frac * v, 1) for k, v in result["img_s_bound"].items()
        }
    print(
        f"unetpp w{args.width} {args.size[0]}x{args.size[1]} batch {args.batch}, peaks of {args.card} "
        f"(bf16 {peak_flop / 1e12:.0f} TFLOP/s, {peak_bw / 1e12:.2f} TB/s); counted on meta, no device ran"
    )
    print(f"{'family':<10} {'GFLOP/img':>10} {'MB/img':>9} {'ops':>5} {'ms/step':>8}")
    for k, ms in result["ms_per_family"].items():
        p = result["per_image"][k]
        print(f"{k:<10} {p['gflop']:>10.2f} {p['mb']:>9.1f} {p['ops']:>5} {ms:>8.3f}")
    print("img/s bounds:", result["img_s_bound"])
    if args.measured:
        print(
            f"measured {args.measured} img/s = {result['fraction_of_eager_bound']:.3f} of the eager bound;"
            f" at that fraction: {result['predicted_img_s_at_that_fraction']}"
        )
    if args.profile:
        device = torch.device(args.profile)
        measured, top = profile(device, args.width, tuple(args.size), args.batch, args.steps, args.variant)
        total = sum(measured.values())
        result["profiled"] = {
            "device": device_name(device),
            "variant": args.variant,
            "steps": args.steps,
            "ms_per_step": round(total, 2),
            "img_s_kernels_only": round(args.batch / total * 1e3, 1),
            "ms_per_family": measured,
        }
        print(
            f"profiled on {device_name(device)}, {args.steps} steps: {total:.2f} ms per step of "
            f"{'kernels' if device.type == 'cuda' else 'operators'} ({args.batch / total * 1e3:.1f} img/s)"
        )
        rates = {}
        for k, ms in measured.items():
            f = fams.get(k, {"flop": 0, "read": 0, "written": 0})
            rates[k] = {
                "tflop_s": round(f["flop"] / ms / 1e9, 1),
                "gb_s": round((f["read"] + f["written"]) / ms / 1e6, 1),
            }
            if device.type == "cuda":  # the card's peaks mean nothing for a CPU
                rates[k]["of_roofline"] = round(result["ms_per_family"].get(k, 0) / ms, 3)
        result["profiled"]["rates"] = rates
        print(
            f"{'family':<10} {'ms/step':>8} {'share':>6} {'TFLOP/s':>8} {'GB/s':>7}"
            + (f" {'of roofline':>11}" if device.type == "cuda" else "")
        )
        for k, ms in measured.items():
            r = rates[k]
            print(
                f"{k:<10} {ms:>8.3f} {ms / total:>6.1%} {r['tflop_s']:>8.1f} {r['gb_s']:>7.1f}"
                + (f" {r['of_roofline']:>11.3f}" if device.type == "cuda" else "")
            )
        result["profiled"]["top_ops"] = top
        print(f"{'ATen op':<36} {'family':<10} {'ms/step':>8} {'calls':>6}")
        for name, fam, ms, calls in top:
            print(f"{name:<36} {fam:<10} {ms:>8.3f} {calls:>6}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print("wrote", args.json)


if __name__ == "__main__":
    main()

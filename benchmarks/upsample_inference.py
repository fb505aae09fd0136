"""Inference with PyTorch's bilinear up-sampling against the same as two matrix products
(models.blocks.upsample2x_matmul, CUDA training's default since NOTES 69), side by side in one run:
latency at batch 1 and throughput at --batch, alternating rounds, medians, JSON out with the device.

Training on an H200 ran 6.8x faster up-sampling as products (7.2 ms a step against 1.1); inference runs
only the forward, whose kernel took 3.7 of those 7.2 ms. On 2 Intel Xeon cores the products were slower
in training (0.94x) and in inference (this script at 288x384, bf16: 0.93x at batch 1, 0.78x throughput at
batch 4; results/upsample_inference_cpu.json), so inference keeps torch's kernel on every device until
this says otherwise on a GPU.

    python benchmarks/upsample_inference.py --device cuda --json out/upsample_inference.json
    python benchmarks/upsample_inference.py --device cpu --width 8 --size 64 80 --iters 5 --repeat 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch

from polypseg.bench import bench_torch
from polypseg.devices import device_name, pick_device
from polypseg.models import blocks, create_model


@contextlib.contextmanager
def products_in_inference():
    """Within the block, every Upsample2x up-samples with matrix products, in inference too."""
    forward = blocks.Upsample2x.forward
    blocks.Upsample2x.forward = lambda self, x: blocks.upsample2x_matmul(x)
    try:
        yield
    finally:
        blocks.Upsample2x.forward = forward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="unetpp", choices=["unetpp", "unet"])
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--size", type=int, nargs=2, default=[288, 384], metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=32, help="batch for the throughput figure")
    ap.add_argument("--iters", type=int, default=50, help="timed calls at batch 1 (a quarter at --batch)")
    ap.add_argument("--repeat", type=int, default=3, help="alternating rounds; medians are reported")
    ap.add_argument("--json", type=Path, default=Path("out/upsample_inference.json"))
    a = ap.parse_args()
    device = pick_device(a.device)
    model = create_model(a.model, width=a.width)
    rounds: dict[str, list[dict]] = {"torch": [], "products": []}
    for r in range(a.repeat):
        for name in rounds:
            with products_in_inference() if name == "products" else contextlib.nullcontext():
                res = bench_torch(model, device, *a.size, a.iters, a.batch)
            rounds[name].append(res)
            print(
                f"round {r + 1} {name:8s}: {res['p50_ms']:7.2f} ms at batch 1, "
                f"{res['throughput_img_s']:7.1f} img/s at batch {a.batch} ({res['precision']})",
                flush=True,
            )
    out = {
        "device": device_name(device),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": f"{a.model} width {a.width}",
        "size": a.size,
        "batch": a.batch,
        "repeat": a.repeat,
    }
    for name, res in rounds.items():
        out[name] = {
            "p50_ms": round(statistics.median(r["p50_ms"] for r in res), 3),
            "throughput_img_s": round(statistics.median(r["throughput_img_s"] for r in res), 1),
            "rounds": res,
        }
    out["products_speedup_batch1"] = round(out["torch"]["p50_ms"] / out["products"]["p50_ms"], 3)
    out["products_speedup_throughput"] = round(
        out["products"]["throughput_img_s"] / out["torch"]["throughput_img_s"], 3
    )
    print(
        f"{out['device']}: products / torch's kernel: {out['products_speedup_batch1']}x at batch 1, "
        f"{out['products_speedup_throughput']}x throughput"
    )
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=1))
    print("wrote", a.json)


if __name__ == "__main__":
    main()

"""bf16 autocast against fp32 on this CPU, for UNet++ decoders of several widths on the Lite0 encoder and the
VGG blocks: batch-1 inference and batch-8 training steps (random weights; speed does not depend on them),
with each network's depthwise share of the multiply-adds, the number `polypseg.devices.use_bf16` decides by.

    python benchmarks/cpu_bf16.py --json benchmarks/results/cpu_bf16.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from polypseg.devices import depthwise_share, device_name, native_bf16_cpu, use_bf16
from polypseg.models import create_model

# (encoder, decoder width, height, width)
CASES = [
    ("efficientnet-lite0", 8, 96, 128),
    ("efficientnet-lite0", 16, 96, 128),
    ("efficientnet-lite0", 32, 96, 128),
    ("efficientnet-lite0", 32, 160, 224),
    ("none", 8, 96, 128),
]


def median_ms(model, x, amp: bool, train: bool, n: int) -> float:
    model.train(train)
    opt = torch.optim.AdamW(model.parameters(), 1e-4) if train else None

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            if train:
                out = model(x)
                out = out[-1] if isinstance(out, (list, tuple)) else out
                out.float().mean().backward()
                opt.step()
                opt.zero_grad()
            else:
                with torch.no_grad():
                    model(x)

    step(), step()  # oneDNN picks its kernels on the first calls
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=6, help="timed inference runs per row (training: half)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    res = {
        "device": device_name(cpu),
        "native_bf16": native_bf16_cpu(),
        "torch": torch.__version__,
        "rows": [],
    }
    print(f"{res['device']}; native bf16: {res['native_bf16']}")
    for encoder, width, h, w in CASES:
        kw = {"width": width} | ({"encoder": encoder} if encoder != "none" else {})
        model = create_model("unetpp", **kw).to(memory_format=torch.channels_last)
        one = torch.rand(1, 3, h, w).contiguous(memory_format=torch.channels_last)
        eight = torch.rand(8, 3, h, w).contiguous(memory_format=torch.channels_last)
        row = {
            "encoder": encoder,
            "width": width,
            "size": [h, w],
            "depthwise_share": round(depthwise_share(model), 4),
            "rule_bf16": use_bf16(cpu, model),
            "infer_ms": {
                p: round(median_ms(model, one, p == "bf16", False, a.iters), 1) for p in ("fp32", "bf16")
            },
            "train_b8_ms": {
                p: round(median_ms(model, eight, p == "bf16", True, max(2, a.iters // 2)), 1)
                for p in ("fp32", "bf16")
            },
        }
        res["rows"].append(row)
        print(
            f"{encoder:18s} w{width:<3d} {h}x{w}  depthwise {row['depthwise_share']:.1%}  "
            f"infer fp32 {row['infer_ms']['fp32']:6.1f} bf16 {row['infer_ms']['bf16']:6.1f} ms   "
            f"train b8 fp32 {row['train_b8_ms']['fp32']:6.0f} bf16 {row['train_b8_ms']['bf16']:6.0f} ms   "
            f"rule: {'bf16' if row['rule_bf16'] else 'fp32'}",
            flush=True,
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()

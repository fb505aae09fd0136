"""Where `polypseg predict` spends a frame: decode, network (+ resizing), post-processing, overlay, PNG
encoding, per stage and in total, on real frames of two sizes (CVC-ClinicDB 384x288, PolypGen up to
1920x1080), with the device named; JSON out.

    python benchmarks/predict_stages.py --checkpoint full --json benchmarks/results/predict_stages_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from polypseg.imageio import encode_png, read_rgb
from polypseg.predict import Predictor, overlay

DATA = Path(os.environ.get("POLYPSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
SETS = {
    "CVC-ClinicDB 384x288": DATA / "CVC-ClinicDB" / "PNG" / "Original",
    "PolypGen-val (up to 1920x1080)": DATA / "PolypGen-val" / "images",
}


def _ms(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t0) * 1000


def _pngs(pred, over) -> tuple[bytes, bytes]:
    return encode_png(pred.mask.astype(np.uint8) * 255), encode_png(over)


def stages(p: Predictor, files: list[Path]) -> dict:
    """Median ms per frame of each stage, one frame at a time (batch 1), after one warm-up frame."""
    rows = []
    for f in [files[0], *files]:
        rgb, t_read = _ms(read_rgb, f)
        prob, t_net = _ms(p.network_probabilities, [rgb])
        pred, t_post = _ms(p.postprocess, prob[0], *rgb.shape[:2])
        over, t_over = _ms(overlay, rgb, pred)
        _, t_png = _ms(_pngs, pred, over)
        rows.append((t_read, t_net, t_post, t_over, t_png))
    a = np.array(rows[1:])
    names = ["decode", "network", "postprocess", "overlay", "png"]
    med = {n: round(float(np.median(a[:, i])), 2) for i, n in enumerate(names)}
    med["total"] = round(float(np.median(a.sum(1))), 2)
    med["frames"] = len(files)
    med["pixels_median"] = int(np.median([np.prod(read_rgb(f).shape[:2]) for f in files[:8]]))
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="full")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--json")
    args = ap.parse_args()
    p = Predictor.from_checkpoint(args.checkpoint, device=args.device)
    result = {
        "device": p.device_name(),
        "precision": p.precision,
        "torch_threads": torch.get_num_threads(),
        "checkpoint": args.checkpoint,
        "input_size": [p.height, p.width],
        "date": time.strftime("%Y-%m-%d"),
        "host": platform.machine(),
        "sets": {},
    }
    print(
        f"{p.device_name()}, {p.precision}, network input {p.height}x{p.width}; median ms per frame, batch 1"
    )
    print(
        f"{'frames':32s} {'decode':>7s} {'network':>8s} {'post':>6s} {'overlay':>8s} {'png':>6s} {'total':>7s}"
    )
    for label, folder in SETS.items():
        files = sorted(folder.iterdir())[: args.frames]
        s = stages(p, files)
        result["sets"][label] = s
        print(
            f"{label:32s} {s['decode']:7.1f} {s['network']:8.1f} {s['postprocess']:6.1f} {s['overlay']:8.1f} "
            f"{s['png']:6.1f} {s['total']:7.1f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

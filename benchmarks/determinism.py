"""Do two training runs with the same seed end with the same weights? With `deterministic=true` and without,
side by side in one process; and what the deterministic kernels cost in img/s. JSON out.

Each setting trains twice from the same seed on real frames (the random frame split, so every run sees
the same frames), then compares the two final weight sets bit for bit and reports the largest difference,
and each run's epoch-time img/s (median over epochs after the first). On a CPU both settings should
repeat exactly; on a GPU the default (cuDNN autotuning picks its fastest algorithms) need not,
and `deterministic=true` should.

    python benchmarks/determinism.py --data ../shared/datasets/CVC-ClinicDB --json determinism.json
    python benchmarks/determinism.py --device cpu --width 4 --size 64 80 --epochs 2   # a quick CPU run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from train_throughput import epoch_rate

from polypseg.checkpoint import load_checkpoint
from polypseg.config import load_config
from polypseg.devices import device_name, pick_device
from polypseg.train import train


def run_twice(data, overrides: list[str], work: Path, tag: str) -> dict:
    """Two runs of the same config; their weights compared, their rates."""
    rates, weights = [], []
    for k in (1, 2):
        out = work / f"{tag}{k}"
        train(load_config(overrides=overrides), out=out, data=data, progress=False)
        rates.append(epoch_rate(out))
        weights.append(load_checkpoint(out / "last.pt")["model"])
    a, b = weights
    diffs = [(a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point()]
    return {
        "identical": all(torch.equal(a[k], b[k]) for k in a),
        "tensors_differing": sum(d > 0 for d in diffs),
        "tensors": len(diffs),
        "max_abs_diff": max(diffs),
        "img_s": [round(r, 1) for r in rates],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="dataset folder (default: the default dataset)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--size", type=int, nargs=2, default=[96, 128])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides")
    ap.add_argument(
        "--settings", default="false,true", help="the deterministic= values to run (default: %(default)s)"
    )
    ap.add_argument("--json", default="determinism.json")
    a = ap.parse_args()
    settings = a.settings.split(",")
    if not set(settings) <= {"false", "true"}:
        ap.error(f"--settings takes false and/or true, not {a.settings!r}")
    device = pick_device(a.device)
    base = [
        f"device={device}",
        f"model.width={a.width}",
        f"data.height={a.size[0]}",
        f"data.width={a.size[1]}",
        f"optim.batch_size={a.batch}",
        f"optim.epochs={a.epochs}",
        "optim.warmup_epochs=1",
        "data.split_by=frame",
        "val_every=1000",
        *a.set,
    ]
    res = {
        "device": device_name(device),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "overrides": base,
    }
    print(f"device: {res['device']}; unetpp width {a.width} at {a.size[0]}x{a.size[1]}, {a.epochs} epochs")
    with tempfile.TemporaryDirectory() as tmp:
        for flag in settings:
            try:
                r = run_twice(a.data, [*base, f"deterministic={flag}"], Path(tmp), f"det_{flag}_")
            except Exception as e:  # a kernel with no deterministic version is a result too
                r = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"}
            res[f"deterministic_{flag}"] = r
            print(f"  deterministic={flag:5s}: " + ", ".join(f"{k} {v}" for k, v in r.items()), flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    print(f"wrote {a.json}")
    sys.exit(0 if res.get("deterministic_true", {"identical": True}).get("identical") else 1)


if __name__ == "__main__":
    main()

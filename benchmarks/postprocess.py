"""Does cleaning the predicted mask raise Dice? An evaluate-only arm on trained models.

For each model, the frames with a polyp are predicted once; Dice@0.5 is computed for the raw mask, for the
mask without connected components under A pixels (at the frame's own size), and for its largest component
alone (one polyp per frame is the common case). Differences are paired on the same frames, with a bootstrap
that resamples whole sequences (frames when the data have no sequence table).

    python benchmarks/postprocess.py --runs runs/cv/fold{0..4} --json pp_cv.json     # each run's held-out frames
    python benchmarks/postprocess.py --runs full --data ../shared/datasets/PolypGen-val --areas 0 50 500 2000 5000

A RUN is a run folder (its split.json's held-out frames, its best.pt) or a checkpoint (every frame of --data).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from polypseg import metrics  # noqa: E402
from polypseg.data import discover  # noqa: E402
from polypseg.data.splits import Split, load_groups  # noqa: E402
from polypseg.imageio import read_mask, read_rgb  # noqa: E402
from polypseg.predict import Predictor  # noqa: E402


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two bool masks (gt has a polyp, so it is defined), through the package's own formula."""
    tp = int((pred & gt).sum())
    return float(metrics.dice(tp, int(pred.sum()) - tp, int(gt.sum()) - tp))


def variants(mask: np.ndarray, gt: np.ndarray, areas: list[int]) -> dict[str, float]:
    """Dice of the mask cleaned each way ('a0' is the raw mask)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    out = {f"a{a}": dice(np.isin(labels, 1 + np.flatnonzero(sizes >= a)) if a else mask, gt) for a in areas}
    out["largest"] = dice(labels == 1 + int(np.argmax(sizes)), gt) if n > 1 else dice(mask, gt)
    out["components"] = n - 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--data", default=None, help="default: CVC-ClinicDB under $POLYPSEG_DATA")
    ap.add_argument("--areas", nargs="+", type=int, default=[0, 50, 200, 500, 1000])
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    areas = sorted(set([0, *a.areas]))
    dataset = discover(a.data)
    groups, source = load_groups(dataset)
    group_of = dict(zip(dataset.names, groups))
    pairs = {p.name: p for p in dataset.pairs}
    rows = []
    for run in a.runs:
        folder = Path(run)
        if folder.is_dir():
            names = Split.load(folder / "split.json").val
            predictor = Predictor.from_checkpoint(str(folder / "best.pt"), device="cpu")
        else:
            names = dataset.names
            predictor = Predictor.from_checkpoint(run, device="cpu")
        for i in range(0, len(names), 16):
            truth = {n: read_mask(pairs[n].mask) for n in names[i : i + 16]}
            chunk = [n for n, gt in truth.items() if gt.any()]
            frames = [read_rgb(pairs[n].image) for n in chunk]
            for name, pred in zip(chunk, predictor.predict_batch(frames)):
                gt = truth[name]
                rows.append(
                    {"run": run, "name": name, "group": group_of[name], **variants(pred.mask, gt, areas)}
                )
        print(f"{run}: {sum(r['run'] == run for r in rows)} frames with a polyp", file=sys.stderr)
    frames_groups = [r["group"] for r in rows]
    raw = np.array([r["a0"] for r in rows])
    result = {"data": dataset.label, "groups": source, "frames": len(rows), "runs": a.runs, "variants": {}}
    print(
        f"{len(rows)} frames with a polyp, {len(set(frames_groups))} groups ({source}); "
        f"{sum(r['components'] > 1 for r in rows)} with more than one predicted component"
    )
    for key in [f"a{x}" for x in areas] + ["largest"]:
        v = np.array([r[key] for r in rows])
        lo, hi = metrics.grouped_bootstrap_ci(v - raw, frames_groups)
        result["variants"][key] = {"dice": float(v.mean()), "diff": float((v - raw).mean()), "ci95": [lo, hi]}
        label = (
            "raw mask"
            if key == "a0"
            else ("largest component" if key == "largest" else f"drop < {key[1:]} px")
        )
        print(
            f"  {label:20s} Dice@0.5 {v.mean():.4f}   paired {(v - raw).mean():+.4f} ({lo:+.4f} to {hi:+.4f})"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

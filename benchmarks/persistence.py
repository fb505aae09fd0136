"""Temporal persistence against a minimum score: which cuts false alarms at less cost to recall?

A video detector can show a polyp only once its component has been seen in K consecutive frames (each
frame's component overlapping one of the previous frame's, boxes widened by --pad pixels), or only when
its peak probability reaches a minimum score. This script measures both on the ordered frames of each
fold's held-out CVC-ClinicDB sequences (frames sorted by number within a sequence), per polyp under the
centroid rule. A sequence's first K-1 frames have no history and are left out of the persistence rows.

CVC-ClinicDB's frames are sampled from its videos, not every frame, so a component moves further between
two of them than between two frames at 25 frames/s: persistence is judged on a harder sequence than a
live video gives it.

    python benchmarks/persistence.py RUN_0 RUN_1 RUN_2 RUN_3 RUN_4 --json benchmarks/results/persistence_cpu.json
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from polypseg import detection
from polypseg.data.layouts import discover
from polypseg.devices import device_name, pick_device
from polypseg.imageio import read_mask, read_rgb
from polypseg.predict import Predictor

ROOT = Path(__file__).resolve().parents[1]


def overlaps(a, b, pad: int) -> bool:
    return a[0] - pad < b[2] and b[0] - pad < a[2] and a[1] - pad < b[3] and b[1] - pad < a[3]


def ordered_frames(runs: list[Path], data: Path, batch: int = 16):
    """(run, sequence, FrameDetections, components) for each held-out frame, in frame order per sequence."""
    pairs = {p.name: p for p in discover(data).pairs}
    with open(data / "sequences.csv", newline="") as f:
        seq = {r["frame"]: r["sequence"] for r in csv.DictReader(f)}
    for run in runs:
        names = sorted(json.loads((run / "split.json").read_text())["val"], key=int)
        p = Predictor.from_checkpoint(run / "best.pt", device="cpu")
        for i in range(0, len(names), batch):
            group = names[i : i + batch]
            for n, pred in zip(group, p.predict_batch([read_rgb(pairs[n].image) for n in group])):
                comps = [c for c, _ in pred.components]
                gt = read_mask(pairs[n].mask)
                speck = detection.min_area_px(detection.DEFAULT_MIN_POLYP_AREA, *gt.shape)  # as evaluate
                dets = detection.assign(comps, gt, [s for _, s in pred.components], min_polyp_area=speck)
                yield str(run), seq[n], dets, comps


def persistence(frames, k: int, pad: int) -> dict:
    counts, key, prev = [], None, []
    for run, sequence, dets, comps in frames:
        if (run, sequence) != key:
            key, prev, position = (run, sequence), [], 0
        ages = [1 + max((a for b, a in prev if overlaps(c.box_xyxy, b, pad)), default=0) for c in comps]
        if position >= k - 1:
            kept = [i for i, a in enumerate(ages) if a >= k]
            sub = detection.FrameDetections(
                [1.0] * len(kept), [dets.hits[i] for i in kept], dets.n_polyps, dets.specks
            )
            counts.append(sub.counts())
        prev, position = [(c.box_xyxy, a) for c, a in zip(comps, ages)], position + 1
    return {"k": k, "pad": pad, **detection.summarize(counts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders of grouped folds (best.pt, split.json)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "CVC-ClinicDB")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    frames = list(ordered_frames(a.runs, a.data))
    out = {
        "device": device_name(pick_device("cpu")),
        "runs": [str(r) for r in a.runs],
        "frames": len(frames),
        "min_score": detection.curve([d for _, _, d, _ in frames]),
        "persistence": [persistence(frames, k, pad) for pad in (0, 16) for k in (2, 3, 4)],
    }
    print(f"{len(frames)} held-out frames of {len(a.runs)} runs; per polyp, centroid rule ({out['device']})")
    for c in out["min_score"]:
        print(f"  min score {c['min_score']:<6g} recall {c['recall']:.3f}  FP/frame {c['fp_per_frame']:.3f}")
    for c in out["persistence"]:
        print(
            f"  seen in {c['k']} frames (pad {c['pad']:>2} px) recall {c['recall']:.3f}  FP/frame "
            f"{c['fp_per_frame']:.3f}  ({c['frames']} frames)"
        )
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

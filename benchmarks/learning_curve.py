"""Learning curve: held-out Dice against the number of training sequences, from k-fold evaluations.

Each point is one `data.train_fraction` of the same grouped folds (`polypseg train ... --set
data.train_fraction=F`, then `polypseg evaluate --split test`), so every point scores the same held-out
frames and the points can be compared frame by frame. For each point: the pooled Dice@0.5 over all
held-out frames with a polyp, over the named hard sequences and over the rest. The slope is a
least-squares line of pooled Dice on log2(training sequences), "Dice per doubling of the data", with a
95% interval from resampling whole test sequences (the same draw for every point, as the frames are
shared), and the same slope between the last two points alone, which shows whether the curve is bending
over. It also says where each would reach a target: extrapolations, labelled as such.

  python benchmarks/learning_curve.py --point 0.25 runs/LC25_{0..4}/eval --point 0.5 runs/LC50_{0..4}/eval \\
      --point 1 runs/LC100_{0..4}/eval --hard 10,4,27,1,12,28,13,23 --json lc.json --plot lc.png
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np
from summarize import load

from polypseg.compare import polyp_rows
from polypseg.data.splits import Split, cvc_clinicdb_groups


def training_sequences(m: dict) -> tuple[int, int]:
    """(frames, sequences) the evaluated checkpoint was trained on, from its run's split.json.

    Sequences are counted with CVC-ClinicDB's built-in table; on other data each frame counts as one.
    """
    split_file = Path(m["checkpoint"]).parent / "split.json"
    if not split_file.is_file():
        raise SystemExit(f"learning_curve.py: {split_file} not found (the run folder of {m['dir']})")
    split = Split.load(split_file)
    table = cvc_clinicdb_groups()
    return len(split.train), len({table.get(n, n) for n in split.train})


def fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Intercept and slope of y on log2(x)."""
    slope, intercept = np.polyfit(np.log2(x), y, 1)
    return float(intercept), float(slope)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--point",
        nargs="+",
        action="append",
        required=True,
        metavar="LABEL DIR",
        help="a label (the train fraction) and the evaluation folders of its folds",
    )
    ap.add_argument("--hard", default="", help="comma-separated sequences reported apart (e.g. 10,4,27)")
    ap.add_argument("--target", type=float, default=0.85, help="Dice the line is extrapolated to")
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    a = ap.parse_args()
    if len(a.point) < 2 or any(len(p) < 2 for p in a.point):
        ap.error("give at least two --point LABEL DIR... each with at least one evaluation folder")
    hard = {s.strip() for s in a.hard.split(",") if s.strip()}

    points, frames_by_point = [], []
    for label, *dirs in a.point:
        evals = [load(Path(d)) for d in dirs]
        sizes = [training_sequences(m) for m in evals]
        rows = polyp_rows([m["dir"] for m in evals])
        frames_by_point.append(rows)
        points.append(
            {
                "label": label,
                "folds": len(evals),
                "train_frames": statistics.fmean(s[0] for s in sizes),
                "train_sequences": statistics.fmean(s[1] for s in sizes),
                "device": sorted({m.get("train", {}).get("device", "?") for m in evals}),
            }
        )
    common = sorted(set.intersection(*(set(r) for r in frames_by_point)))
    if not common:
        raise SystemExit("learning_curve.py: the points share no held-out frame")
    groups = np.array([frames_by_point[0][n]["group"] for n in common])
    labels, inverse = np.unique(groups, return_inverse=True)
    dice = np.array([[float(r[n]["dice"]) for n in common] for r in frames_by_point])  # points x frames
    sums = np.stack([np.bincount(inverse, weights=d, minlength=len(labels)) for d in dice])
    counts = np.bincount(inverse, minlength=len(labels)).astype(np.float64)
    is_hard = np.isin(labels, sorted(hard))

    x = np.array([p["train_sequences"] for p in points])
    for i, p in enumerate(points):
        p["dice"] = float(sums[i].sum() / counts.sum())
        if hard:
            p["dice_hard"] = float(sums[i][is_hard].sum() / counts[is_hard].sum())
            p["dice_rest"] = float(sums[i][~is_hard].sum() / counts[~is_hard].sum())
    y = np.array([p["dice"] for p in points])
    intercept, slope = fit(x, y)
    draws = np.random.default_rng(0).integers(0, len(labels), size=(a.reps, len(labels)))
    boot = sums[:, draws].sum(2) / counts[draws].sum(1)  # points x reps
    slopes = np.array([fit(x, boot[:, r])[1] for r in range(a.reps)])
    lo, hi = np.quantile(slopes, [0.025, 0.975])
    reach = 2 ** ((a.target - intercept) / slope) if slope > 0 else math.inf
    step = np.log2(x[-1] / x[-2])
    last = float((y[-1] - y[-2]) / step)
    last_lo, last_hi = np.quantile((boot[-1] - boot[-2]) / step, [0.025, 0.975])
    last_reach = x[-1] * 2 ** ((a.target - y[-1]) / last) if last > 0 else math.inf
    out = {
        "frames": len(common),
        "sequences": len(labels),
        "hard": sorted(hard),
        "points": points,
        "per_doubling": {"mean": slope, "ci95": [float(lo), float(hi)]},
        "sequences_for_target": {"target": a.target, "extrapolated": reach, "last_step": last_reach},
        "per_doubling_last_step": {"mean": last, "ci95": [float(last_lo), float(last_hi)]},
    }
    for key in ("dice_hard", "dice_rest") if hard else ():
        out[f"per_doubling_{key[5:]}"] = fit(x, np.array([p[key] for p in points]))[1]

    cols = ["train fraction", "folds", "train frames", "train sequences", "Dice@0.5"]
    cols += ["hard sequences", "other sequences"] if hard else []
    print(
        f"{len(common)} held-out frames with a polyp, {len(labels)} sequences; trained on {points[0]['device']}"
    )
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for p in points:
        cells = [p["label"], str(p["folds"]), f"{p['train_frames']:.0f}", f"{p['train_sequences']:.1f}"]
        cells += [f"{p['dice']:.4f}"] + ([f"{p['dice_hard']:.4f}", f"{p['dice_rest']:.4f}"] if hard else [])
        print("| " + " | ".join(cells) + " |")
    print(
        f"\nPer doubling of the training sequences: Dice@0.5 {slope:+.4f} (95% interval {lo:+.4f} to {hi:+.4f}, "
        f"resampling whole test sequences, {a.reps} draws)"
        + (f"; hard {out['per_doubling_hard']:+.4f}, other {out['per_doubling_rest']:+.4f}" if hard else "")
        + f"; between the last two points {last:+.4f} ({last_lo:+.4f} to {last_hi:+.4f}). The line reaches"
        f" {a.target} at ~{reach:.0f} training sequences, the last step's slope at ~{last_reach:.0f}"
        f" (extrapolations beyond {x.max():.0f})."
    )
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    if a.plot:
        lines = [
            ("log-linear fit", reach, lambda v: intercept + slope * np.log2(v)),
            ("last step's slope", last_reach, lambda v: y[-1] + last * np.log2(v / x[-1])),
        ]
        plot(points, lines, a.target, bool(hard), a.plot)
    return 0


def plot(points, lines, target, hard, path: Path) -> None:
    """Pooled Dice per point (and hard / other sequences), each extrapolation as a dotted line to `target`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [p["train_sequences"] for p in points]
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    ax.plot(x, [p["dice"] for p in points], "o-", label="all held-out frames")
    if hard:
        ax.plot(x, [p["dice_rest"] for p in points], "s--", label="other sequences")
        ax.plot(x, [p["dice_hard"] for p in points], "^--", label="hard sequences")
    ends = []
    for (label, reach, f), style in zip(lines, (":", "-.")):
        end = min(max(reach, max(x)), 16 * max(x))
        if end == reach:  # reaches the target inside the plot: label where
            ends.append(end)
        xs = np.geomspace(min(x) if style == ":" else max(x), end, 50)
        ax.plot(xs, f(xs), style, color="grey", label=f"{label}, extrapolated")
    ax.axhline(target, color="red", lw=0.8)
    ax.set(xscale="log", xlabel="training sequences (mean over folds)", ylabel="pooled Dice@0.5")
    ticks = sorted({round(v) for v in x} | {round(e) for e in ends if e > max(x) * 1.05})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_title("same held-out frames at every point", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())

"""Evaluation folders -> the tables of benchmarks/RESULTS.md, so numbers are copied by a program.

Each argument is a folder written by `polypseg evaluate` (metrics.json). The training run's summary.json
is found beside the checkpoint the evaluation names, or, for a folder fetched from the GPU machine
(`eval_NAME` next to `NAME/`), by the run's name. Prints Markdown; `--json` writes the same numbers.

  python benchmarks/summarize.py --folds work/eval_fold{0,1,2,3,4}     # mean +- std over the folds
  python benchmarks/summarize.py --by-sequence --folds work/eval_fold{0,1,2,3,4}   # + a row per sequence
  python benchmarks/summarize.py work/eval_random work/eval_fold0 work/eval_unet   # one row each
  python benchmarks/summarize.py --folds new/eval{0,1} --baseline old/eval{0,1}  # paired difference, same frames
(--folds takes every folder after it: give the one-row folders first, or in a second call.)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from polypseg import detection
from polypseg.compare import paired as compare
from polypseg.compare import pool
from polypseg.errors import PolypsegError

# (label, section, key, digits)
COLUMNS = [
    ("Dice@0.5", "segmentation", "dice", 4),
    ("IoU@0.5", "segmentation", "iou", 4),
    ("mDice", "segmentation", "mdice", 4),
    ("S-measure", "segmentation", "s_measure", 4),
    ("max E", "segmentation", "max_e_measure", 4),
    ("MAE", "segmentation", "mae", 4),
    ("HD95 px", "segmentation", "hd95", 1),
    ("polyp recall", "detection", "recall", 3),
    ("FP/frame", "detection", "fp_per_frame", 2),
    ("AUROC", "classification", "auroc", 3),
]
TRAIN = [("epochs", "epochs"), ("img/s", "mean_img_per_s"), ("wall s", "wall_seconds")]


def load(eval_dir: Path) -> dict:
    if not (eval_dir / "metrics.json").is_file():
        raise SystemExit(
            f"summarize.py: {eval_dir} has no metrics.json (not a folder polypseg evaluate wrote)"
        )
    m = json.loads((eval_dir / "metrics.json").read_text())
    m["dir"] = eval_dir
    # an ensemble's metrics name each model: its run is the first's
    ckpt = Path(m["checkpoint"] if isinstance(m["checkpoint"], str) else m["checkpoint"][0])
    for cand in (ckpt.parent / "summary.json", eval_dir.parent / ckpt.parent.name / "summary.json"):
        if cand.is_file():
            m["train"] = json.loads(cand.read_text())
            break
    # An evaluation inside its run folder is named after the run (run/eval -> run, run/eval_L2 -> run/eval_L2).
    run = eval_dir.resolve().parent
    inside = run == ckpt.resolve().parent
    m["name"] = (
        (run.name if eval_dir.name == "eval" else f"{run.name}/{eval_dir.name}") if inside else eval_dir.name
    )
    return m


def value(m: dict, section: str, key: str) -> float:
    v = m.get(section, {}).get(key)
    return float("nan") if v is None else float(v)


def fmt(v: float, digits: int) -> str:
    return "n/a" if math.isnan(v) else f"{v:.{digits}f}"


def row(m: dict) -> list[str]:
    t = m.get("train", {})
    cells = [m["name"]] + [fmt(value(m, s, k), d) for _, s, k, d in COLUMNS]
    cells += [str(t.get(k, "")) for _, k in TRAIN]
    for target in ("0.85", "0.90"):
        v = t.get(f"time_to_dice_{target}_s")
        cells.append("not reached" if t and v is None else "" if v is None else f"{v:.0f} s")
    return cells


def interval(ci, sign: str = "") -> str:
    lo, hi = ci
    if math.isnan(lo):
        return "no interval: one sequence"
    return f"95% interval {lo:{sign}.3f} to {hi:{sign}.3f}"


def paired(folds: list[dict], baseline: list[Path]) -> tuple[str, dict]:
    """Mean per-frame difference to a baseline evaluated on the same frames, with a sequence bootstrap."""
    try:
        out = compare([m["dir"] for m in folds], baseline)
    except PolypsegError as e:
        raise SystemExit(f"summarize.py: {e}") from None
    d, md = out["dice"], out["mdice"]
    unit = (
        f"{out['sequences']} sequences"
        if out["sequences"]
        else f"{out['frames']} frames (no sequences: too narrow)"
    )
    text = (
        f"Against the baseline on the same {out['frames']} frames with a polyp ({unit}; "
        f"of {out['of'][0]} and {out['of'][1]}): Dice@0.5 **{d['mean']:+.4f}** ({interval(d['ci95'], '+')}), "
        f"mDice **{md['mean']:+.4f}** ({interval(md['ci95'], '+')}); "
        f"paired bootstrap resampling {'whole sequences' if out['sequences'] else 'frames'}, 2000 draws. The "
        "interval covers the choice of test frames, not the training seed."
    )
    return text, out


def pooled(folds: list[dict], by_sequence: bool) -> tuple[str, dict]:
    """The folds' held-out frames together: frame means with intervals that resample whole sequences."""
    if not all(m.get("per_sequence") for m in folds):
        return "", {}  # evaluated without sequences (or before polypseg knew them)
    out = pool([m["dir"] for m in folds])
    d, md = out["dice"], out["mdice"]
    text = (
        f"Pooled over the {len(folds)} folds' {out['polyp_frames']} held-out frames with a polyp ({out['sequences']} sequences): "
        f"Dice@0.5 **{d['mean']:.4f}** ({interval(d['ci95'])}), mDice **{md['mean']:.4f}** ({interval(md['ci95'])}); "
        "percentile bootstrap resampling whole sequences, 2000 draws."
    )
    if "detection" in out:  # per-polyp counts summed over every frame, negatives included
        det = out["detection"]
        text += (
            f" Per polyp over all {out['frames']} frames: recall {det['recall']:.3f}, precision {det['precision']:.3f}, "
            f"F1 **{det['f1']:.3f}**, {det['fp_per_frame']:.3f} false positives per frame."
        )
    if "detection_curve" in out:  # the same at each minimum score (evaluate's --min-score)
        text += f" At a minimum score of {detection.stricter_points(out['detection_curve'])}."
    if "by_size" in out:  # polyps by their area as a share of the frame
        text += (
            " By polyp area: "
            + "; ".join(
                f"{b['size']} {b['found']} of {b['polyps']} found, Dice@0.5 {b['dice']:.4f} over {b['frames']} frames"
                for b in out["by_size"]
                if b["polyps"] or b["frames"]
            )
            + "."
        )
    if by_sequence:
        seqs = {}
        for m in folds:
            for g in m["per_sequence"]:
                seqs[g["sequence"]] = {**g, "fold": m["name"]}
        order = sorted(seqs.values(), key=lambda g: g["dice"])
        text += "\n\n" + table(
            ["sequence", "held out in", "frames", "Dice@0.5", "mDice", "polyp recall", "FP/frame"],
            [
                [g["sequence"], g["fold"], str(g["polyp_frames"])]
                + [fmt(float(g[k]), 4) for k in ("dice", "mdice")]
                + [fmt(float(g["polyp_recall"]), 3), fmt(float(g["fp_per_frame"]), 2)]
                for g in order
            ],
        )
        out["per_sequence"] = order
    return text, out


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("evals", nargs="*", type=Path, help="evaluation folders, one row each")
    ap.add_argument("--folds", nargs="+", type=Path, default=[], help="evaluation folders of the k folds")
    ap.add_argument(
        "--by-sequence", action="store_true", help="with --folds: a row per video sequence, lowest Dice first"
    )
    ap.add_argument(
        "--baseline",
        nargs="+",
        type=Path,
        default=[],
        help="with --folds: evaluations of a baseline on the same frames; prints the paired difference",
    )
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    if not a.evals and not a.folds:
        ap.error("give evaluation folders")
    if a.baseline and not a.folds:
        ap.error("--baseline compares with the --folds evaluations: give both")
    header = ["run"] + [c[0] for c in COLUMNS] + [t[0] for t in TRAIN] + ["to 0.85", "to 0.90"]
    out: dict = {}
    runs = [load(p) for p in a.folds + a.evals]
    devices = sorted({m.get("train", {}).get("device", "?") for m in runs})
    print(f"trained on: {', '.join(devices)}; evaluated on: {', '.join(sorted({m['device'] for m in runs}))}")
    if a.folds:
        folds = runs[: len(a.folds)]
        stats = {}
        for label, s, k, _ in COLUMNS:
            vals = [value(m, s, k) for m in folds]
            vals = [v for v in vals if not math.isnan(v)]
            if vals:
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                stats[label] = {"mean": statistics.fmean(vals), "std": sd, "n": len(vals)}

        def cell(label: str, digits: int) -> str:
            if label not in stats:
                return "n/a"
            st = stats[label]
            of = f" ({st['n']} of {len(folds)})" if st["n"] < len(folds) else ""
            return f"**{fmt(st['mean'], digits)} ± {fmt(st['std'], digits)}**{of}"

        mean_row = [f"**mean ± std ({len(folds)} folds)**"] + [cell(c[0], c[3]) for c in COLUMNS]
        mean_row += [""] * (len(header) - len(mean_row))
        print(table(header, [row(m) for m in folds] + [mean_row]))
        out["folds"] = {"runs": [m["name"] for m in folds], "stats": stats}
        text, out["folds"]["pooled"] = pooled(folds, a.by_sequence)
        if text:
            print("\n" + text)
        if a.baseline:
            for d in a.baseline:
                load(d)  # the same one-line error for a folder that is not an evaluation
            text, out["folds"]["vs_baseline"] = paired(folds, a.baseline)
            print("\n" + text)
    if a.evals:
        print()
        print(table(header, [row(m) for m in runs[len(a.folds) :]]))
    out["rows"] = {m["name"]: {c[0]: value(m, c[1], c[2]) for c in COLUMNS} for m in runs}
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`polypseg compare`: two models scored on the same frames, frame by frame.

Each side is an `evaluate` folder or a finished `cv` folder (its folds' evaluations together). Dice@0.5 and
mDice are compared on the frames with a polyp that both scored, as paired differences with a 95% interval
from a bootstrap that resamples whole sequences (frames when none are known); per-polyp detection and
frame AUROC are given for each side on the same frames. This is the comparison the README's tables make,
for any two evaluations a user has.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import numpy as np

from polypseg import detection
from polypseg.crossval import fold_evaluations, paired
from polypseg.errors import PolypsegError
from polypseg.evaluate import auroc


def evaluations(path: str | Path) -> list[Path]:
    """An evaluate folder, or a cv folder's fold evaluations; one-line error for anything else."""
    path = Path(path)
    if (path / "per_image.csv").is_file() and (path / "metrics.json").is_file():
        return [path]
    if (path / "cv.json").is_file():
        return fold_evaluations(path, "compare:")
    raise PolypsegError(f"{path}: neither an evaluate folder (metrics.json, per_image.csv) nor a cv folder")


def _rows(dirs: list[Path]) -> dict[str, dict]:
    return {r["name"]: r for d in dirs for r in csv.DictReader(open(d / "per_image.csv"))}


def _side(rows: list[dict]) -> dict:
    """One model's figures on the common frames."""
    pos = [r for r in rows if r["negative"] == "False"]
    out = {k: statistics.fmean(float(r[k]) for r in pos) for k in ("dice", "mdice")}
    if rows and "det_tp" in rows[0]:
        tp, fp, fn = (sum(int(r[k]) for r in rows) for k in ("det_tp", "det_fp", "det_fn"))
        out["detection"] = detection.rates(tp, fp, fn, len(rows))
    labels = np.array([r["negative"] == "False" for r in rows])
    out["auroc"] = auroc(np.array([float(r["polyp_present_score"]) for r in rows]), labels)
    return out


def compare(this: str | Path, baseline: str | Path) -> dict:
    a_dirs, b_dirs = evaluations(this), evaluations(baseline)
    data = {json.loads((d / "metrics.json").read_text()).get("data") for d in a_dirs + b_dirs}
    if len(data) > 1:
        raise PolypsegError("these evaluations scored different data: " + ", ".join(sorted(map(str, data))))
    a, b = _rows(a_dirs), _rows(b_dirs)
    common = sorted(set(a) & set(b))
    result = {"this": str(this), "baseline": str(baseline), "data": data.pop(), **paired(a_dirs, b_dirs)}
    result["all_frames"] = len(common)
    result["negatives"] = sum(a[n]["negative"] == "True" for n in common)
    result["sides"] = {
        "this": _side([a[n] for n in common]),
        "baseline": _side([b[n] for n in common]),
    }
    return result


def format_compare(r: dict) -> str:
    a, b = r["sides"]["this"], r["sides"]["baseline"]
    over = f"{r['sequences']} sequences" if r["sequences"] else "frames: no sequences known"

    def num(v: float, digits: int = 4) -> str:
        return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"

    lines = [
        f"{r['this']} against {r['baseline']}: {r['all_frames']} frames scored by both ({r['frames']} with a "
        f"polyp, {r['negatives']} without), of {r['data']}",
        f"{'':22s}{'this':>10s}{'baseline':>10s}   difference, frame by frame (95% interval over {over})",
    ]
    for key, label in (("dice", "Dice@0.5"), ("mdice", "mDice (256 thr)")):
        lo, hi = r[key]["ci95"]
        lines.append(
            f"{label:22s}{num(a[key]):>10s}{num(b[key]):>10s}   {r[key]['mean']:+.4f} ({lo:+.4f} to {hi:+.4f})"
        )
    if "detection" in a and "detection" in b:
        for key, label in (("recall", "polyp recall"), ("fp_per_frame", "false alarms per frame")):
            lines.append(f"{label:22s}{num(a['detection'][key], 3):>10s}{num(b['detection'][key], 3):>10s}")
    if r["negatives"]:
        lines.append(f"{'frame AUROC':22s}{num(a['auroc'], 3):>10s}{num(b['auroc'], 3):>10s}")
    lines.append(
        "The interval covers the choice of frames, not training noise: a difference under ~0.02 between two "
        "trainings wants a second seed."
    )
    return "\n".join(lines)

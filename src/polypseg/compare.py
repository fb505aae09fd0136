"""Evaluations taken together: pooled over folds (`pool`, for `cv` and summaries), paired frame by frame
(`paired`, for `cv --baseline`), and `polypseg compare`: two models scored on the same frames.

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
import os
import statistics
from pathlib import Path

import numpy as np

from polypseg import detection
from polypseg.data.layouts import split_name
from polypseg.errors import PolypsegError
from polypseg.evaluate import auroc
from polypseg.metrics import grouped_bootstrap_ci
from polypseg.network import cv_folds


def read_rows(eval_dirs: list[Path]) -> list[dict]:
    """The per_image.csv rows of several evaluation folders, in order."""
    rows = []
    for d in eval_dirs:
        with open(Path(d) / "per_image.csv", newline="") as f:
            rows += csv.DictReader(f)
    return rows


def frame_rows(eval_dirs: list[Path]) -> dict[str, dict]:
    """Frame name -> per_image.csv row over several evaluation folders (a cv's folds hold each frame once)."""
    return {r["name"]: r for r in read_rows(eval_dirs)}


def _detection(rows: list[dict]) -> dict:
    """Per-polyp detection over these per_image.csv rows, every frame's counts summed."""
    tp, fp, fn = (sum(int(r[k]) for r in rows) for k in ("det_tp", "det_fp", "det_fn"))
    return detection.rates(tp, fp, fn, len(rows))


def _sequences_known(groups: list[str]) -> bool:
    """Whether the frames' groups are video sequences: every frame has one and some hold several (an
    evaluation without sequences names each frame its own group, as evaluate decides)."""
    return all(groups) and len(set(groups)) < len(groups)


def pool(eval_dirs: list[Path], dataset: str | None = None) -> dict:
    """The frames of several evaluations together (per_image.csv): mean Dice@0.5, IoU@0.5 and mDice over
    frames with a polyp, each with an interval from a bootstrap over whole sequences (over frames when the evaluations
    knew no sequences, which is too narrow), and per-polyp detection summed over every frame. `dataset`: only
    the frames of that dataset of a combination (named DATASET/stem)."""
    rows = read_rows(eval_dirs)
    if dataset is not None:
        rows = [r for r in rows if split_name(r["name"])[0] == dataset]
    pos = [r for r in rows if r["negative"] == "False"]
    if not pos:
        raise PolypsegError("no frame with a polyp in the evaluations to pool")
    known = _sequences_known([r["group"] for r in pos])
    groups = [r["group"] if known else r["name"] for r in pos]
    out = {
        "frames": len(rows),
        "polyp_frames": len(pos),
        "sequences": len(set(groups)) if known else None,
        "interval_over": "sequences" if known else "frames (no sequences known: too narrow)",
    }
    for key in ("dice", "iou", "mdice"):
        vals = [float(r[key]) for r in pos]
        out[key] = {"mean": statistics.fmean(vals), "ci95": list(grouped_bootstrap_ci(vals, groups))}
    if "det_tp" in rows[0]:  # evaluations from before per-frame detection counts have none
        out["detection"] = _detection(rows)
    metrics = [json.loads((Path(d) / "metrics.json").read_text()) for d in eval_dirs]
    sizes = [m.get("by_size") for m in metrics]
    if dataset is None and all(sizes) and len({tuple(b["size"] for b in k) for k in sizes}) == 1:
        out["by_size"] = detection.pool_by_size(sizes)  # which polyps the folds missed, by apparent size
    curves = [m.get("detection_curve") for m in metrics]
    if dataset is None and all(curves) and len({tuple(c["min_score"] for c in k) for k in curves}) == 1:
        # the held-out frames of every fold together: where to choose a --min-score, before any test set
        out["detection_curve"] = [
            {
                "min_score": points[0]["min_score"],
                **detection.rates(*(sum(c[k] for c in points) for k in ("tp", "fp", "fn", "frames"))),
            }
            for points in zip(*curves)
        ]
    return out


def polyp_rows(eval_dirs: list[Path]) -> dict[str, dict]:
    """Frame name -> per_image.csv row over several evaluation folders, frames with a polyp only."""
    return {n: r for n, r in frame_rows(eval_dirs).items() if r["negative"] == "False"}


def paired(eval_dirs: list[Path], baseline_dirs: list[Path]) -> dict:
    """Per-frame difference (this minus baseline) of Dice@0.5 and mDice over the frames with a polyp that both
    evaluations scored, with an interval from a bootstrap over whole sequences: a paired comparison of two
    recipes on the same held-out frames (their folds may differ: a seed deals the sequences anew). The
    interval covers the choice of test frames, not training noise; a second seed covers that."""
    a, b = polyp_rows(eval_dirs), polyp_rows(baseline_dirs)
    common = sorted(set(a) & set(b))
    if not common:
        raise PolypsegError("the baseline's evaluations share no frame with a polyp with these")
    group = {n: a[n].get("group") or b[n].get("group") for n in common}  # either side may name it
    known = _sequences_known(list(group.values()))
    groups = [group[n] if known else n for n in common]
    out = {
        "frames": len(common),
        "of": [len(a), len(b)],
        "sequences": len(set(groups)) if known else None,
        "interval_over": "sequences" if known else "frames (no sequences known: too narrow)",
    }
    for key in ("dice", "mdice"):
        diff = [float(a[n][key]) - float(b[n][key]) for n in common]
        out[key] = {"mean": statistics.fmean(diff), "ci95": list(grouped_bootstrap_ci(diff, groups))}
    return out


def fold_evaluations(folder: str | os.PathLike, flag: str = "--baseline") -> list[Path]:
    """The fold evaluations of a finished `polypseg cv` folder (`flag`: the option that named it)."""
    cv_json = Path(folder) / "cv.json"
    if not cv_json.is_file():
        raise PolypsegError(f"{flag} {folder}: no cv.json there (a finished `polypseg cv` folder)")
    k = cv_folds(Path(folder))
    evals = [Path(folder) / f"fold{i}" / "eval" for i in range(k)]
    missing = [e for e in evals if not (e / "per_image.csv").is_file()]
    if missing:
        raise PolypsegError(f"{flag} {folder}: {missing[0]} holds no evaluation (per_image.csv)")
    return evals


def evaluations(path: str | Path) -> list[Path]:
    """An evaluate folder, or a cv folder's fold evaluations; one-line error for anything else."""
    path = Path(path)
    if (path / "per_image.csv").is_file() and (path / "metrics.json").is_file():
        return [path]
    if (path / "cv.json").is_file():
        return fold_evaluations(path, "compare:")
    raise PolypsegError(f"{path}: neither an evaluate folder (metrics.json, per_image.csv) nor a cv folder")


def _side(rows: list[dict]) -> dict:
    """One model's figures on the common frames."""
    pos = [r for r in rows if r["negative"] == "False"]
    out = {k: statistics.fmean(float(r[k]) for r in pos) for k in ("dice", "mdice")}
    if rows and "det_tp" in rows[0]:
        out["detection"] = _detection(rows)
    labels = np.array([r["negative"] == "False" for r in rows])
    out["auroc"] = auroc(np.array([float(r["polyp_present_score"]) for r in rows]), labels)
    return out


def compare(this: str | Path, baseline: str | Path) -> dict:
    a_dirs, b_dirs = evaluations(this), evaluations(baseline)
    data = {json.loads((d / "metrics.json").read_text()).get("data") for d in a_dirs + b_dirs}
    if len(data) > 1:
        raise PolypsegError("these evaluations scored different data: " + ", ".join(sorted(map(str, data))))
    a, b = frame_rows(a_dirs), frame_rows(b_dirs)
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

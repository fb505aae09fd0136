"""`polypseg evaluate`: the field's metric set at each frame's original resolution.

Per image (threshold 0.5 unless told): Dice, IoU, precision, recall, specificity, HD95 (pixels);
threshold-free: MAE, S-measure, weighted F-measure, mean/max E-measure (pysodmetrics, the reference
implementation of the MATLAB toolbox PraNet-family papers use), and mDice/mIoU over 256 thresholds.
Frames with an empty ground truth are left out of the segmentation means and reported on their own.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy import ndimage, stats

from polypseg import atomic, detection
from polypseg.data.cache import content_fingerprint
from polypseg.data.download import sha256_of
from polypseg.data.layouts import discover, split_name
from polypseg.data.splits import Split, load_groups
from polypseg.data.validate import validate
from polypseg.errors import PolypsegError, at_least_one
from polypseg.imageio import read_mask, read_rgb
from polypseg.inorder import InOrder
from polypseg.metrics import grouped_bootstrap_ci, threshold_sweep
from polypseg.network import resolve_checkpoints, trained_frames
from polypseg.predict import Predictor, overlay

SEG_KEYS = [
    "dice",
    "iou",
    "precision",
    "recall",
    "specificity",
    "mae",
    "s_measure",
    "wf_measure",
    "mean_e_measure",
    "max_e_measure",
    "mdice",
    "miou",
    "hd95",
]


def hd95(pred: np.ndarray, gt: np.ndarray) -> float:
    """Symmetric 95th-percentile Hausdorff distance between mask boundaries, in pixels (nan if one is empty)."""
    if not pred.any() or not gt.any():
        return float("nan")
    # Both boundaries lie in the box around the two masks: the distances computed inside it (one pixel
    # of margin keeps the erosion's edge where the frame has one) are the whole frame's, at a fraction
    # of the cost on a 1920x1080 frame with a small polyp.
    box = detection.mask_box(pred | gt, margin=1)
    pred, gt = pred[box], gt[box]
    pb = pred ^ ndimage.binary_erosion(pred)
    gb = gt ^ ndimage.binary_erosion(gt)
    d_to_g = ndimage.distance_transform_edt(~gb)
    d_to_p = ndimage.distance_transform_edt(~pb)
    return float(np.percentile(np.concatenate([d_to_g[pb], d_to_p[gb]]), 95))


def saliency_metrics(prob: np.ndarray, gt: np.ndarray) -> dict:
    """MAE, S-measure, weighted F-measure and E-measure of one frame via pysodmetrics."""
    import py_sod_metrics as sod

    pred8 = np.clip(np.round(prob * 255), 0, 255).astype(np.uint8)
    gt8 = gt.astype(np.uint8) * 255
    mae, sm, wfm, em = sod.MAE(), sod.Smeasure(), sod.WeightedFmeasure(), sod.Emeasure()
    for m in (mae, sm, wfm, em):
        m.step(pred=pred8, gt=gt8)
    curve = np.asarray(em.changeable_ems[-1], dtype=np.float64)
    return {
        "mae": float(mae.maes[-1]),
        "s_measure": float(sm.sms[-1]),
        "wf_measure": float(wfm.weighted_fms[-1]),
        "mean_e_measure": float(curve.mean()),
        "max_e_measure": float(curve.max()),
    }


def frame_metrics(prob: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> tuple[dict, dict]:
    """All per-image metrics for a probability map and a bool truth of the same (original) size.

    Returns (metrics, sweep) where sweep holds the per-threshold Dice/IoU curves.
    """
    pred = prob > threshold
    tp = float(np.count_nonzero(pred & gt))
    fp = float(np.count_nonzero(pred & ~gt))
    fn = float(np.count_nonzero(~pred & gt))
    tn = float(pred.size) - tp - fp - fn
    div = lambda a, b: a / b if b > 0 else 0.0  # noqa: E731
    sweep = threshold_sweep(prob, gt)
    m = {
        "dice": div(2 * tp, 2 * tp + fp + fn),
        "iou": div(tp, tp + fp + fn),
        "precision": div(tp, tp + fp),
        "recall": div(tp, tp + fn),
        "specificity": div(tn, tn + fp),
        "mdice": float(sweep["dice"].mean()),
        "miou": float(sweep["iou"].mean()),
        "hd95": hd95(pred, gt),
        "fp_pixels": int(fp),
    }
    m.update(saliency_metrics(prob, gt))
    return m, sweep


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _one_or_list(values: list):
    return values[0] if len(values) == 1 else values


def _held_out(meta: dict, pairs, fp: str) -> set[str] | None:
    """The names of this data's frames a model did not train on; None: it was not trained on this data."""
    ds = meta.get("dataset") or {}
    # This data is the training data, or one dataset of a training combination (its frames then
    # named FOLDER/stem in the split).
    part = next((k for k, v in (ds.get("parts") or {}).items() if v == fp), None)
    if not (meta.get("split") and (ds.get("fingerprint") == fp or part)):
        return None
    s = Split.from_dict(meta["split"])
    return set(s.val) if part is None else {st for d, st in map(split_name, s.val) if d == part}


def _trained_on(predictor: Predictor, pairs, hashes: dict[str, str]) -> set[str]:
    """The names of the frames of `pairs` that any of the models trained on, found by their pixels
    (`hashes`: name -> pixel hash, from validation; checkpoints list their training frames' hashes: a
    copy, subset or renamed part of the training data is recognised too). Empty for checkpoints from
    before the hashes."""
    trained = {h for m in predictor.metas for h in trained_frames(m)}
    return {p.name for p in pairs if hashes.get(p.name) in trained}


def _choose_pairs(pairs, split: str, predictor: Predictor, hashes: dict[str, str]):
    """Resolve --split into (pairs, description)."""
    one = len(predictor.metas) == 1
    if split == "all":
        seen = len(_trained_on(predictor, pairs, hashes))
        who = "the checkpoint" if one else "a model"
        return pairs, "all frames" + (f" ({seen} of them {who} trained on: optimistic)" if seen else "")
    if split == "test":
        fp = content_fingerprint(pairs)
        held = [_held_out(m, pairs, fp) for m in predictor.metas]
        known = [h for h in held if h is not None]
        chosen = [p for p in pairs if all(p.name in h for h in known)]
        seen = _trained_on(predictor, chosen, hashes)
        chosen = [p for p in chosen if p.name not in seen]
        if not chosen and one:
            raise PolypsegError(
                "this checkpoint was trained on every frame of this data; "
                "use other data or --split all (optimistic)"
            )
        if not chosen:
            raise PolypsegError(
                "no frame of this data is held out from every model of the ensemble (the folds of a "
                "cross-validation each trained on the others' test frames); evaluate it on other data"
            )
        if known:
            method = Split.from_dict(predictor.metas[held.index(known[0])]["split"]).method
            desc = (
                f"held-out frames of the checkpoint's split ({method})"
                if one
                else f"the frames held out from all {len(held)} models ({method} splits)"
            )
            if seen:
                desc += f", less {len(seen)} found by their pixels among the training frames"
        else:
            who = "the checkpoint was not" if one else "none of the models was"
            desc = (
                f"the frames {who} trained on: {len(seen)} of the {len(pairs)} are training frames, "
                "found by their pixels, and left out"
                if seen
                else f"all frames ({who} trained on this data)"
            )
        return chosen, desc
    s = Split.load(split)
    names = set(s.val)
    chosen = [p for p in pairs if p.name in names]
    if not chosen:
        raise PolypsegError(f"{split}: none of its val frames are in this data")
    return chosen, f"val frames of {split}"


def _load_groups(dataset, groups: str | None, meta: dict) -> tuple[list[str], str]:
    """--groups, else the groups CSV the checkpoint was trained with if it covers this data, else the default."""
    trained_with = ((meta.get("config") or {}).get("data") or {}).get("groups")
    if groups is None and trained_with and Path(trained_with).is_file():
        try:
            found, source = load_groups(dataset, trained_with)
            return found, f"{source} (the checkpoint's training config)"
        except PolypsegError:
            pass  # that table does not name every frame of this data
    return load_groups(dataset, groups)


def _thumb(rgb: np.ndarray, width: int = 320) -> np.ndarray:
    h = max(1, round(rgb.shape[0] * width / rgb.shape[1]))
    return cv2.resize(rgb, (width, h), interpolation=cv2.INTER_AREA)


def _nanmean(vals) -> float:
    arr = np.asarray(
        [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))], dtype=float
    )
    return float(arr.mean()) if len(arr) else float("nan")


def _group_key(g: str):
    return (0, int(g), "") if g.isdigit() else (1, 0, g)


def per_group(
    rows: list[dict], det_counts: list, of=lambda r: r["group"], label: str = "sequence"
) -> list[dict]:
    """Metrics of each video sequence (or of each dataset, with `of` and `label`): segmentation means over
    its polyp frames, detection per polyp."""
    by: dict[str, list[tuple[dict, object]]] = {}
    for r, c in zip(rows, det_counts):
        by.setdefault(of(r), []).append((r, c))
    out = []
    for g in sorted(by, key=_group_key):
        pos = [r for r, _ in by[g] if not r["negative"]]
        det = detection.summarize([c for _, c in by[g]])
        out.append(
            {
                label: g,
                "frames": len(by[g]),
                "polyp_frames": len(pos),
                **{k: _nanmean(r[k] for r in pos) for k in ("dice", "iou", "mdice", "s_measure")},
                "polyp_recall": det["recall"],
                "fp_per_frame": det["fp_per_frame"],
            }
        )
    return out


def by_size(rows: list[dict], det_frames: list, min_score: float) -> list[dict]:
    """Per apparent-size bin (detection.SIZE_EDGES): per-polyp recall, each polyp binned by its own area,
    and the mean Dice@threshold and mDice of the frames whose polyp area (all polyps together) falls in it."""
    out = detection.recall_by_size(det_frames, min_score)
    for b, entry in enumerate(out):
        frames = [r for r in rows if not r["negative"] and detection.size_bin(r["polyp_share"]) == b]
        entry.update(frames=len(frames), **{k: _nanmean(r[k] for r in frames) for k in ("dice", "mdice")})
    return out


@dataclass
class _Frame:
    row: dict
    sweep: dict | None  # the threshold sweep of a frame with a polyp
    counts: detection.DetectionCounts  # at the chosen minimum score
    detections: detection.FrameDetections  # at every score, for the detection curve
    pos_hist: np.ndarray  # 256-bin histograms of the quantised probability on polyp / other pixels
    neg_hist: np.ndarray
    thumbs: tuple


def _score_frame(
    pair, group, rgb: np.ndarray, pred, thr: float, min_score: float, min_polyp_area: int | str
) -> _Frame:
    """Every per-frame result of one predicted frame against its mask (runs on a worker thread)."""
    gt = read_mask(pair.mask)
    prob = pred.probability
    q = np.clip(np.round(prob * 255), 0, 255).astype(np.int64)
    # the predictor's own components (min_area applied), each with its score; specks in the mask ignored
    speck = detection.min_area_px(min_polyp_area, *gt.shape, name="--min-polyp-area")
    dets = detection.assign(
        [c for c, _ in pred.components], gt, [s for _, s in pred.components], min_polyp_area=speck
    )
    counts = dets.counts(min_score)
    row = {
        "name": pair.name,
        "group": group,
        "file": str(pair.image),
        "width": rgb.shape[1],
        "height": rgb.shape[0],
        "negative": not gt.any(),
        "polyp_present_score": pred.polyp_present_score,
        "det_tp": counts.tp,
        "det_fp": counts.fp,
        "det_fn": counts.fn,
        "gt_specks": dets.specks,
    }
    sweep = None
    if gt.any():
        m, sweep = frame_metrics(prob, gt, thr)
        row.update(m)
        row["polyp_share"] = 100 * float(gt.sum()) / gt.size  # apparent size: % of the frame
    else:
        row["fp_pixels"] = int(pred.mask.sum())
    thumbs = (
        _thumb(rgb),
        _thumb(np.repeat(gt[:, :, None].astype(np.uint8) * 255, 3, 2)),
        _thumb(overlay(rgb, pred)),
    )
    return _Frame(
        row,
        sweep,
        counts,
        dets,
        np.bincount(q[gt], minlength=256),
        np.bincount(q[~gt], minlength=256),
        thumbs,
    )


def evaluate(
    checkpoint: str | None = None,
    data=None,
    images=None,
    masks=None,
    split: str = "test",
    out: str = "eval",
    threshold: float | None = None,
    prune: int | None = None,
    tta: bool = False,
    min_area: int | str = detection.DEFAULT_MIN_AREA,
    min_score: float | None = None,
    device: str = "auto",
    batch_size: int = 8,
    overwrite: bool = False,
    progress: bool = True,
    quiet: bool = False,
    groups: str | None = None,
    min_polyp_area: int | str = detection.DEFAULT_MIN_POLYP_AREA,
) -> dict:
    """Evaluate a checkpoint on a dataset; write metrics.json, per_image.csv and report.html to `out`.

    `groups` is a CSV frame,group (video sequence) for data without a built-in table (default: the one
    the checkpoint was trained with, if it names every frame). With sequences known, the metrics are
    also given by sequence and the confidence intervals resample whole sequences. `min_score` is the
    lowest peak probability of a component counted as a detected polyp (None: the checkpoint's); the detection curve in
    metrics.json gives recall and false alarms at other minimum scores. Ground-truth components under
    `min_polyp_area` (a share of the frame, or pixels) are annotation specks, not polyps to detect.
    """
    at_least_one("--batch-size", batch_size)
    detection.parse_min_area(min_polyp_area, "--min-polyp-area")
    ckpt_paths = resolve_checkpoints(checkpoint)
    out_dir = atomic.claim_output_dir(out, overwrite, "pass --overwrite to replace its contents")
    atomic.check_writable(out_dir, out_dir.parent)  # the results are put together beside it, then renamed
    predictor = Predictor.from_checkpoint(
        ckpt_paths,
        device=device,
        prune=prune,
        threshold=threshold,
        tta=tta,
        min_area=min_area,
        min_score=min_score,
    )
    dataset = discover(data, images, masks)
    for root in dataset.roots:
        if out_dir.resolve() == root.resolve() or root.resolve() in out_dir.resolve().parents:
            raise PolypsegError("--out must not be inside the data folder")
    checked = validate(dataset)
    pairs = checked.good
    if not pairs:
        raise PolypsegError(f"{dataset.label}: no usable image/mask pairs")
    chosen, split_desc = _choose_pairs(pairs, split, predictor, checked.hashes)
    group_list, group_source = _load_groups(dataset, groups, predictor.meta)
    group_of = dict(zip(dataset.names, group_list))
    thr = predictor.threshold

    rows, sweeps, det_counts, det_frames, thumbs = [], [], [], [], []
    pooled_pos = np.zeros(256, np.int64)
    pooled_neg = np.zeros(256, np.int64)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=len(chosen), unit="img", desc="evaluating", leave=False, file=sys.stderr, disable=None
        )

    def collect(frame: _Frame) -> None:  # in the frames' order, on this thread
        rows.append(frame.row)
        det_counts.append(frame.counts)
        det_frames.append(frame.detections)
        thumbs.append(frame.thumbs)
        if frame.sweep is not None:
            sweeps.append(frame.sweep)
        pooled_pos[:] += frame.pos_hist
        pooled_neg[:] += frame.neg_hist
        if bar:
            bar.update(1)  # a frame counts once it is scored

    resized = 0
    # Each frame's metrics run on worker threads while the network predicts the next batch (NOTES 45);
    # results are collected in the frames' order, so every output is the same as one frame at a time.
    # As many as PyTorch's threads (the CPU share this process was given, e.g. by `cv --jobs`), at most 8.
    workers = min(8, torch.get_num_threads())
    with InOrder(workers=workers, ahead=workers + batch_size, done=collect) as scoring:
        for i in range(0, len(chosen), batch_size):
            group = chosen[i : i + batch_size]
            frames = [read_rgb(p.image) for p in group]
            preds = predictor.predict_batch(frames, [str(p.image) for p in group])
            for pair, rgb, pred in zip(group, frames, preds):
                resized += rgb.shape[:2] != (predictor.height, predictor.width)
                scoring.submit(
                    _score_frame,
                    pair,
                    group_of[pair.name],
                    rgb,
                    pred,
                    thr,
                    predictor.min_score,
                    min_polyp_area,
                )
    if bar:
        bar.close()

    pos_rows = [r for r in rows if not r["negative"]]
    neg_rows = [r for r in rows if r["negative"]]
    seg = {k: _nanmean(r[k] for r in pos_rows) for k in SEG_KEYS}
    seg["dice_std"] = float(np.std([r["dice"] for r in pos_rows])) if pos_rows else float("nan")
    seg["hd95_undefined_frames"] = sum(1 for r in pos_rows if math.isnan(r["hd95"]))
    sequences = len(set(group_list)) < len(group_list)  # some group holds several frames
    for k in ("dice", "mdice"):
        seg[f"{k}_ci95"] = list(
            grouped_bootstrap_ci([r[k] for r in pos_rows], [r["group"] for r in pos_rows])
        )
    n_units = len({r["group"] for r in pos_rows})
    unit = "sequence" if sequences else "frame"
    seg["ci95_over"] = f"{n_units} {unit}{'s' if n_units != 1 else ''}"
    seg["ci95_method"] = "percentile bootstrap, 2000 draws, seed 0, resampling " + (
        "whole sequences"
        if sequences
        else "frames (no sequences known: if several frames come from one video, this interval is too narrow)"
    )
    det = detection.summarize(det_counts)
    labels = np.array([not r["negative"] for r in rows])
    scores = np.array([r["polyp_present_score"] for r in rows])
    called = np.array([r["det_tp"] + r["det_fp"] > 0 for r in rows])
    cls = {
        "score": "max pixel probability in the frame",
        "positive_call": "at least one detected polyp component",
        "auroc": auroc(scores, labels),
        "sensitivity": float(called[labels].mean()) if labels.any() else float("nan"),
        "specificity": float((~called[~labels]).mean()) if (~labels).any() else float("nan"),
        "positives": int(labels.sum()),
        "negatives": int((~labels).sum()),
    }
    negatives = {
        "frames": len(neg_rows),
        "frames_with_false_positive": sum(1 for r in neg_rows if r["det_fp"] > 0),
        "mean_fp_pixels": _nanmean(r["fp_pixels"] for r in neg_rows) if neg_rows else float("nan"),
    }
    dice_curve = np.mean([s["dice"] for s in sweeps], axis=0) if sweeps else np.zeros(256)
    tp_c = pooled_pos[::-1].cumsum()[::-1].astype(float)
    fp_c = pooled_neg[::-1].cumsum()[::-1].astype(float)
    pr_prec = np.where(tp_c + fp_c > 0, tp_c / np.maximum(tp_c + fp_c, 1), 1.0)
    pr_rec = tp_c / max(1.0, float(pooled_pos.sum()))

    metrics = {
        # one model: its path and hash; an ensemble: lists of them
        "checkpoint": _one_or_list([str(c) for c in ckpt_paths]),
        "checkpoint_sha256": _one_or_list([sha256_of(c) for c in ckpt_paths]),
        "model": predictor.meta.get("arch"),
        "prune": predictor.prune,
        "head": predictor.head,
        "tta": tta,
        "output": predictor.output,
        "data": dataset.label,
        "dataset_fingerprint": content_fingerprint(chosen),
        "split": split_desc,
        "frames": len(rows),
        "polyp_frames": len(pos_rows),
        "threshold": thr,
        "min_area": min_area,
        "min_score": predictor.min_score,
        # ground-truth components under this are stray pixels, not polyps to detect; how many there were
        "min_polyp_area": min_polyp_area,
        "gt_specks": sum(r["gt_specks"] for r in rows),
        "network_input": [predictor.height, predictor.width],
        "resize_note": f"{resized} of {len(rows)} frames were resized to the network's "
        f"{predictor.height}x{predictor.width} (height x width) and their probabilities resized back; "
        "metrics are at each frame's original resolution",
        "groups": group_source,
        "segmentation": seg,
        "per_sequence": per_group(rows, det_counts) if sequences else [],
        # combined datasets (frames named FOLDER/stem): each dataset's own figures, as PraNet-family tables give
        "per_dataset": per_group(rows, det_counts, lambda r: split_name(r["name"])[0], "dataset")
        if dataset.parts
        else [],
        "detection": det,
        # by the polyp's area as a share of the frame (how visible it is, not its size in mm)
        "by_size": by_size(rows, det_frames, predictor.min_score),
        # recall against false alarms per frame as the minimum score rises (FROC-style)
        "detection_curve": detection.curve(
            det_frames, sorted({*detection.CURVE_MIN_SCORES, predictor.min_score})
        ),
        "classification": cls,
        "negatives": negatives,
        "device": predictor.device_name(),
        "precision": predictor.precision,
        "environment": predictor.environment(),
    }

    # Write everything into a temp folder, then move it into place: no half-written reports.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with open(tmp / "per_image.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fields)
            w.writeheader()
            w.writerows(rows)
        from polypseg.report import write_report

        write_report(tmp / "report.html", metrics, rows, thumbs, dice_curve, (pr_rec, pr_prec))
        atomic.default_permissions(tmp)  # mkdtemp makes it 0700
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        print(format_table(metrics))
        print(f"report: {out_dir / 'report.html'}")
    return metrics


def format_table(m: dict) -> str:
    s, d, c = m["segmentation"], m["detection"], m["classification"]
    f = lambda v: "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"  # noqa: E731
    lines = [
        f"{m['data']}: {m['frames']} frames ({m['polyp_frames']} with polyps), {m['split']}; threshold {m['threshold']}; "
        f"output {m['output']}" + (f"; {m['precision']}" if m.get("precision") else ""),
        "segmentation (frames with a polyp, mean per image)",
        f"  Dice@{m['threshold']:<5} {f(s['dice'])}   IoU@{m['threshold']:<5} {f(s['iou'])}   "
        f"mDice(256 thr) {f(s['mdice'])}   mIoU(256 thr) {f(s['miou'])}",
        f"  precision   {f(s['precision'])}   recall      {f(s['recall'])}   specificity    {f(s['specificity'])}",
        f"  S-measure   {f(s['s_measure'])}   wF-measure  {f(s['wf_measure'])}   mean E-measure {f(s['mean_e_measure'])}"
        f"   max E-measure {f(s['max_e_measure'])}",
        f"  MAE         {f(s['mae'])}   HD95 (px)   {s['hd95']:.1f}",
        f"  95% interval: Dice@{m['threshold']} {f(s['dice_ci95'][0])}-{f(s['dice_ci95'][1])}   "
        f"mDice {f(s['mdice_ci95'][0])}-{f(s['mdice_ci95'][1])}   (bootstrap over {s['ci95_over']})"
        if not math.isnan(s["dice_ci95"][0])
        else f"  95% interval: n/a (needs two or more, has {s['ci95_over']})",
        "detection per polyp (centroid rule)",
        f"  recall      {f(d['recall'])}   precision   {f(d['precision'])}   F1 {f(d['f1'])}   "
        f"FP/frame {f(d['fp_per_frame'])}"
        + (f"   (components scoring >= {m['min_score']:g})" if m.get("min_score") else ""),
    ]
    if m.get("gt_specks"):
        lines.append(
            f"  {m['gt_specks']} stray mask component(s) under {m['min_polyp_area']} of the frame "
            "not counted as polyps (--min-polyp-area)"
        )
    stricter = detection.stricter_points(m.get("detection_curve", []), m.get("min_score", 0.0), digits=4)
    if stricter:
        lines.append(f"  with --min-score {stricter}")
    lines += detection.size_lines(m.get("by_size", []), m["threshold"])
    at = lines.index("detection per polyp (centroid rule)")  # per-group rows go above it
    seqs = [g for g in m.get("per_sequence", []) if g["polyp_frames"]]
    if len(seqs) > 1:
        low = sorted(seqs, key=lambda g: g["dice"])[:3]
        lines.insert(
            at,
            f"  by sequence ({len(seqs)}), lowest Dice@{m['threshold']}: "
            + ", ".join(f"{g['sequence']} {f(g['dice'])} ({g['polyp_frames']} frames)" for g in low),
        )
        at += 1
    for g in m.get("per_dataset", []):
        lines.insert(
            at,
            f"  {g['dataset']}: {g['polyp_frames']} frames, Dice@{m['threshold']} {f(g['dice'])}, "
            f"IoU {f(g['iou'])}, mDice {f(g['mdice'])}",
        )
        at += 1
    if c["negatives"]:
        lines.append(f"frame classification ({c['positives']} positive, {c['negatives']} negative frames)")
        lines.append(
            f"  AUROC       {f(c['auroc'])}   sensitivity {f(c['sensitivity'])}   specificity {f(c['specificity'])}"
        )
    return "\n".join(lines)

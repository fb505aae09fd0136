"""Polyp-level detection (MICCAI 2015 sub-challenge rule) and box extraction.

Each connected component of the predicted mask (at least `min_area` pixels) is one detection. It is a
true positive if its centroid lies inside a ground-truth polyp; several hits on one polyp count once
(the extra hits are neither TP nor FP); a polyp with no hit is a false negative.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Component:
    box_xyxy: tuple[int, int, int, int]
    area_px: int
    centroid: tuple[float, float]  # (x, y)
    label: int  # label in the component image


def components(mask: np.ndarray, min_area: int = 0) -> tuple[np.ndarray, list[Component]]:
    """8-connected components of a bool mask with area >= min_area; returns (labels, components)."""
    n, labels, stats, cents = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    out = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area >= min_area:
            out.append(Component((x, y, x + w, y + h), area, (float(cents[i][0]), float(cents[i][1])), i))
    return labels, out


@dataclass
class DetectionCounts:
    tp: int  # ground-truth polyps hit at least once
    fp: int  # predicted components whose centroid is outside every polyp
    fn: int  # ground-truth polyps never hit
    n_polyps: int
    n_detections: int


def match(pred: np.ndarray, gt: np.ndarray, min_area: int = 0) -> DetectionCounts:
    """Apply the centroid rule to one frame (bool masks of equal shape)."""
    gt_labels, gt_comps = components(gt, 0)
    _, dets = components(pred, min_area)
    hit: set[int] = set()
    fp = 0
    h, w = gt.shape
    for d in dets:
        cx = min(w - 1, max(0, int(round(d.centroid[0]))))
        cy = min(h - 1, max(0, int(round(d.centroid[1]))))
        lab = int(gt_labels[cy, cx])
        if lab:
            hit.add(lab)
        else:
            fp += 1
    n_polyps = len(gt_comps)
    return DetectionCounts(len(hit), fp, n_polyps - len(hit), n_polyps, len(dets))


def summarize(counts: list[DetectionCounts]) -> dict:
    return rates(sum(c.tp for c in counts), sum(c.fp for c in counts), sum(c.fn for c in counts), len(counts))


def rates(tp: int, fp: int, fn: int, frames: int) -> dict:
    """Recall, precision, F1 and false positives per frame from totals over `frames` frames."""
    rec = tp / (tp + fn) if tp + fn else float("nan")
    prec = tp / (tp + fp) if tp + fp else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if (prec + rec) > 0 else 0.0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "recall": rec,
        "precision": prec,
        "f1": f1,
        "fp_per_frame": fp / frames if frames else float("nan"),
        "frames": frames,
    }

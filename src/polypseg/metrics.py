"""Segmentation metrics from confusion counts, vectorised over the batch.

Counts first (tp, fp, fn, tn per image), then each metric is one line of the counts. Empty-mask rule:
an image whose ground truth is empty has no defined Dice/IoU; per-image means skip it (mask it out
with `has_target`) and such frames are reported on their own.
"""

from __future__ import annotations

import numpy as np
import torch


def confusion(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-image counts for bool/0-1 tensors of shape (B, ...): tp, fp, fn, tn as float64 (B,)."""
    p = pred.flatten(1).bool()
    t = target.flatten(1).bool()
    tp = (p & t).sum(1).double()
    fp = (p & ~t).sum(1).double()
    fn = (~p & t).sum(1).double()
    tn = (~p & ~t).sum(1).double()
    return tp, fp, fn, tn


def _div(a, b):
    return (
        a / b if not torch.is_tensor(b) else torch.where(b > 0, a / b.clamp(min=1e-12), torch.zeros_like(a))
    )


def dice(tp, fp, fn):
    return _div(2 * tp, 2 * tp + fp + fn)


def iou(tp, fp, fn):
    return _div(tp, tp + fp + fn)


def precision(tp, fp):
    return _div(tp, tp + fp)


def recall(tp, fn):
    return _div(tp, tp + fn)


def specificity(fp, tn):
    return _div(tn, tn + fp)


@torch.no_grad()
def batch_dice_iou(prob: torch.Tensor, target: torch.Tensor, threshold: float = 0.5):
    """(dice, iou, has_target) per image for probabilities and 0/1 targets of shape (B, 1, H, W)."""
    tp, fp, fn, _ = confusion(prob > threshold, target > 0.5)
    return dice(tp, fp, fn), iou(tp, fp, fn), (tp + fn) > 0


def threshold_sweep(prob: np.ndarray, gt: np.ndarray, n: int = 256) -> dict[str, np.ndarray]:
    """Dice and IoU at thresholds 0, 1/255, ..., 1 for one image (PraNet "mDice"/"mIoU" convention).

    The probability map is quantised to 0..255 (as the MATLAB toolbox reads 8-bit maps); a pixel is
    positive at threshold k/255 when its value >= k. Uses cumulative histograms: O(pixels + 256).
    """
    q = np.clip(np.round(prob.astype(np.float64) * 255), 0, 255).astype(np.int64).ravel()
    g = gt.astype(bool).ravel()
    pos_hist = np.bincount(q[g], minlength=256)
    neg_hist = np.bincount(q[~g], minlength=256)
    tp = pos_hist[::-1].cumsum()[::-1].astype(np.float64)  # tp[k] = #gt pixels with value >= k
    fp = neg_hist[::-1].cumsum()[::-1].astype(np.float64)
    fn = g.sum() - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        j = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), 0.0)
    idx = np.linspace(0, 255, n).round().astype(int)
    return {"thresholds": idx / 255.0, "dice": d[idx], "iou": j[idx]}


def grouped_bootstrap_ci(
    values, groups, reps: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean of `values` (per frame) when whole groups are resampled.

    Frames of one video sequence are alike, so resampling frames as if independent gives intervals that
    are too narrow; this resamples sequences with replacement (the cluster bootstrap) and takes the
    frame-weighted mean of each draw. scipy.stats.bootstrap resamples observations independently, hence
    this by hand. NaN values are left out; fewer than two groups give (nan, nan).
    """
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(groups, dtype=object)
    keep = ~np.isnan(v)
    v, g = v[keep], g[keep]
    labels, inverse = np.unique(g.astype(str), return_inverse=True)
    if len(labels) < 2:
        return float("nan"), float("nan")
    sums = np.bincount(inverse, weights=v, minlength=len(labels))
    counts = np.bincount(inverse, minlength=len(labels)).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, len(labels), size=(reps, len(labels)))
    means = sums[draws].sum(1) / counts[draws].sum(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)

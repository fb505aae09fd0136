"""BCE + soft Dice on every deep-supervision head, optionally weighted towards the polyp's boundary.

The boundary weighting is the "structure loss" of PraNet (Fan et al., MICCAI 2020) and its successors:
each pixel counts 1 + boundary_weight * |local mean of the mask - mask|, which is large only within a
window's reach of the edge, on both sides. PraNet uses weight 5 with a 31-pixel window at 352 px; the
window here scales with the input height (31/352 of it, odd, at least 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def boundary_weights(target: torch.Tensor, weight: float) -> torch.Tensor:
    """(B,1,H,W) per-pixel weights 1 + weight * |avg_pool(target) - target| (PraNet's, window ∝ H)."""
    k = max(3, round(31 * target.shape[-2] / 352) | 1)
    t = target.float()
    local = F.avg_pool2d(t, k, stride=1, padding=k // 2, count_include_pad=False)
    return 1 + weight * (local - t).abs()


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """1 - soft Dice per image, averaged over the batch; with weights, each pixel counts w times. (B,1,H,W)."""
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    if weights is not None:
        w = weights.flatten(1)
        inter = (w * p * t).sum(1)
        return (1 - (2 * inter + eps) / ((w * p).sum(1) + (w * t).sum(1) + eps)).mean()
    inter = (p * t).sum(1)
    return (1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def seg_loss(
    heads: list[torch.Tensor],
    target: torch.Tensor,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    head_weights: list[float] | None = None,
    boundary_weight: float = 0.0,
) -> torch.Tensor:
    """Weighted mean over heads of bce_weight * BCE + dice_weight * soft Dice (boundary-weighted if > 0)."""
    weights = (head_weights or [1.0] * len(heads))[-len(heads) :] if len(heads) > 1 else [1.0]
    pix = boundary_weights(target, boundary_weight) if boundary_weight > 0 else None
    total = 0.0
    for w, logits in zip(weights, heads):
        if pix is None:
            bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
        else:  # weighted mean per image, then over the batch
            bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
            bce = ((bce * pix).flatten(1).sum(1) / pix.flatten(1).sum(1)).mean()
        total = total + w * (bce_weight * bce + dice_weight * soft_dice_loss(logits, target, weights=pix))
    return total / sum(weights)

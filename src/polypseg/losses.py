"""BCE + soft Dice on every deep-supervision head."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image, averaged over the batch. Shapes (B, 1, H, W)."""
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    inter = (p * t).sum(1)
    return (1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def seg_loss(
    heads: list[torch.Tensor],
    target: torch.Tensor,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    head_weights: list[float] | None = None,
) -> torch.Tensor:
    """Weighted mean over heads of bce_weight * BCE + dice_weight * soft Dice."""
    weights = (head_weights or [1.0] * len(heads))[-len(heads) :] if len(heads) > 1 else [1.0]
    total = 0.0
    for w, logits in zip(weights, heads):
        bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
        total = total + w * (bce_weight * bce + dice_weight * soft_dice_loss(logits, target))
    return total / sum(weights)

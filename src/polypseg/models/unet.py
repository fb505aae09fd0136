"""U-Net (Ronneberger et al., MICCAI 2015) with the same VGG blocks as UNet++: the baseline every paper reports."""

from __future__ import annotations

import torch
from torch import nn

from polypseg.config import input_stride
from polypseg.models.blocks import BatchNorm2d, Normalize, Upsample2x, VGGBlock, cat_channels, filters


class UNet(nn.Module):
    """Plain U-Net: encoder x{i}_0, decoder x{D-k}_{k} (D = depth) with one skip per level, one head.

    Input: (B, 3, H, W) RGB in 0..255, H and W divisible by 2^depth (16 by default). Output: logits
    (B, num_classes, H, W).
    """

    def __init__(
        self,
        width: int = 32,
        num_classes: int = 1,
        norm_layer: type[nn.Module] = BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
        depth: int = 4,
    ):
        super().__init__()
        self.stride = input_stride("none", depth)[0]
        f = filters(width)
        kw = dict(norm_layer=norm_layer, act_layer=act_layer)
        self.deep_supervision = False
        self.prune = 0
        self.depth = depth
        self.normalize = Normalize()
        self.pool = nn.MaxPool2d(2)
        self.up = Upsample2x()
        for i in range(depth + 1):
            setattr(self, f"conv{i}_0", VGGBlock(f[i - 1] if i else 3, f[i], f[i], **kw))
        for i in reversed(range(depth)):  # x{i}_{depth-i}: named like the UNet++ node in its place
            setattr(self, f"conv{i}_{depth - i}", VGGBlock(f[i] + f[i + 1], f[i], f[i], **kw))
        self.final = nn.Conv2d(f[0], num_classes, 1)

    def forward(self, x: torch.Tensor, heads: bool = False):
        x = self.normalize(x)
        skips = [self.conv0_0(x)]
        for i in range(1, self.depth + 1):
            skips.append(getattr(self, f"conv{i}_0")(self.pool(skips[-1])))
        y = skips.pop()
        for i in reversed(range(self.depth)):
            y = getattr(self, f"conv{i}_{self.depth - i}")(cat_channels([skips[i], self.up(y)]))
        out = self.final(y)
        return [out] if heads else out

"""U-Net (Ronneberger et al., MICCAI 2015) with the same VGG blocks as UNet++: the baseline every paper reports."""

from __future__ import annotations

import torch
from torch import nn

from polypseg.models.blocks import Normalize, VGGBlock, filters


class UNet(nn.Module):
    """Plain U-Net: encoder x{i}_0, decoder x{3-k}_{k+1} with one skip per level, one head.

    Input: (B, 3, H, W) RGB in 0..255, H and W divisible by 16. Output: logits (B, num_classes, H, W).
    """

    def __init__(
        self,
        width: int = 32,
        num_classes: int = 1,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        f = filters(width)
        kw = dict(norm_layer=norm_layer, act_layer=act_layer)
        self.deep_supervision = False
        self.prune = 0
        self.normalize = Normalize()
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv0_0 = VGGBlock(3, f[0], f[0], **kw)
        self.conv1_0 = VGGBlock(f[0], f[1], f[1], **kw)
        self.conv2_0 = VGGBlock(f[1], f[2], f[2], **kw)
        self.conv3_0 = VGGBlock(f[2], f[3], f[3], **kw)
        self.conv4_0 = VGGBlock(f[3], f[4], f[4], **kw)
        self.conv3_1 = VGGBlock(f[3] + f[4], f[3], f[3], **kw)
        self.conv2_2 = VGGBlock(f[2] + f[3], f[2], f[2], **kw)
        self.conv1_3 = VGGBlock(f[1] + f[2], f[1], f[1], **kw)
        self.conv0_4 = VGGBlock(f[0] + f[1], f[0], f[0], **kw)
        self.final = nn.Conv2d(f[0], num_classes, 1)

    def forward(self, x: torch.Tensor, heads: bool = False):
        x = self.normalize(x)
        x0_0 = self.conv0_0(x)
        x1_0 = self.conv1_0(self.pool(x0_0))
        x2_0 = self.conv2_0(self.pool(x1_0))
        x3_0 = self.conv3_0(self.pool(x2_0))
        x4_0 = self.conv4_0(self.pool(x3_0))
        x3_1 = self.conv3_1(torch.cat([x3_0, self.up(x4_0)], 1))
        x2_2 = self.conv2_2(torch.cat([x2_0, self.up(x3_1)], 1))
        x1_3 = self.conv1_3(torch.cat([x1_0, self.up(x2_2)], 1))
        x0_4 = self.conv0_4(torch.cat([x0_0, self.up(x1_3)], 1))
        out = self.final(x0_4)
        return [out] if heads else out

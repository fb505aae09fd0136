"""UNet++ (Zhou et al., "UNet++: A Nested U-Net Architecture for Medical Image Segmentation", DLMIA 2018).

Nodes are named ``conv{i}_{j}`` / ``x{i}_{j}`` as in the paper: i is the depth (down-sampling level),
j the position along the nested skip pathway. Head L reads node x0_L and needs only the nodes with
i + j <= L, so pruning to head L really skips the rest of the network.
"""

from __future__ import annotations

import torch
from torch import nn

from polypseg.models.blocks import Normalize, VGGBlock, filters


class UNetPlusPlus(nn.Module):
    """UNet++ with VGG blocks, bilinear up-sampling and (optionally) 4 deep-supervision heads.

    Args:
        width: filters of the first level; levels have width * (1, 2, 4, 8, 16). 32 is the seed's network.
        num_classes: output channels (1 for polyp vs background).
        deep_supervision: four 1x1 heads on x0_1..x0_4 (else one head on x0_4).
        prune: 0 = "accurate" (mean of the heads' logits); 1..4 = "fast", run only the sub-network of head L.

    Input: (B, 3, H, W) RGB in 0..255, H and W divisible by 16. Output: logits (B, num_classes, H, W),
    or with ``heads=True`` the list of head logits (training).

    Example:
        >>> m = UNetPlusPlus(width=8)
        >>> m(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    def __init__(
        self,
        width: int = 32,
        num_classes: int = 1,
        deep_supervision: bool = True,
        prune: int = 0,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        f = filters(width)
        kw = dict(norm_layer=norm_layer, act_layer=act_layer)
        self.deep_supervision = deep_supervision
        self.prune = prune
        self.normalize = Normalize()
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)

        self.conv0_0 = VGGBlock(3, f[0], f[0], **kw)
        self.conv1_0 = VGGBlock(f[0], f[1], f[1], **kw)
        self.conv2_0 = VGGBlock(f[1], f[2], f[2], **kw)
        self.conv3_0 = VGGBlock(f[2], f[3], f[3], **kw)
        self.conv4_0 = VGGBlock(f[3], f[4], f[4], **kw)

        self.conv0_1 = VGGBlock(f[0] + f[1], f[0], f[0], **kw)
        self.conv1_1 = VGGBlock(f[1] + f[2], f[1], f[1], **kw)
        self.conv2_1 = VGGBlock(f[2] + f[3], f[2], f[2], **kw)
        self.conv3_1 = VGGBlock(f[3] + f[4], f[3], f[3], **kw)

        self.conv0_2 = VGGBlock(f[0] * 2 + f[1], f[0], f[0], **kw)
        self.conv1_2 = VGGBlock(f[1] * 2 + f[2], f[1], f[1], **kw)
        self.conv2_2 = VGGBlock(f[2] * 2 + f[3], f[2], f[2], **kw)

        self.conv0_3 = VGGBlock(f[0] * 3 + f[1], f[0], f[0], **kw)
        self.conv1_3 = VGGBlock(f[1] * 3 + f[2], f[1], f[1], **kw)

        self.conv0_4 = VGGBlock(f[0] * 4 + f[1], f[0], f[0], **kw)

        if deep_supervision:
            self.final1 = nn.Conv2d(f[0], num_classes, 1)
            self.final2 = nn.Conv2d(f[0], num_classes, 1)
            self.final3 = nn.Conv2d(f[0], num_classes, 1)
            self.final4 = nn.Conv2d(f[0], num_classes, 1)
        else:
            self.final = nn.Conv2d(f[0], num_classes, 1)

    def forward(self, x: torch.Tensor, heads: bool = False):
        prune = self.prune if (self.deep_supervision and not heads) else 0
        depth = prune or 4
        x = self.normalize(x)
        x0_0 = self.conv0_0(x)
        x1_0 = self.conv1_0(self.pool(x0_0))
        x0_1 = self.conv0_1(torch.cat([x0_0, self.up(x1_0)], 1))
        if depth == 1:
            return self.final1(x0_1)

        x2_0 = self.conv2_0(self.pool(x1_0))
        x1_1 = self.conv1_1(torch.cat([x1_0, self.up(x2_0)], 1))
        x0_2 = self.conv0_2(torch.cat([x0_0, x0_1, self.up(x1_1)], 1))
        if depth == 2:
            return self.final2(x0_2)

        x3_0 = self.conv3_0(self.pool(x2_0))
        x2_1 = self.conv2_1(torch.cat([x2_0, self.up(x3_0)], 1))
        x1_2 = self.conv1_2(torch.cat([x1_0, x1_1, self.up(x2_1)], 1))
        x0_3 = self.conv0_3(torch.cat([x0_0, x0_1, x0_2, self.up(x1_2)], 1))
        if depth == 3:
            return self.final3(x0_3)

        x4_0 = self.conv4_0(self.pool(x3_0))
        x3_1 = self.conv3_1(torch.cat([x3_0, self.up(x4_0)], 1))
        x2_2 = self.conv2_2(torch.cat([x2_0, x2_1, self.up(x3_1)], 1))
        x1_3 = self.conv1_3(torch.cat([x1_0, x1_1, x1_2, self.up(x2_2)], 1))
        x0_4 = self.conv0_4(torch.cat([x0_0, x0_1, x0_2, x0_3, self.up(x1_3)], 1))

        if not self.deep_supervision:
            out = self.final(x0_4)
            return [out] if heads else out
        outs = [self.final1(x0_1), self.final2(x0_2), self.final3(x0_3), self.final4(x0_4)]
        if heads:
            return outs
        if prune == 4:
            return outs[3]
        return (outs[0] + outs[1] + outs[2] + outs[3]) / 4

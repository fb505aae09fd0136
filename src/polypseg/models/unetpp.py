"""UNet++ (Zhou et al., "UNet++: A Nested U-Net Architecture for Medical Image Segmentation", DLMIA 2018).

Nodes are named ``conv{i}_{j}`` / ``x{i}_{j}`` as in the paper: i is the depth (down-sampling level),
j the position along the nested skip pathway. Head L reads node x0_L and needs only the nodes with
i + j <= L, so pruning to head L really skips the rest of the network.

With ``encoder="efficientnet-lite0"`` (or ``-lite1``, ``-lite2``) the backbone column x{i}_0 is an
ImageNet-pretrained EfficientNet-Lite (levels at strides 2..32) instead of VGG blocks with max-pooling; the
nested decoder is the same, one level coarser, and the heads' logits are up-sampled 2x (bilinear) to the
input's size.
"""

from __future__ import annotations

import torch
from torch import nn

from polypseg.config import INPUT_STRIDE
from polypseg.errors import PolypsegError
from polypseg.models.blocks import Normalize, VGGBlock, filters
from polypseg.models.efficientnet_lite import (
    LITE_MEAN,
    LITE_SCALES,
    LITE_STD,
    efficientnet_lite_levels,
    lite_channels,
)

ENCODERS = tuple(name for name in INPUT_STRIDE if name != "none")
# The backbone column x{i}_0: the pretrained encoder's levels when there is one (optim.encoder_lr)
ENCODER_LEVELS = ("conv0_0", "conv1_0", "conv2_0", "conv3_0", "conv4_0")


class UNetPlusPlus(nn.Module):
    """UNet++ with VGG blocks, bilinear up-sampling and (optionally) 4 deep-supervision heads.

    Args:
        width: filters of the first level; levels have width * (1, 2, 4, 8, 16). 32 is the seed's network.
        num_classes: output channels (1 for polyp vs background).
        deep_supervision: four 1x1 heads on x0_1..x0_4 (else one head on x0_4).
        prune: 0 = "accurate" (mean of the heads' logits); 1..4 = "fast", run only the sub-network of head L.
        encoder: None (VGG blocks, from scratch, the seed's network) or "efficientnet-lite0" (-lite1,
            -lite2); `width` then sets only the decoder's filters.
        encoder_weights: "imagenet" to start the encoder from its ImageNet weights, None for random (a
            checkpoint's weights are loaded over it anyway).

    Input: (B, 3, H, W) RGB in 0..255, H and W divisible by `stride` (16; 32 with an encoder). Output: logits
    (B, num_classes, H, W), or with ``heads=True`` the list of head logits (training).

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
        encoder: str | None = None,
        encoder_weights: str | None = None,
    ):
        super().__init__()
        kw = dict(norm_layer=norm_layer, act_layer=act_layer)
        self.deep_supervision = deep_supervision
        self.prune = prune
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        dec = filters(width)  # channels of the nested nodes x{i}_{j}, j >= 1
        if encoder is None:
            enc = dec
            self.normalize = Normalize()
            self.pool = nn.MaxPool2d(2)
            self.conv0_0 = VGGBlock(3, enc[0], enc[0], **kw)
            self.conv1_0 = VGGBlock(enc[0], enc[1], enc[1], **kw)
            self.conv2_0 = VGGBlock(enc[1], enc[2], enc[2], **kw)
            self.conv3_0 = VGGBlock(enc[2], enc[3], enc[3], **kw)
            self.conv4_0 = VGGBlock(enc[3], enc[4], enc[4], **kw)
            self.up_out = nn.Identity()
        elif encoder in LITE_SCALES:
            enc = lite_channels(encoder)
            self.normalize = Normalize(LITE_MEAN, LITE_STD)
            self.pool = nn.Identity()  # each level down-samples itself
            levels = efficientnet_lite_levels(encoder, encoder_weights)
            self.conv0_0, self.conv1_0, self.conv2_0, self.conv3_0, self.conv4_0 = levels
            self.up_out = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        else:
            raise PolypsegError(f"unknown encoder {encoder!r}; known: {', '.join(ENCODERS)}")
        self.stride = INPUT_STRIDE[encoder or "none"][0]

        def node(i: int, j: int) -> VGGBlock:
            """x{i}_{j}: reads x{i}_0, x{i}_1..x{i}_{j-1} and up(x{i+1}_{j-1})."""
            cin = enc[i] + (j - 1) * dec[i] + (enc[i + 1] if j == 1 else dec[i + 1])
            return VGGBlock(cin, dec[i], dec[i], **kw)

        self.conv0_1, self.conv1_1, self.conv2_1, self.conv3_1 = (node(i, 1) for i in range(4))
        self.conv0_2, self.conv1_2, self.conv2_2 = (node(i, 2) for i in range(3))
        self.conv0_3, self.conv1_3 = node(0, 3), node(1, 3)
        self.conv0_4 = node(0, 4)

        if deep_supervision:
            self.final1 = nn.Conv2d(dec[0], num_classes, 1)
            self.final2 = nn.Conv2d(dec[0], num_classes, 1)
            self.final3 = nn.Conv2d(dec[0], num_classes, 1)
            self.final4 = nn.Conv2d(dec[0], num_classes, 1)
        else:
            self.final = nn.Conv2d(dec[0], num_classes, 1)

    def forward(self, x: torch.Tensor, heads: bool = False):
        prune = self.prune if (self.deep_supervision and not heads) else 0
        depth = prune or 4
        x = self.normalize(x)
        x0_0 = self.conv0_0(x)
        x1_0 = self.conv1_0(self.pool(x0_0))
        x0_1 = self.conv0_1(torch.cat([x0_0, self.up(x1_0)], 1))
        if depth == 1:
            return self.up_out(self.final1(x0_1))

        x2_0 = self.conv2_0(self.pool(x1_0))
        x1_1 = self.conv1_1(torch.cat([x1_0, self.up(x2_0)], 1))
        x0_2 = self.conv0_2(torch.cat([x0_0, x0_1, self.up(x1_1)], 1))
        if depth == 2:
            return self.up_out(self.final2(x0_2))

        x3_0 = self.conv3_0(self.pool(x2_0))
        x2_1 = self.conv2_1(torch.cat([x2_0, self.up(x3_0)], 1))
        x1_2 = self.conv1_2(torch.cat([x1_0, x1_1, self.up(x2_1)], 1))
        x0_3 = self.conv0_3(torch.cat([x0_0, x0_1, x0_2, self.up(x1_2)], 1))
        if depth == 3:
            return self.up_out(self.final3(x0_3))

        x4_0 = self.conv4_0(self.pool(x3_0))
        x3_1 = self.conv3_1(torch.cat([x3_0, self.up(x4_0)], 1))
        x2_2 = self.conv2_2(torch.cat([x2_0, x2_1, self.up(x3_1)], 1))
        x1_3 = self.conv1_3(torch.cat([x1_0, x1_1, x1_2, self.up(x2_2)], 1))
        x0_4 = self.conv0_4(torch.cat([x0_0, x0_1, x0_2, x0_3, self.up(x1_3)], 1))

        if not self.deep_supervision:
            out = self.up_out(self.final(x0_4))
            return [out] if heads else out
        outs = [self.final1(x0_1), self.final2(x0_2), self.final3(x0_3), self.final4(x0_4)]
        outs = [self.up_out(o) for o in outs]
        if heads:
            return outs
        if prune == 4:
            return outs[3]
        return (outs[0] + outs[1] + outs[2] + outs[3]) / 4

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

from polypseg.config import ENCODERS, input_stride
from polypseg.errors import PolypsegError
from polypseg.models.blocks import BatchNorm2d, Normalize, Upsample2x, VGGBlock, cat_channels, filters
from polypseg.models.efficientnet_lite import (
    LITE_MEAN,
    LITE_SCALES,
    LITE_STD,
    efficientnet_lite_levels,
    lite_channels,
)

# The backbone column x{i}_0: the pretrained encoder's levels when there is one (optim.encoder_lr)
ENCODER_LEVELS = ("conv0_0", "conv1_0", "conv2_0", "conv3_0", "conv4_0")


class UNetPlusPlus(nn.Module):
    """UNet++ with VGG blocks, bilinear up-sampling and (optionally) deep-supervision heads, one per level.

    Args:
        width: filters of the first level; levels have width * (1, 2, 4, 8, 16). 32 is the seed's network.
        num_classes: output channels (1 for polyp vs background).
        deep_supervision: a 1x1 head on each of x0_1..x0_depth (else one head on x0_depth).
        prune: 0 = "accurate" (mean of the heads' logits); 1..depth = "fast", run only the sub-network of
            head L.
        depth: down-sampling levels below the first, 1..4 (4 is the seed's and the paper's network; depth D
            is the paper's UNet++ L_D trained on its own, with D heads and inputs divisible by 2^D).
        encoder: None (VGG blocks, from scratch, the seed's network) or "efficientnet-lite0" (-lite1,
            -lite2); `width` then sets only the decoder's filters.
        encoder_weights: "imagenet" to start the encoder from its ImageNet weights, None for random (a
            checkpoint's weights are loaded over it anyway).

    Input: (B, 3, H, W) RGB in 0..255, H and W divisible by `stride` (2^depth, 16 by default; twice that with
    an encoder). Output: logits (B, num_classes, H, W), or with ``heads=True`` the list of head logits
    (training).

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
        norm_layer: type[nn.Module] = BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
        encoder: str | None = None,
        encoder_weights: str | None = None,
        depth: int = 4,
    ):
        super().__init__()
        self.stride = input_stride(encoder or "none", depth)[0]
        kw = dict(norm_layer=norm_layer, act_layer=act_layer)
        self.deep_supervision = deep_supervision
        self.prune = prune
        self.depth = depth
        self.up = Upsample2x()
        dec = filters(width)  # channels of the nested nodes x{i}_{j}, j >= 1
        if encoder is None:
            enc = dec
            self.normalize = Normalize()
            self.pool = nn.MaxPool2d(2)
            cin = 3
            for i in range(depth + 1):  # the backbone column x{i}_0
                setattr(self, f"conv{i}_0", VGGBlock(cin, enc[i], enc[i], **kw))
                cin = enc[i]
            self.up_out = nn.Identity()
        elif encoder in LITE_SCALES:
            enc = lite_channels(encoder)
            self.normalize = Normalize(LITE_MEAN, LITE_STD)
            self.pool = nn.Identity()  # each level down-samples itself
            levels = efficientnet_lite_levels(encoder, encoder_weights)
            for i in range(depth + 1):
                setattr(self, f"conv{i}_0", levels[i])
            self.up_out = Upsample2x()
        else:
            raise PolypsegError(f"unknown encoder {encoder!r}; known: {', '.join(ENCODERS)}")

        # x{i}_{j} reads x{i}_0, x{i}_1..x{i}_{j-1} and up(x{i+1}_{j-1}); created column by column, as the
        # seed's network was, so a seed gives the same initial weights.
        for j in range(1, depth + 1):
            for i in range(depth + 1 - j):
                cin = enc[i] + (j - 1) * dec[i] + (enc[i + 1] if j == 1 else dec[i + 1])
                setattr(self, f"conv{i}_{j}", VGGBlock(cin, dec[i], dec[i], **kw))

        if deep_supervision:
            for level in range(1, depth + 1):
                setattr(self, f"final{level}", nn.Conv2d(dec[0], num_classes, 1))
        else:
            self.final = nn.Conv2d(dec[0], num_classes, 1)

    def forward(self, x: torch.Tensor, heads: bool = False):
        prune = self.prune if (self.deep_supervision and not heads) else 0
        last = prune or self.depth  # head L needs only the nodes x{i}_{j} with i + j <= L
        x = self.normalize(x)
        col = [[self.conv0_0(x)]]  # col[i]: the nodes x{i}_0, x{i}_1, ... computed so far
        for level in range(1, last + 1):
            # one anti-diagonal: x{level}_0, then x{level-1}_1 ... x0_{level}
            col.append([getattr(self, f"conv{level}_0")(self.pool(col[level - 1][0]))])
            for j in range(1, level + 1):
                i = level - j
                col[i].append(
                    getattr(self, f"conv{i}_{j}")(cat_channels([*col[i], self.up(col[i + 1][j - 1])]))
                )
        # The heads after every node, in the seed network's order: the same order of operations, so
        # the backward pass sums gradients in the same order and a seed still gives the same weights.
        if not self.deep_supervision:
            out = self.up_out(self.final(col[0][last]))
            return [out] if heads else out
        if prune:
            return self.up_out(getattr(self, f"final{prune}")(col[0][prune]))
        outs = [self.up_out(getattr(self, f"final{level}")(col[0][level])) for level in range(1, last + 1)]
        return outs if heads else sum(outs[1:], outs[0]) / len(outs)

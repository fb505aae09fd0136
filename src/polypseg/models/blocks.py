"""Building blocks shared by UNet++ and U-Net."""

from __future__ import annotations

import torch
from torch import nn

# Inputs are RGB in 0..255; the network normalises inside itself so that every caller
# (training, prediction, ONNX, the web service) feeds the same thing.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _strictly_channels_last(t: torch.Tensor) -> bool:
    """A 4-d map laid out channels_last and not also NCHW (as a 1x1 map or a single channel would be)."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


class BatchNorm2d(nn.BatchNorm2d):
    """torch's BatchNorm2d, with one detour for CPU training of narrow networks.

    PyTorch's CPU kernels for channels_last batch norm vectorise across channels; with 8 channels or
    fewer (UNet++ width 8's full-resolution nodes, the `fast` preset) forward and backward ran ~2x
    slower than the NCHW kernels plus a layout copy each way, and made a quarter of the training step
    (benchmarks/NOTES.md 64). There, and only there, the map goes through NCHW; results, parameters and
    state dict are torch's own.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.device.type == "cpu" and x.shape[1] <= 8 and _strictly_channels_last(x):
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        return super().forward(x)


class _CatChannelsLast(torch.autograd.Function):
    """torch.cat along channels whose backward hands each input a channels_last gradient, not a slice."""

    @staticmethod
    def forward(ctx, *tensors: torch.Tensor) -> torch.Tensor:
        ctx.sizes = [t.shape[1] for t in tensors]
        return torch.cat(tensors, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return tuple(g.contiguous(memory_format=torch.channels_last) for g in grad.split(ctx.sizes, 1))


# Where cat_channels hands back channels_last gradients: the CPU. On an H200 the copies made the step
# slower (386.7 against 396.3 img/s, benchmarks/train_throughput.py's `cat-grad`; NOTES 69), and CUDA
# training's up-sampling now reads the gradient slices as they are.
CAT_GRAD_DEVICES = {"cpu"}


def cat_channels(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat(tensors, 1); in CPU training on channels_last maps, with contiguous gradients.

    cat's own backward gives each input a channel slice of the output's gradient, which in channels_last
    is strided; PyTorch's CPU bilinear up-sampling backward then runs ~3x slower than on a contiguous
    gradient (benchmarks/NOTES.md 66), and the nodes' batch norm and ReLU backward read strided maps too.
    One copy per input restores the layout. The values are cat's own.
    """
    t = tensors[0]
    if (
        t.device.type in CAT_GRAD_DEVICES
        and torch.is_grad_enabled()
        and any(x.requires_grad for x in tensors)
        and _strictly_channels_last(t)
    ):
        return _CatChannelsLast.apply(*tensors)
    return torch.cat(tensors, 1)


class Upsample2x(nn.Module):
    """Bilinear up-sampling by 2 with align_corners=True (the seed's), as nn.Upsample does it; in CUDA
    training as two matrix products (upsample2x_matmul), the same interpolation.

    On an H200, PyTorch's bilinear kernels and the layout copies their backward makes of the gradient
    slices that `cat` hands back took 14 of the 39.6 ms of a 256x256 training step; the products take 1.1
    (benchmarks/NOTES.md 69). Their backward is two more products, where PyTorch's adds into the gradient
    with atomics in an order that changes from run to run (it has no deterministic version: under
    `deterministic: true` it raises), so the products also make deterministic training possible. On the
    CPU they were no faster, and inference and ONNX export keep the one bilinear operator.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and x.device.type in UPSAMPLE_MATMUL_DEVICES:
            return upsample2x_matmul(x)
        return nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


# Where training up-samples with matrix products: measured on an H200 (NOTES 69); on the CPU they ran at
# 0.94 of PyTorch's kernels. benchmarks/train_throughput.py's `up-mm` and `torch-up` variants switch it.
UPSAMPLE_MATMUL_DEVICES = {"cuda"}
_MATRICES: dict[tuple, torch.Tensor] = {}


def _interp_matrix(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(2n, n) matrix of align_corners=True linear interpolation from n to 2n samples: row k holds the
    weights of the two inputs around position k * (n - 1) / (2n - 1). Computed in float64, then cast;
    kept per size, device and type (built before a CUDA graph's capture, in the warm-up steps)."""
    key = (n, device, dtype)
    if key in _MATRICES:
        return _MATRICES[key]
    pos = torch.arange(2 * n, dtype=torch.float64) * ((n - 1) / max(2 * n - 1, 1))
    lo = pos.floor().long().clamp_(max=n - 1)
    hi = (lo + 1).clamp_(max=n - 1)
    w = pos - lo
    m = torch.zeros(2 * n, n, dtype=torch.float64)
    rows = torch.arange(2 * n)
    m.index_put_((rows, lo), 1 - w, accumulate=True)
    m.index_put_((rows, hi), w, accumulate=True)
    m = m.to(device=device, dtype=dtype)
    if not torch.compiler.is_compiling():  # under torch.compile the matrix is traced as a constant
        _MATRICES[key] = m
    return m


def upsample2x_matmul(x: torch.Tensor) -> torch.Tensor:
    """F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True) of an (N, C, H, W) map as two
    matrix products, height then width; their backward is two more, with no atomics.

    The interpolation matrices hold two non-zeros a row, so the products do ~n/2 times the arithmetic a
    bilinear kernel does; on tensor cores that is still cheap next to the convolutions. For a channels_last
    map both products run on its own layout ((N, H, W*C) and (N*2H, W, C) views, a gradient slice of `cat`
    included) and the result and its gradient are channels_last again. In bf16 the weights are rounded to
    bf16 and the height pass is rounded before the width pass: ~2^-8 relative, bf16's own rounding (in
    fp32 CUDA training the products run in TF32, as the convolutions do).
    """
    n, c, h, w = x.shape
    a_h, a_w = _interp_matrix(h, x.device, x.dtype), _interp_matrix(w, x.device, x.dtype)
    if _strictly_channels_last(x):
        y = torch.matmul(a_h, x.permute(0, 2, 3, 1).reshape(n, h, w * c))  # (N, 2H, W*C)
        y = torch.matmul(a_w, y.reshape(n * 2 * h, w, c))  # (N*2H, 2W, C)
        return y.view(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)
    y = torch.matmul(a_h, x.reshape(n * c, h, w))  # (N*C, 2H, W)
    return torch.matmul(y, a_w.t()).view(n, c, 2 * h, 2 * w)


class VGGBlock(nn.Sequential):
    """(conv3x3 -> norm -> act) x 2, as in the UNet++ paper's nodes."""

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        norm_layer: type[nn.Module] = BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
    ):
        super().__init__(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False),
            norm_layer(mid_channels),
            act_layer(inplace=True),
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
            norm_layer(out_channels),
            act_layer(inplace=True),
        )


class Normalize(nn.Module):
    """(B, 3, H, W) RGB in 0..255 (any dtype) -> float, ImageNet-normalised."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.mean.dtype) - self.mean) / self.std


def filters(width: int) -> list[int]:
    return [width, width * 2, width * 4, width * 8, width * 16]

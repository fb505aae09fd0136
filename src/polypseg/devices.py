"""Choosing a device and naming it (every measured number carries the device's name)."""

from __future__ import annotations

import contextlib
import os
import platform

import torch

from polypseg.errors import PolypsegError


def pick_device(device: str = "auto") -> torch.device:
    """The torch.device for `auto`, `cpu`, `cuda` or `cuda:N` if it exists here, else a one-line error.

    Only the CPU and CUDA are tested; other PyTorch backends are refused by name rather than half-run."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = parse_device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PolypsegError("CUDA was asked for but no GPU is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PolypsegError(
                f"{device}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    return dev


def parse_device(device: str) -> torch.device:
    """`cpu`, `cuda` or `cuda:N` as a torch.device, whether or not it is here; anything else a one-line error."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index):
        raise PolypsegError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    return dev


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere oneDNN emulates it."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def _is_depthwise(m: torch.nn.Module) -> bool:
    return isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


def has_depthwise_conv(model: torch.nn.Module) -> bool:
    return any(_is_depthwise(m) for m in model.modules())


def depthwise_share(model: torch.nn.Module) -> float:
    """The share of the network's convolution multiply-adds done by depthwise convolutions (one 64x64 input
    in eval mode, so batch-norm statistics are untouched; the share barely depends on the input size)."""
    macs = {True: 0, False: 0}

    def count(m, _, out):
        macs[_is_depthwise(m)] += (
            out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        )

    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [m.register_forward_hook(count) for m in convs]
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, 3, 64, 64, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return macs[True] / max(1, macs[True] + macs[False])


# bf16 on a CPU pays off where dense convolutions dominate. UNet++ on EfficientNet-Lite0, 2 Intel Xeon cores
# with AMX (benchmarks/NOTES.md 62, benchmarks/cpu_bf16.py): decoder width 8 (depthwise 4.2% of the
# multiply-adds) ran inference 10-12% slower in bf16, width 16 (2.0%) level (fp32 kept), width 32 (0.7%)
# 1.1-1.7x faster, inference and training alike.
DEPTHWISE_SHARE_MAX = 0.015


def use_bf16(device: torch.device, model: torch.nn.Module) -> bool:
    """Whether bf16 autocast makes this model's training step (and inference) faster on this device.

    CUDA: always. CPU: where the CPU has native bf16 and depthwise convolutions do under
    DEPTHWISE_SHARE_MAX of the network's multiply-adds: the VGG UNet++ trains 1.4-1.9x faster in bf16
    (NOTES 36), and so does the EfficientNet-Lite encoder under a wide decoder, while under a narrow one
    its depthwise convolutions and many small ops make bf16 slower than fp32 (NOTES 62).
    """
    if device.type == "cuda":
        return True
    if device.type != "cpu" or not native_bf16_cpu():
        return False
    return not has_depthwise_conv(model) or depthwise_share(model) < DEPTHWISE_SHARE_MAX


@contextlib.contextmanager
def deterministic_kernels(enabled: bool = True):
    """Within the block, torch.use_deterministic_algorithms and cuDNN's deterministic algorithms, chosen
    by its heuristics rather than timed (timing can pick another algorithm in another run); restored
    afterwards. cuBLAS needs a fixed workspace for deterministic sums (CUBLAS_WORKSPACE_CONFIG, read
    when it first runs). An op with no deterministic kernel then raises instead of varying; the
    networks' one such op, bilinear up-sampling's CUDA backward, is not used in CUDA training
    (models.blocks.Upsample2x multiplies by matrices there)."""
    if not enabled:
        yield
        return
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def environment(device: torch.device) -> dict:
    """What a run ran on, for repeating it: package versions, Python, the platform, the device and, on
    CUDA, the CUDA and cuDNN versions (another cuDNN may pick other kernels, and other rounding)."""
    import numpy

    from polypseg import __version__

    env = {
        "polypseg": __version__,
        "torch": str(torch.__version__),  # a TorchVersion, which torch.load(weights_only=True) refuses
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device_name(device),
    }
    if device.type == "cuda":
        env.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return env

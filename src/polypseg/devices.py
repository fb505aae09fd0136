"""Choosing a device and naming it (every measured number carries the device's name)."""

from __future__ import annotations

import platform

import torch

from polypseg.errors import PolypsegError


def pick_device(device: str = "auto") -> torch.device:
    """The torch.device for `auto`, `cpu`, `cuda` or `cuda:N` if it exists here, else a one-line error.

    Only the CPU and CUDA are tested; other PyTorch backends are refused by name rather than half-run."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index):
        raise PolypsegError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PolypsegError("CUDA was asked for but no GPU is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PolypsegError(
                f"{device}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    return dev


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere oneDNN emulates it."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def has_depthwise_conv(model: torch.nn.Module) -> bool:
    return any(
        isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels for m in model.modules()
    )


def use_bf16(device: torch.device, model: torch.nn.Module) -> bool:
    """Whether bf16 autocast makes this model's training step faster on this device.

    CUDA: always. CPU: where the CPU has native bf16 and the network has no depthwise convolutions. On
    2 AMD EPYC cores with AVX512-BF16 (benchmarks/NOTES.md 36) the VGG UNet++ trains 1.4-1.9x faster in
    bf16, while the EfficientNet-Lite encoder's depthwise convolutions make it slower than fp32.
    """
    if device.type == "cuda":
        return True
    return device.type == "cpu" and native_bf16_cpu() and not has_depthwise_conv(model)

"""DDP through torchrun: detect RANK in the environment, gate all I/O on rank 0 (nanoGPT's ~15 lines)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from polypseg.devices import pick_device


@dataclass
class DistInfo:
    enabled: bool
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device_pref: str) -> tuple[DistInfo, torch.device]:
    """Initialise the process group when launched by torchrun; choose this process's device."""
    device = pick_device(device_pref)  # an unknown or absent device is a one-line error here
    if "RANK" not in os.environ:
        return DistInfo(False), device
    info = DistInfo(
        True, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"])
    )
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return info, device


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()

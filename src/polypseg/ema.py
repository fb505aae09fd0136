"""Exponential moving average of a model's weights, updated on the device without waiting for it.

torch.optim.swa_utils.AveragedModel does the same arithmetic, but every update reads its step counter
(`n_averaged`, a CPU tensor) and copies it to the GPU with a blocking copy: the host then waits for the
step just queued to finish before it may queue the next, which matters when small inputs make the
host's kernel launches the limit. This class keeps the counter as a Python int and updates every
floating parameter and buffer with one foreach lerp. Its `state_dict` has AveragedModel's layout
(`module.` keys and `n_averaged`), so checkpoints written with either load into both.
"""

from __future__ import annotations

import copy

import torch


class WeightEMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        """EMA of `model` (parameters and buffers) with `decay` per update; `module` holds the average."""
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.decay = decay
        self.updates = 0
        self._paired: tuple | None = None  # (model, ema floats, model floats, ema others, model others)

    def _pairs(self, model: torch.nn.Module):
        if self._paired is None or self._paired[0] is not model:
            ours = [*self.module.parameters(), *self.module.buffers()]
            theirs = [t.detach() for t in (*model.parameters(), *model.buffers())]
            pairs = list(zip(ours, theirs, strict=True))
            floats = [p for p in pairs if p[0].is_floating_point()]
            other = [p for p in pairs if not p[0].is_floating_point()]
            self._paired = (
                model,
                [a for a, _ in floats],
                [b for _, b in floats],
                [a for a, _ in other],
                [b for _, b in other],
            )
        return self._paired[1:]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """The first update copies the weights, every later one moves the average towards them."""
        ema, cur, ema_counts, counts = self._pairs(model)
        if self.updates == 0:
            torch._foreach_copy_(ema, cur)
        else:
            torch._foreach_lerp_(ema, cur, 1.0 - self.decay)
        # Counters such as BatchNorm's num_batches_tracked are not averaged: they follow the model.
        if counts:
            torch._foreach_copy_(ema_counts, counts)
        self.updates += 1

    def state_dict(self) -> dict:
        state = {f"module.{k}": v for k, v in self.module.state_dict().items()}
        state["n_averaged"] = torch.tensor(self.updates, dtype=torch.long)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(
            {k[len("module.") :]: v for k, v in state.items() if k.startswith("module.")}
        )
        self.updates = int(state["n_averaged"])

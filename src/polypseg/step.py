"""One optimisation step, eager or replayed from a CUDA graph; the training loop and the throughput
benchmark both use it, so the benchmark times the step the loop runs.

A step is: forward on every head (bf16 autocast on CUDA), loss, backward, gradient clipping, optimiser
step. It returns the loss as a device tensor, so the caller decides when to sync with the host.

With `cuda_graph=True` the first `warmup` steps run eagerly on a side stream (cuDNN autotuning, the
optimiser's state), the next one is captured once, and every later step copies its batch into the
graph's static inputs and replays the whole step as one launch: no Python, no per-kernel launch cost.
That needs fixed shapes (the loop drops the last partial batch) and a `capturable` optimiser
(`make_optimizer`); its learning rate becomes a device tensor at capture, so the schedule still moves
inside the graph. Every call is one optimiser step on the batch it was given, as in eager mode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def make_optimizer(
    params, lr: float, weight_decay: float, device: torch.device, cuda_graph: bool = False
) -> torch.optim.AdamW:
    """AdamW, fused on CUDA, `capturable` when the step will be captured in a CUDA graph."""
    cuda = device.type == "cuda"
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=cuda, capturable=cuda_graph)


def optimizer_state(opt: torch.optim.Optimizer) -> dict:
    """opt.state_dict() with plain-float learning rates (see `plain_floats`)."""
    state = opt.state_dict()
    return {**state, "param_groups": plain_floats(state["param_groups"])}


def plain_floats(state):
    """`state` with its 0-d float tensors (a captured step's learning rate) as Python floats, so that a
    checkpoint loads into an eager or CPU run. For an optimiser's param_groups and a scheduler's state;
    not for the optimiser's per-parameter state, whose `step` counters must stay tensors."""
    if isinstance(state, dict):
        return {k: plain_floats(v) for k, v in state.items()}
    if isinstance(state, list):
        return [plain_floats(v) for v in state]
    if isinstance(state, torch.Tensor) and state.ndim == 0 and state.is_floating_point():
        return state.item()
    return state


class TrainStep:
    def __init__(
        self,
        model: torch.nn.Module,
        opt: torch.optim.Optimizer,
        loss_fn: Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor],
        amp: bool,
        grad_clip: float,
        net: torch.nn.Module | None = None,
        cuda_graph: bool = False,
        warmup: int = 3,
    ):
        """`model` owns the parameters (clipped); `net` is what runs the forward (DDP or compiled wrapper)."""
        self.net, self.opt, self.loss_fn = net if net is not None else model, opt, loss_fn
        self.amp, self.grad_clip, self.cuda_graph, self.warmup = amp, grad_clip, cuda_graph, warmup
        self.params = list(model.parameters())
        if cuda_graph and self.params[0].device.type != "cuda":
            raise ValueError("a CUDA-graph step needs the model on a CUDA device")
        self.graph: torch.cuda.CUDAGraph | None = None
        self.calls = 0

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # The autocast weight cache cannot outlive a graph capture, so it is off for graphs.
        with torch.autocast(
            x.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=not self.cuda_graph
        ):
            heads = self.net(x, heads=True)
        loss = self.loss_fn(heads, y)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.opt.step()
        return loss.detach()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step on (x, y); returns the loss on the device (with a graph: valid until the next call)."""
        if not self.cuda_graph:
            self.opt.zero_grad(set_to_none=True)
            return self._step(x, y)
        if self.graph is None and self.calls < self.warmup:
            self.calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.opt.zero_grad(set_to_none=True)
                loss = self._step(x, y)
            torch.cuda.current_stream().wait_stream(side)
            return loss
        if self.graph is None:
            self.x, self.y = x.clone(), y.clone()  # static inputs, same memory format as the batch
            # A float learning rate would be frozen into the graph; a device tensor is read at every
            # replay, and LR schedulers fill it in place. Converted here, after the scheduler and any
            # resumed state have set their floats.
            for g in self.opt.param_groups:
                g["lr"] = torch.tensor(float(g["lr"]), device=x.device)
            # Gradients are created inside the capture, in the graph's memory pool; every replay
            # overwrites them, so there is no zero_grad after this.
            self.opt.zero_grad(set_to_none=True)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = self._step(self.x, self.y)
        else:
            self.x.copy_(x)
            self.y.copy_(y)
        self.graph.replay()  # the capture itself ran nothing: this replay is the step on this batch
        return self.loss

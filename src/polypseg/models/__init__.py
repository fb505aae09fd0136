"""Model registry: a plain dict from name to constructor."""

from __future__ import annotations

from torch import nn

from polypseg.config import NUMBER_WORDS
from polypseg.errors import PolypsegError
from polypseg.models.unet import UNet
from polypseg.models.unetpp import UNetPlusPlus

MODELS: dict[str, type[nn.Module]] = {"unetpp": UNetPlusPlus, "unet": UNet}


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a model by name, e.g. ``create_model("unetpp", width=32, deep_supervision=True)``.

    Keyword arguments set to None are dropped, so callers can pass optional settings through.
    """
    if name not in MODELS:
        raise PolypsegError(f"unknown architecture {name!r}; known: {', '.join(MODELS)}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return MODELS[name](**kwargs)
    except TypeError as e:
        raise PolypsegError(f"bad arguments for {name}: {e}") from None


def set_head(model: nn.Module, head: int | None = None) -> nn.Module:
    """Choose a deep-supervised UNet++'s inference output: None = the deepest head (L4 at the default
    depth; it matched or beat the mean of the four heads on every model measured, benchmarks/NOTES.md 21,
    28, 29), 0 = the mean of the heads (the UNet++ paper's "accurate" mode), 1..depth = only that head's
    sub-network. Training, which asks for every head, is unaffected. Other models have one output: an
    explicit head is an error."""
    if not getattr(model, "deep_supervision", False):
        if head:
            raise PolypsegError(
                f"--prune needs a deep-supervision UNet++; this model is {type(model).__name__}"
            )
        return model
    depth = model.depth
    head = depth if head is None else head
    if not 0 <= head <= depth:
        raise PolypsegError(
            f"--prune takes 1..{depth} for this model (0 = the mean of the heads), got {head}"
        )
    model.prune = head
    return model


def head_name(prune: int, deep_supervision: bool, depth: int = 4) -> str:
    """How a model's output is formed, in words, for reports: 'head L4', 'mean of the four heads'..."""
    if not deep_supervision:
        return "single head"
    return f"head L{prune}" if prune else f"mean of the {NUMBER_WORDS[depth]} heads"


def count_parameters(model: nn.Module) -> int:
    """Parameters the model's forward uses: a pruned UNet++ counts only its head's sub-network."""
    prune = getattr(model, "prune", 0)
    if not prune:
        return sum(p.numel() for p in model.parameters())

    def used(name: str) -> bool:
        node = name.split(".")[0]
        if node.startswith("conv") and "_" in node:
            i, j = node[4:].split("_")
            return int(i) + int(j) <= prune
        return node == f"final{prune}"

    return sum(p.numel() for n, p in model.named_parameters() if used(n))


__all__ = [
    "MODELS",
    "UNet",
    "UNetPlusPlus",
    "count_parameters",
    "create_model",
    "head_name",
    "set_head",
]

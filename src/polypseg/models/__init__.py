"""Model registry: a plain dict from name to constructor."""

from __future__ import annotations

from torch import nn

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


__all__ = ["MODELS", "UNet", "UNetPlusPlus", "count_parameters", "create_model"]

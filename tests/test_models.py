"""Models over the registry: parameter counts, shapes, and that pruning really is the head's sub-network."""

from __future__ import annotations

import pytest
import torch

from polypseg.errors import PolypsegError
from polypseg.models import MODELS, count_parameters, create_model


def test_parameter_counts_pinned():
    assert count_parameters(create_model("unetpp", width=32)) == 9_159_780  # the seed's network, ~9.16M
    assert count_parameters(create_model("unet", width=32)) == 7_849_601


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shapes(name):
    m = create_model(name, width=4).eval()
    x = torch.randint(0, 256, (2, 3, 48, 64), dtype=torch.uint8)
    assert m(x).shape == (2, 1, 48, 64)
    assert all(h.shape == (2, 1, 48, 64) for h in m(x, heads=True))


def test_accurate_is_mean_of_heads_and_prune_matches_each_head():
    torch.manual_seed(0)
    m = create_model("unetpp", width=4).eval()
    x = torch.rand(1, 3, 32, 48) * 255
    with torch.no_grad():
        heads = m(x, heads=True)
        assert len(heads) == 4
        assert torch.allclose(m(x), torch.stack(heads).mean(0), atol=1e-6)
        for level in range(1, 5):
            m.prune = level
            assert torch.allclose(m(x), heads[level - 1], atol=1e-6)


def test_prune_skips_work():
    from torch.utils.flop_counter import FlopCounterMode

    m = create_model("unetpp", width=8).eval()
    x = torch.rand(1, 3, 64, 64)
    flops = []
    for level in (1, 2, 3, 4):
        m.prune = level
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            m(x)
        flops.append(fc.get_total_flops())
    assert flops == sorted(flops) and flops[0] < flops[3] / 4


def test_unknown_model_and_bad_kwargs():
    with pytest.raises(PolypsegError, match="unknown architecture"):
        create_model("segformer")
    with pytest.raises(PolypsegError, match="bad arguments"):
        create_model("unet", deep_supervision=True)

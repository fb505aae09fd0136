"""The training loss on real masks: the boundary weighting (PraNet's structure loss) weights a band
around the polyp's edge and nothing else, and its weighted BCE and Dice are the plain ones when the
weights are flat."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.conftest import real_batch

from polypseg.config import load_config
from polypseg.errors import PolypsegError
from polypseg.losses import boundary_weights, seg_loss, soft_dice_loss


@pytest.fixture(scope="module")
def masks(cvc):
    _, y = real_batch(cvc, (1, 30, 200), 64, 80)
    return y.float()


def test_boundary_weights_mark_a_band_on_both_sides_of_the_edge(masks):
    w = boundary_weights(masks, 5.0)
    k = 7  # 31/352 of 64 rows, odd
    # The edge: pixels whose 3x3 neighbourhood holds both classes.
    edge = F.max_pool2d(masks, 3, 1, 1) != -F.max_pool2d(-masks, 3, 1, 1)
    assert edge.any()
    assert (w[edge] > 1).all()  # every edge pixel, inside or outside, is weighted up
    assert (w >= 1).all() and (w <= 1 + 5.0).all()
    # Farther from both classes than the window reaches, a pixel keeps weight 1 (inside and outside).
    mixed = F.max_pool2d(masks, k, 1, k // 2) != -F.max_pool2d(-masks, k, 1, k // 2)
    assert (~mixed).any() and torch.equal(w[~mixed], torch.ones_like(w[~mixed]))
    assert (masks[~mixed] == 1).any() and (masks[~mixed] == 0).any()


def test_flat_weights_give_the_plain_loss_and_edge_errors_cost_more(masks):
    g = torch.Generator().manual_seed(0)
    heads = [torch.randn(masks.shape, generator=g) for _ in range(4)]
    plain = seg_loss(heads, masks, head_weights=[1, 2, 3, 4])
    tiny = seg_loss(heads, masks, head_weights=[1, 2, 3, 4], boundary_weight=1e-9)
    assert abs(float(plain) - float(tiny)) < 1e-6
    ones = torch.ones_like(masks)
    assert torch.allclose(soft_dice_loss(heads[0], masks, weights=ones), soft_dice_loss(heads[0], masks))
    # The same number of wrong pixels costs more at the edge than deep inside the background.
    good = masks * 20 - 10  # confident and right everywhere
    edge = F.max_pool2d(masks, 3, 1, 1) != -F.max_pool2d(-masks, 3, 1, 1)
    far = F.max_pool2d(masks, 15, 1, 7) == 0  # background far from any polyp
    n = int(min(edge.sum(), far.sum()))
    at_edge, far_away = good.clone(), good.clone()
    idx_e = edge.flatten().nonzero()[:n, 0]
    idx_f = far.flatten().nonzero()[:n, 0]
    at_edge.view(-1)[idx_e] *= -1  # flip the prediction on n edge pixels
    far_away.view(-1)[idx_f] *= -1  # ... or on n far background pixels
    for bw, more in ((0.0, False), (5.0, True)):
        e, f = (float(seg_loss([h], masks, dice_weight=0, boundary_weight=bw)) for h in (at_edge, far_away))
        assert (e > 1.5 * f) if more else abs(e - f) < 1e-6 * max(e, 1)


def test_negative_boundary_weight_is_refused():
    with pytest.raises(PolypsegError, match=r"loss.boundary_weight must be >= 0 \(0 = off\), got -1.0"):
        load_config(overrides=["loss.boundary_weight=-1"])

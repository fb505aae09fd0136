"""Batch augmentation: masks follow the geometry, colours stay in range, same seed gives the same batch."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import real_batch

from polypseg.config import AugmentConfig
from polypseg.data.augment import BatchAugment


@pytest.fixture(scope="module")
def batch(cvc):
    return real_batch(cvc, (1, 30, 200, 400), 96, 128)


@pytest.mark.parametrize("backend", ["torch", "kornia"])
def test_mask_follows_geometry(batch, backend):
    x, y = batch
    # Paint the mask into the red channel, turn colour jitter off: after augmentation, red must still be the mask.
    painted = x.clone()
    painted[:, 0] = y[:, 0] * 255
    cfg = AugmentConfig(backend=backend, brightness=0, contrast=0, saturation=0, hue=0)
    out, m = BatchAugment(cfg, torch.device("cpu"), seed=1)(painted, y)
    agree = ((out[:, 0] > 127) == (m[:, 0] > 0.5)).float().mean()
    assert agree > 0.98
    assert not torch.equal(m, y.float())  # something moved


def test_deterministic_and_in_range(batch):
    x, y = batch
    a = BatchAugment(AugmentConfig(), torch.device("cpu"), seed=7)(x, y)
    b = BatchAugment(AugmentConfig(), torch.device("cpu"), seed=7)(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].min() >= 0 and a[0].max() <= 255 and set(a[1].unique().tolist()) <= {0.0, 1.0}


def test_hue_turns_colour_around_the_grey_axis(batch):
    # A hue rotation in YIQ keeps each pixel's luma: a wrong inverse or matrix order would not.
    from polypseg.data.augment import colour

    x, _ = batch
    cfg = AugmentConfig(brightness=0, contrast=0, saturation=0, hue=0.25)
    img = x.float()
    out = colour(img.clone(), cfg, torch.Generator().manual_seed(3))
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    inside = ((out > 0) & (out < 255)).all(1, keepdim=True)  # pixels the final clamp left alone
    assert inside.float().mean() > 0.5
    diff = ((out - img) * luma).sum(1, keepdim=True)[inside]
    assert diff.abs().max() < 0.05
    assert (out - img).abs().mean() > 1  # and the colours did turn

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


def test_background_close_ups_show_no_polyp_and_keep_the_mask_aligned(cvc):
    """augment.background turns samples into close-ups away from the polyp (every real frame has one); the
    mask still follows the image, and the magnification is the configured one."""
    x, y = real_batch(cvc, (1, 50, 120, 200, 300, 400, 500, 600), 144, 192)
    painted = x.float()
    painted[:, 0] = y[:, 0] * 255
    plain = AugmentConfig(brightness=0, contrast=0, saturation=0, hue=0, rotate=0, scale=0, shift=0, flip=0)
    close = AugmentConfig(**{**plain.__dict__, "background": 1.0, "background_zoom": 2.0})
    out, m = BatchAugment(close, torch.device("cpu"), seed=0)(painted, y)
    assert ((out[:, 0] > 127) == (m[:, 0] > 0.5)).float().mean() > 0.98
    empty = m.sum((1, 2, 3)) == 0
    assert y.sum((1, 2, 3)).min() > 0 and empty.sum() >= 3  # polyp-free views of frames that all have one
    # Without flips or rotation a 2x close-up stretches the image: neighbouring output pixels differ
    # less than in the frame itself.
    texture = (painted[:, 1:, :, 1:] - painted[:, 1:, :, :-1]).abs().mean((1, 2, 3))
    close_texture = (out[:, 1:, :, 1:] - out[:, 1:, :, :-1]).abs().mean((1, 2, 3))
    assert (close_texture[empty] < texture[empty]).all()
    same, _ = BatchAugment(plain, torch.device("cpu"), seed=0)(painted, y)
    assert torch.allclose(same, painted, atol=0.01)  # the plain warp is the identity here

"""The decoded cache: hit returns the same arrays, a changed file invalidates it, nothing goes next to the data."""

from __future__ import annotations

import os
import shutil

import numpy as np

from polypseg.data.cache import decode, fingerprint, load_decoded
from polypseg.data.layouts import discover


def test_cache_hit_and_invalidation(cvc, tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for n in (1, 2, 3, 4):
        shutil.copy(cvc / "PNG" / "Original" / f"{n}.png", root / "images")
        shutil.copy(cvc / "PNG" / "Ground Truth" / f"{n}.png", root / "masks")
    pairs = discover(root).pairs
    cache = tmp_path / "cache"
    a = load_decoded(pairs, 64, 80, cache_dir=cache, progress=False)
    assert a.images.shape == (4, 3, 64, 80) and a.images.dtype == np.uint8
    assert a.masks.shape == (4, 1, 64, 80) and set(np.unique(a.masks)) <= {0, 1}
    assert a.sizes == [(288, 384)] * 4
    assert len(list((cache / "decoded").iterdir())) == 1
    b = load_decoded(pairs, 64, 80, cache_dir=cache, progress=False)
    assert np.array_equal(a.images, b.images) and b.fingerprint == a.fingerprint
    fresh = decode(pairs, 64, 80)
    assert np.array_equal(fresh.images, a.images) and np.array_equal(fresh.masks, a.masks)
    # Replacing a file (new content, new mtime) gives a new fingerprint and a fresh decode.
    shutil.copy(cvc / "PNG" / "Original" / "100.png", root / "images" / "2.png")
    os.utime(root / "images" / "2.png", ns=(1, 1))
    c = load_decoded(pairs, 64, 80, cache_dir=cache, progress=False)
    assert c.fingerprint != a.fingerprint and not np.array_equal(c.images[1], a.images[1])
    assert np.array_equal(c.images[0], a.images[0])
    assert sorted(p.name for p in root.rglob("*")) == sorted(
        ["images", "masks"] + [f"{n}.png" for n in (1, 2, 3, 4)] * 2
    )


def test_fingerprint_depends_on_size(cvc_subset):
    pairs = discover(cvc_subset).pairs
    assert fingerprint(pairs, (64, 80)) != fingerprint(pairs, (96, 128))

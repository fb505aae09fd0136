"""Metric functions on hand-made masks with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polypseg import detection
from polypseg.errors import PolypsegError
from polypseg.evaluate import auroc, frame_metrics, hd95, saliency_metrics
from polypseg.metrics import batch_dice_iou, confusion, dice, grouped_bootstrap_ci, iou, threshold_sweep


def box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_counts_and_dice_table():
    gt = box(10, 10, 0, 4, 0, 5)  # 20 px
    pred = box(10, 10, 0, 4, 0, 10)  # 40 px, 20 overlap
    tp, fp, fn, tn = (float(v) for v in confusion(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None]))
    assert (tp, fp, fn, tn) == (20, 20, 0, 60)
    assert float(dice(torch.tensor(tp), torch.tensor(fp), torch.tensor(fn))) == pytest.approx(40 / 60)
    assert float(iou(torch.tensor(tp), torch.tensor(fp), torch.tensor(fn))) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "pred, gt, d, j",
    [
        (box(8, 8, 2, 6, 2, 6), box(8, 8, 2, 6, 2, 6), 1.0, 1.0),  # perfect
        (np.zeros((8, 8), bool), box(8, 8, 2, 6, 2, 6), 0.0, 0.0),  # empty prediction
        (box(8, 8, 0, 2, 0, 2), box(8, 8, 5, 8, 5, 8), 0.0, 0.0),  # disjoint
        (box(8, 8, 0, 8, 0, 4), box(8, 8, 0, 8, 0, 8), 2 * 32 / 96, 0.5),  # half overlap
    ],
)
def test_frame_metrics_cases(pred, gt, d, j):
    m, _ = frame_metrics(pred.astype(np.float32), gt)
    assert m["dice"] == pytest.approx(d) and m["iou"] == pytest.approx(j)


def test_empty_truth_is_excluded_from_batch_means():
    prob = torch.zeros(2, 1, 4, 4)
    prob[0, 0, :2] = 1
    gt = torch.zeros(2, 1, 4, 4)
    gt[0, 0, :2] = 1
    d, j, has = batch_dice_iou(prob, gt)
    assert has.tolist() == [True, False] and float(d[0]) == 1.0


def test_threshold_sweep_matches_brute_force():
    rng = np.random.default_rng(0)
    prob = rng.random((20, 30)).astype(np.float32)
    gt = rng.random((20, 30)) > 0.6
    sweep = threshold_sweep(prob, gt)
    q = np.round(prob * 255)
    for k in (0, 64, 128, 200, 255):
        p = q >= k
        tp, fp, fn = (p & gt).sum(), (p & ~gt).sum(), (~p & gt).sum()
        assert sweep["dice"][k] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0)
    assert len(sweep["dice"]) == 256


def test_saliency_metrics_hand_cases():
    gt = box(32, 32, 8, 24, 8, 24)
    perfect = saliency_metrics(gt.astype(np.float32), gt)
    assert (
        perfect["mae"] == 0
        and perfect["s_measure"] == pytest.approx(1.0)
        and perfect["wf_measure"] == pytest.approx(1.0)
    )
    assert perfect["max_e_measure"] == pytest.approx(1.0, abs=1e-3)
    half = np.full((32, 32), 0.5, np.float32)
    assert saliency_metrics(half, gt)["mae"] == pytest.approx(0.5, abs=1 / 255)


def test_hd95():
    a = box(50, 50, 10, 20, 10, 20)
    assert hd95(a, a) == 0
    b = box(50, 50, 10, 20, 15, 25)  # shifted 5 px right
    assert 4 <= hd95(a, b) <= 5
    assert math.isnan(hd95(np.zeros((5, 5), bool), a[:5, :5]))


def test_detection_two_polyps_one_found():
    gt = box(40, 40, 2, 10, 2, 10) | box(40, 40, 25, 35, 25, 35)
    pred = box(40, 40, 3, 9, 3, 9) | box(40, 40, 25, 30, 0, 5)  # one hit, one false alarm
    c = detection.match(pred, gt)
    assert (c.tp, c.fp, c.fn, c.n_polyps) == (1, 1, 1, 2)
    s = detection.summarize([c])
    assert s["recall"] == 0.5 and s["precision"] == 0.5 and s["fp_per_frame"] == 1


def test_detection_one_polyp_hit_twice_counts_once():
    gt = box(40, 40, 5, 35, 5, 35)
    pred = box(40, 40, 6, 12, 6, 12) | box(40, 40, 20, 30, 20, 30)
    c = detection.match(pred, gt)
    assert (c.tp, c.fp, c.fn, c.n_detections) == (1, 0, 0, 2)


def test_detection_min_area_and_centroid_rule():
    gt = box(40, 40, 0, 40, 0, 20)
    ring = np.zeros((40, 40), bool)
    ring[5:35, 12:22] = True  # centroid x = 16.5, inside the polyp (columns 0-19)
    c = detection.match(ring | box(40, 40, 0, 1, 39, 40), gt, min_area=5)  # 1-px blob ignored
    assert (c.tp, c.fp, c.n_detections) == (1, 0, 1)


def test_detection_counts_at_a_minimum_score():
    # Two polyps; three detections: polyp 1 hit at 0.95 and again at 0.6, a false alarm at 0.8, polyp 2 missed.
    gt = box(40, 40, 2, 10, 2, 10) | box(40, 40, 25, 35, 25, 35)
    pred = box(40, 40, 3, 6, 3, 6) | box(40, 40, 7, 9, 7, 9) | box(40, 40, 15, 20, 0, 5)
    _, dets = detection.components(pred)
    by_row = {d.box_xyxy[1]: d for d in dets}
    dets = [by_row[3], by_row[7], by_row[15]]
    f = detection.assign(dets, gt, [0.95, 0.6, 0.8])
    assert (f.hits[0], f.hits[2]) == (f.hits[1], 0) and f.hits[0] and f.n_polyps == 2
    assert detection.match(pred, gt) == f.counts()  # every detection: the plain centroid rule
    got = {s: f.counts(s) for s in (0.0, 0.7, 0.9, 0.99)}
    assert [(c.tp, c.fp, c.fn, c.n_detections) for c in got.values()] == [
        (1, 1, 1, 3),
        (1, 1, 1, 2),  # the second hit on polyp 1 dropped: it counted once anyway
        (1, 0, 1, 1),  # the false alarm dropped
        (0, 0, 2, 0),
    ]
    c = detection.curve([f, f], (0.0, 0.9))
    assert [(p["min_score"], p["tp"], p["fp"], p["frames"]) for p in c] == [(0.0, 2, 2, 2), (0.9, 2, 0, 2)]


def test_auroc_hand_computed():
    scores = np.array([0.9, 0.8, 0.3, 0.2])
    assert auroc(scores, np.array([True, True, False, False])) == 1.0
    assert auroc(scores, np.array([False, False, True, True])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
    assert auroc(np.array([0.9, 0.4, 0.6]), np.array([True, True, False])) == 0.5


def test_grouped_bootstrap_resamples_whole_sequences():
    # Two sequences of ten frames, one all 1.0 and one all 0.0: a draw of sequences is AA, AB or BB,
    # so the interval spans 0..1. Resampling frames independently would give about 0.28..0.72.
    values = [1.0] * 10 + [0.0] * 10
    groups = ["a"] * 10 + ["b"] * 10
    lo, hi = grouped_bootstrap_ci(values, groups)
    assert (lo, hi) == (0.0, 1.0)
    lo_f, hi_f = grouped_bootstrap_ci(values, list(range(20)))  # each frame its own group
    assert 0.2 < lo_f < 0.4 and 0.6 < hi_f < 0.8
    # Frame-weighted: a big good sequence and a small bad one; NaN frames are left out.
    values = [0.9] * 30 + [0.3] * 5 + [float("nan")] * 3
    groups = ["a"] * 30 + ["b"] * 5 + ["c"] * 3
    lo, hi = grouped_bootstrap_ci(values, groups)
    assert lo < np.mean(values[:35]) < hi and grouped_bootstrap_ci(values, groups) == (lo, hi)
    assert all(np.isnan(grouped_bootstrap_ci([0.5, 0.7], ["a", "a"])))


def test_min_area_is_a_share_of_the_frame_or_pixels():
    # A share means the same at every resolution: ~6 network pixels of a 96x128 model on CVC and PolypGen.
    assert detection.min_area_px(detection.DEFAULT_MIN_AREA, 288, 384) == 56
    assert detection.min_area_px("0.05%", 1080, 1920) == 1037
    assert detection.min_area_px(50, 1080, 1920) == 50 == detection.min_area_px("50", 1, 1)
    for bad in ("abc", "-1", "150%", "nan", "%"):
        with pytest.raises(PolypsegError, match="min_area"):
            detection.parse_min_area(bad)


def test_components_and_peaks_equal_whole_frame_labelling(polypgen):
    """`components` labels inside the mask's box and `peaks` reads each component's box: on real
    PolypGen masks (up to 1920x1080) made ragged with noise, both equal OpenCV over the whole frame and
    scipy's labelled maximum."""
    import cv2
    from scipy import ndimage

    from polypseg.imageio import read_mask

    rng = np.random.default_rng(0)
    for path in sorted((polypgen / "masks").iterdir())[:3]:
        gt = read_mask(path)
        prob = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 15) + rng.uniform(0, 0.3, gt.shape)
        prob = np.clip(prob, 0, 1).astype(np.float32)
        mask = prob > 0.55
        labels, comps = detection.components(mask)
        n, ref_labels, stats, cents = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        assert len(comps) == n - 1 > 1
        # The same partition of the pixels (OpenCV may number the components in another order).
        np.testing.assert_array_equal(labels > 0, mask)
        pairs = np.unique(np.stack([labels[mask], ref_labels[mask]]), axis=1)
        assert pairs.shape[1] == len(comps) == len(set(pairs[0])) == len(set(pairs[1]))
        ref_of = dict(pairs.T.tolist())
        for c in comps:
            x, y, w, h, area = stats[ref_of[c.label]]
            assert c.box_xyxy == (x, y, x + w, y + h) and c.area_px == area
            np.testing.assert_allclose(c.centroid, cents[ref_of[c.label]], rtol=0, atol=1e-6)
        ref_peaks = ndimage.maximum(prob, ref_labels, [ref_of[c.label] for c in comps])
        np.testing.assert_array_equal(detection.peaks(prob, labels, comps), ref_peaks)
        assert detection.components(np.zeros_like(mask))[1] == []


def test_hd95_in_the_masks_box_equals_the_whole_frame(polypgen):
    """hd95 measures inside the box around both masks; on real PolypGen masks against shifted, eroded and
    edge-touching versions of themselves it equals the whole-frame computation."""
    import cv2
    from scipy import ndimage

    from polypseg.imageio import read_mask

    def whole_frame(pred, gt):
        pb = pred ^ ndimage.binary_erosion(pred)
        gb = gt ^ ndimage.binary_erosion(gt)
        d = np.concatenate([ndimage.distance_transform_edt(~gb)[pb], ndimage.distance_transform_edt(~pb)[gb]])
        return float(np.percentile(d, 95))

    for path in sorted((polypgen / "masks").iterdir())[:4]:
        gt = read_mask(path)
        if not gt.any():
            continue
        h, w = gt.shape
        edge = gt.copy()
        edge[: h // 3, : w // 3] = True  # touches two sides of the frame
        for pred in (
            np.roll(gt, (15, -40), axis=(0, 1)),
            cv2.erode(gt.astype(np.uint8), np.ones((25, 25), np.uint8)) > 0,
            edge,
        ):
            assert hd95(pred, gt) == pytest.approx(whole_frame(pred, gt), abs=1e-9)


def test_ground_truth_specks_are_neither_found_nor_missed():
    """A ground-truth component under min_polyp_area is a speck: not a polyp to find (no FN), and a
    detection centred on it is neither TP nor FP; with min_polyp_area 0 it is a polyp like any other."""
    gt = box(40, 40, 5, 20, 5, 20) | box(40, 40, 30, 31, 30, 31)  # a polyp and a 1-px speck
    on_polyp, on_speck = box(40, 40, 8, 12, 8, 12), box(40, 40, 29, 32, 29, 32)
    c = detection.match(on_polyp, gt, min_polyp_area=2)
    assert (c.tp, c.fp, c.fn, c.n_polyps) == (1, 0, 0, 1)
    c = detection.match(on_polyp | on_speck, gt, min_polyp_area=2)
    assert (c.tp, c.fp, c.fn, c.n_detections) == (1, 0, 0, 1)
    f = detection.assign(detection.components(on_polyp | on_speck)[1], gt, min_polyp_area=2)
    assert (f.n_polyps, f.specks) == (1, 1)
    c = detection.match(on_polyp, gt)
    assert (c.tp, c.fn, c.n_polyps) == (1, 1, 2)
    assert detection.match(on_polyp | on_speck, gt).tp == 2


def test_recall_by_polyp_area():
    """Each polyp lands in the bin of its own area as a share of the frame; found means hit at the score."""
    gt = box(100, 100, 0, 30, 0, 30) | box(100, 100, 50, 53, 50, 53) | box(100, 100, 80, 84, 0, 4)
    # 900 px (9%), 9 px (0.09%) and 16 px (0.16%) of a 100x100 frame; the large one and one small one hit
    pred = box(100, 100, 10, 20, 10, 20) | box(100, 100, 50, 53, 50, 53)
    f = detection.assign(detection.components(pred)[1], gt, [0.95, 0.6])
    assert sorted(f.shares.values()) == [0.09, 0.16, 9.0]
    bins = detection.recall_by_size([f])
    assert [(b["size"], b["polyps"], b["found"]) for b in bins] == [
        ("under 1%", 2, 1),
        ("1-5%", 0, 0),
        ("5% and more", 1, 1),
    ]
    assert math.isnan(bins[1]["recall"]) and bins[0]["recall"] == 0.5
    assert [b["found"] for b in detection.recall_by_size([f], min_score=0.9)] == [0, 0, 1]

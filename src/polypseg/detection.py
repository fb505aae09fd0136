"""Polyp-level detection (MICCAI 2015 sub-challenge rule) and box extraction.

Each connected component of the predicted mask (at least `min_area` pixels) is one detection. It is a
true positive if its centroid lies inside a ground-truth polyp; several hits on one polyp count once
(the extra hits are neither TP nor FP); a polyp with no hit is a false negative. Ground-truth components
under `min_polyp_area` are annotation specks, not polyps: neither found nor missed, and a detection on one
is neither TP nor FP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from polypseg.errors import PolypsegError

if TYPE_CHECKING:
    import numpy as np

# The smallest component counted as a polyp, as a share of the frame, so that it means the same at every
# resolution: 56 px at CVC-ClinicDB's 384x288 and 1037 px at 1920x1080, about six network pixels for a
# model that predicts at 96x128 on both. A count of pixels ("50") is still accepted; 50 px, the earlier
# default, is under a third of one network pixel on a 1920x1080 frame (RESULTS t).
DEFAULT_MIN_AREA = "0.05%"

# The smallest ground-truth component counted as a polyp. Masks hold stray pixels beside the polyp: 24
# components of 1-6 px in 23 CVC-ClinicDB masks (at most 0.0054% of the frame) and 7 of 1-4 px in
# PolypGen-val, each counted as a polyp no detection could find; the smallest real polyp in either is 106
# px at 720x576 (0.026%), among fifteen in one PolypGen frame. 0.01% falls in the gap on both.
DEFAULT_MIN_POLYP_AREA = "0.01%"


def parse_min_area(spec: int | str, name: str = "min_area") -> tuple[float, bool]:
    """(value, is_share) from pixels (50, "50") or a share of the frame ("0.05%"); one-line error otherwise."""
    text = str(spec).strip()
    share = text.endswith("%")
    try:
        value = float(text[:-1] if share else text)
    except ValueError:
        raise PolypsegError(
            f"{name}: expected pixels (50) or a share of the frame (0.05%), got {spec!r}"
        ) from None
    if value < 0 or (share and value > 100) or not math.isfinite(value):
        raise PolypsegError(f"{name} must be >= 0 pixels (or 0-100% of the frame), got {spec}")
    return value, share


def min_area_px(spec: int | str, height: int, width: int, name: str = "min_area") -> int:
    """The spec in pixels for a frame of this size."""
    value, share = parse_min_area(spec, name)
    return math.ceil(value / 100 * height * width) if share else math.ceil(value)


def check_min_score(value: float) -> float:
    """A minimum detection score (a component's peak probability) in 0..1; one-line error otherwise."""
    if not 0.0 <= float(value) <= 1.0:
        raise PolypsegError(f"min_score must be in 0..1 (a component's peak probability), got {value}")
    return float(value)


def check_threshold(value: float) -> float:
    """A mask threshold (a pixel's probability) in 0..1; one-line error otherwise."""
    if not 0.0 <= float(value) <= 1.0:
        raise PolypsegError(f"threshold must be in 0..1 (a probability), got {value}")
    return float(value)


def check_operating_point(threshold: float | None, min_area, min_score: float | None) -> None:
    """The options that turn probabilities into masks and polyps (None: the model's own), each checked
    before any model loads: a bad one is a one-line error naming it."""
    if threshold is not None:
        check_threshold(threshold)
    parse_min_area(min_area)  # pixels or a share of the frame
    if min_score is not None:
        check_min_score(min_score)


@dataclass
class Component:
    box_xyxy: tuple[int, int, int, int]
    area_px: int
    centroid: tuple[float, float]  # (x, y)
    label: int  # label in the component image


def mask_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice] | None:
    """The (rows, cols) slices of the box around a bool mask's pixels, widened by `margin` within the frame;
    None for an empty mask. Work on a polyp's pixels is done inside it rather than over the whole frame."""
    import numpy as np

    rows = np.flatnonzero(mask.any(1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(0))
    return (
        slice(max(int(rows[0]) - margin, 0), int(rows[-1]) + 1 + margin),
        slice(max(int(cols[0]) - margin, 0), int(cols[-1]) + 1 + margin),
    )


def components(mask: np.ndarray, min_area: int = 0) -> tuple[np.ndarray, list[Component]]:
    """8-connected components of a bool mask with area >= min_area; returns (labels, components).

    Labelled within the box around the mask's pixels, not over the whole frame: the same components
    (OpenCV may number them in another order), 2.3 instead of 10.7 ms on a 1920x1080 frame with a polyp
    (NOTES 42)."""
    import cv2  # here, not at the top: the CLI reads DEFAULT_MIN_AREA from this module at start-up
    import numpy as np

    labels = np.zeros(mask.shape, np.int32)
    box = mask_box(mask)
    if box is None:
        return labels, []
    y0, x0 = box[0].start, box[1].start
    n, box_labels, stats, cents = cv2.connectedComponentsWithStats(
        mask[box].astype(np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    labels[box] = box_labels
    out = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area >= min_area:
            box = (x0 + x, y0 + y, x0 + x + w, y0 + y + h)
            out.append(Component(box, area, (x0 + float(cents[i][0]), y0 + float(cents[i][1])), i))
    return labels, out


def peaks(prob: np.ndarray, labels: np.ndarray, comps: list[Component]) -> list[float]:
    """The highest probability inside each component, read within the component's own box: scipy's
    `ndimage.maximum(prob, labels, index)` sorts the whole frame to do this (136 ms of a 1920x1080
    frame's 236 ms in `predict`, NOTES 42)."""
    out = []
    for c in comps:
        x0, y0, x1, y1 = c.box_xyxy
        out.append(float(prob[y0:y1, x0:x1][labels[y0:y1, x0:x1] == c.label].max()))
    return out


@dataclass
class DetectionCounts:
    tp: int  # ground-truth polyps hit at least once
    fp: int  # predicted components whose centroid is outside every polyp
    fn: int  # ground-truth polyps never hit
    n_polyps: int
    n_detections: int


SPECK = -1  # FrameDetections.hits: a detection centred on a ground-truth speck (neither TP nor FP)


@dataclass
class FrameDetections:
    """One frame's detections under the centroid rule: each predicted component's score (its peak
    probability) and the ground-truth polyp its centroid falls in (0: none, a false positive). Counts at
    any minimum score follow without predicting again, for the detection curve."""

    scores: list[float]
    hits: list[int]  # per detection: the polyp's label, 0 (a false positive) or SPECK (ignored)
    n_polyps: int
    specks: int = 0  # ground-truth components under the minimum polyp area, not counted as polyps
    shares: dict[int, float] = field(default_factory=dict)  # each polyp's area, % of the frame, by label

    def found(self, min_score: float = 0.0) -> set[int]:
        """Labels of the polyps hit by a detection scoring at least `min_score`."""
        return {h for s, h in zip(self.scores, self.hits) if s >= min_score and h > 0}

    def counts(self, min_score: float = 0.0) -> DetectionCounts:
        kept = [h for s, h in zip(self.scores, self.hits) if s >= min_score and h != SPECK]
        tp = len(self.found(min_score))
        return DetectionCounts(tp, kept.count(0), self.n_polyps - tp, self.n_polyps, len(kept))


def assign(
    dets: list[Component], gt: np.ndarray, scores: list[float] | None = None, min_polyp_area: int = 0
) -> FrameDetections:
    """Apply the centroid rule to one frame's detections against its bool ground-truth mask; ground-truth
    components under `min_polyp_area` pixels are specks (see the module's note)."""
    gt_labels, gt_comps = components(gt, 0)
    specks = {c.label for c in gt_comps if c.area_px < min_polyp_area}
    h, w = gt.shape
    hits = []
    for d in dets:
        cx = min(w - 1, max(0, int(round(d.centroid[0]))))
        cy = min(h - 1, max(0, int(round(d.centroid[1]))))
        label = int(gt_labels[cy, cx])
        hits.append(SPECK if label in specks else label)
    return FrameDetections(
        list(scores) if scores is not None else [1.0] * len(dets),
        hits,
        len(gt_comps) - len(specks),
        len(specks),
        {c.label: 100 * c.area_px / gt.size for c in gt_comps if c.label not in specks},
    )


def match(pred: np.ndarray, gt: np.ndarray, min_area: int = 0, min_polyp_area: int = 0) -> DetectionCounts:
    """Apply the centroid rule to one frame (bool masks of equal shape)."""
    return assign(components(pred, min_area)[1], gt, min_polyp_area=min_polyp_area).counts()


# Minimum detection scores at which `evaluate` reports the detection curve (recall against false alarms
# per frame, FROC-style); the first point, each component above the pixel threshold, is the default.
CURVE_MIN_SCORES = (0.0, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def curve(frames: list[FrameDetections], min_scores=CURVE_MIN_SCORES) -> list[dict]:
    """Detection rates over all frames at each minimum score."""
    return [{"min_score": s, **summarize([f.counts(s) for f in frames])} for s in min_scores]


# Apparent polyp size, the polyp's area as a share of the frame (%): under 1%, 1-5%, 5% and more. The
# middle bin holds the median polyp of PolypGen-val (4.7%); CVC-ClinicDB's median is 6.0%. Apparent size
# mixes true size with distance from the lens, so this is how visible the polyp is, not its size in mm.
SIZE_EDGES = (1.0, 5.0)


def size_bin(share: float, edges=SIZE_EDGES) -> int:
    return sum(share >= e for e in edges)


def size_labels(edges=SIZE_EDGES) -> list[str]:
    inner = [f"{a:g}-{b:g}%" for a, b in zip(edges, edges[1:])]
    return [f"under {edges[0]:g}%", *inner, f"{edges[-1]:g}% and more"]


def recall_by_size(frames: list[FrameDetections], min_score: float = 0.0, edges=SIZE_EDGES) -> list[dict]:
    """Per-polyp recall in each apparent-size bin: how many polyps of that size, and how many were found."""
    polyps, found = [0] * (len(edges) + 1), [0] * (len(edges) + 1)
    for f in frames:
        hit = f.found(min_score)
        for label, share in f.shares.items():
            b = size_bin(share, edges)
            polyps[b] += 1
            found[b] += label in hit
    return [
        {"size": name, "polyps": n, "found": k, "recall": k / n if n else float("nan")}
        for name, n, k in zip(size_labels(edges), polyps, found)
    ]


def pool_by_size(parts: list[list[dict]]) -> list[dict]:
    """Several evaluations' `by_size` bins as one: polyps, found and frames summed, Dice and mDice the
    frame-weighted means."""
    out = []
    for bins in zip(*parts):
        frames = sum(b["frames"] for b in bins)
        polyps, found = sum(b["polyps"] for b in bins), sum(b["found"] for b in bins)
        mean = {
            k: sum(b["frames"] * b[k] for b in bins if b["frames"]) / frames if frames else float("nan")
            for k in ("dice", "mdice")
        }
        recall = found / polyps if polyps else float("nan")
        out.append(
            {
                "size": bins[0]["size"],
                "polyps": polyps,
                "found": found,
                "recall": recall,
                "frames": frames,
                **mean,
            }
        )
    return out


def size_lines(bins: list[dict], threshold: float = 0.5) -> list[str]:
    """The `by_size` bins as lines for a table on screen (bins with neither polyps nor frames left out)."""
    kept = [b for b in bins if b["polyps"] or b["frames"]]

    def num(v: float) -> str:
        return "  n/a" if math.isnan(v) else f"{v:.4f}"

    return (["  by polyp area (share of the frame; apparent size, not mm)"] if kept else []) + [
        f"  {b['size']:>13s}: {b['found']:4d} of {b['polyps']:4d} polyps found ({num(b['recall'])})   "
        f"{b['frames']:4d} frames, Dice@{threshold} {num(b['dice'])}"
        for b in kept
    ]


def stricter_points(points: list[dict], used: float = 0.0, digits: int = 3) -> str:
    """Two points of a detection curve above the minimum score in use, in words for a table on screen:
    "0.9: recall 0.866, FP/frame 0.093; 0.99: ..." ("" when the curve has neither)."""

    def num(v: float) -> str:
        return "n/a" if math.isnan(v) else f"{v:.{digits}f}"

    return "; ".join(
        f"{c['min_score']:g}: recall {num(c['recall'])}, FP/frame {num(c['fp_per_frame'])}"
        for c in points
        if c["min_score"] in (0.9, 0.99) and c["min_score"] > used
    )


def summarize(counts: list[DetectionCounts]) -> dict:
    return rates(sum(c.tp for c in counts), sum(c.fp for c in counts), sum(c.fn for c in counts), len(counts))


def rates(tp: int, fp: int, fn: int, frames: int) -> dict:
    """Recall, precision, F1 and false positives per frame from totals over `frames` frames."""
    rec = tp / (tp + fn) if tp + fn else float("nan")
    prec = tp / (tp + fp) if tp + fp else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if (prec + rec) > 0 else 0.0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "recall": rec,
        "precision": prec,
        "f1": f1,
        "fp_per_frame": fp / frames if frames else float("nan"),
        "frames": frames,
    }

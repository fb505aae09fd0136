"""Zoomed tiles for small polyps: does reading a frame's quarters at the network's size, beside the whole
frame, find more of the polyps under 1% of the frame (evaluate's `by_size`) without more false alarms?

The frame is cut into 2x2 overlapping tiles (each `--tile` of the frame's height and width, default 0.6),
each tile resized to the network's input size and predicted, and the tiles' probabilities pasted back on
a grid twice the network's size (overlaps averaged). `--combine` joins them with the whole-frame pass:
`tiles` (tiles alone), `mean`, or `max` (the union of what either pass sees). Then `polypseg evaluate`
runs on the result, so its folder compares with a plain evaluation through `benchmarks/summarize.py
--baseline`. A measurement, not a feature: it replaces `Predictor.network_probabilities` in this process.

    python benchmarks/tiles.py --checkpoint full --data polypgen-val --combine max --out ev_tiles_max
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from polypseg import predict
from polypseg.evaluate import evaluate


def _tile_boxes(height: int, width: int, share: float) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of the 2x2 tiles, each `share` of the frame's sides, at its corners."""
    th, tw = round(height * share), round(width * share)
    return [(y, y + th, x, x + tw) for y in (0, height - th) for x in (0, width - tw)]


def tiled(share: float, combine: str):
    whole_pass = predict.Predictor.network_probabilities

    def network_probabilities(self: predict.Predictor, frames: list[np.ndarray]) -> np.ndarray:
        gh, gw = 2 * self.height, 2 * self.width  # the output grid: twice the network's size
        whole = whole_pass(self, frames)
        out = np.zeros((len(frames), gh, gw), np.float32)
        for i, frame in enumerate(frames):
            H, W = frame.shape[:2]
            boxes = _tile_boxes(H, W, share)
            crops = [frame[y0:y1, x0:x1] for y0, y1, x0, x1 in boxes]
            probs = whole_pass(self, crops)  # each tile at the network's own input size
            acc, cnt = np.zeros((gh, gw), np.float32), np.zeros((gh, gw), np.float32)
            for (y0, y1, x0, x1), p in zip(boxes, probs):
                gy0, gy1 = round(y0 * gh / H), round(y1 * gh / H)
                gx0, gx1 = round(x0 * gw / W), round(x1 * gw / W)
                acc[gy0:gy1, gx0:gx1] += cv2.resize(p, (gx1 - gx0, gy1 - gy0), interpolation=cv2.INTER_LINEAR)
                cnt[gy0:gy1, gx0:gx1] += 1
            tiles = acc / np.maximum(cnt, 1)
            full = cv2.resize(whole[i], (gw, gh), interpolation=cv2.INTER_LINEAR)
            out[i] = {"tiles": tiles, "mean": (tiles + full) / 2, "max": np.maximum(tiles, full)}[combine]
        return out

    return network_probabilities


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="full")
    ap.add_argument("--data", default="polypgen-val")
    ap.add_argument("--split", default="test")
    ap.add_argument("--tile", type=float, default=0.6, help="each tile's share of the frame's sides (0.5-1)")
    ap.add_argument("--combine", choices=["tiles", "mean", "max"], default="max")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if not 0.5 <= a.tile <= 1.0:
        ap.error("--tile must be in 0.5..1 (the 2x2 tiles must cover the frame)")
    predict.Predictor.network_probabilities = tiled(a.tile, a.combine)
    evaluate(
        a.checkpoint, data=a.data, split=a.split, out=a.out, device="cpu", overwrite=True, progress=False
    )


if __name__ == "__main__":
    main()

"""Flip TTA at several input sizes: does a second scale add to `--tta`?

`--tta` averages the network's output over the frame and its two flips at the model's input size. This
script runs the same three passes at each size in --sizes (multiples of the network's stride), resizes
each size's mean back to the model's size, averages the sizes, and runs `polypseg evaluate` on the result,
so its folder compares with an `evaluate --tta` folder through `benchmarks/summarize.py --baseline`.
A measurement, not a feature: it replaces `Predictor.network_probabilities` in this process only.

    python benchmarks/scale_tta.py --sizes 96x128,128x160 --checkpoint RUN/best.pt --out RUN/eval_scales
    python benchmarks/summarize.py --folds RUN_{0..4}/eval_scales --baseline RUN_{0..4}/eval_tta
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from polypseg import predict
from polypseg.evaluate import evaluate


def multi_scale(sizes: list[tuple[int, int]]):
    def network_probabilities(self: predict.Predictor, frames: list[np.ndarray]) -> np.ndarray:
        total = np.zeros((len(frames), self.height, self.width), np.float32)
        for h, w in sizes:
            p = self.networks[0].flip_mean(np.stack([predict.resize_to(f, h, w) for f in frames]))
            if (h, w) != (self.height, self.width):
                p = np.stack(
                    [cv2.resize(q, (self.width, self.height), interpolation=cv2.INTER_LINEAR) for q in p]
                )
            total += p
        return total / len(sizes)

    return network_probabilities


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", required=True, help="HxW,HxW,... input sizes (include the model's own)")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--data")
    a = ap.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    predict.Predictor.network_probabilities = multi_scale(sizes)
    evaluate(
        a.checkpoint, data=a.data, split=a.split, out=a.out, device="cpu", overwrite=True, progress=False
    )


if __name__ == "__main__":
    main()

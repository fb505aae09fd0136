"""docs/overlay.png: `polypseg predict` overlays side by side, with the ground truth outlined in magenta.

    polypseg predict 'PolypGen-val/images/1[0-5]_*.jpg' --out pred/      # or make demo's demo_out/predict
    python docs/overlay_figure.py pred/ PolypGen-val/masks/ 10_endocv2021_positive_1006 12_endocv2021_positive_979 \
        14_endocv2021_positive_864
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pred", type=Path, help="a `polypseg predict` output folder")
    ap.add_argument("masks", type=Path, help="the ground-truth masks folder (NAME_mask.jpg)")
    ap.add_argument("names", nargs="+")
    ap.add_argument("--height", type=int, default=270)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("overlay.png"))
    a = ap.parse_args()
    panels = []
    for name in a.names:
        img = cv2.imread(str(a.pred / f"{name}_overlay.png"))
        truth = (cv2.imread(str(a.masks / f"{name}_mask.jpg"), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
        contours, _ = cv2.findContours(truth, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(img, contours, -1, (255, 0, 255), max(2, img.shape[0] // 180))
        w = round(img.shape[1] * a.height / img.shape[0])
        panels.append(cv2.resize(img, (w, a.height), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(a.out), np.hstack(panels), [cv2.IMWRITE_PNG_COMPRESSION, 9])


if __name__ == "__main__":
    main()

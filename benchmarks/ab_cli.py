"""Wall time of `polypseg predict` and `evaluate` at an earlier commit against the working tree, side by side
in one sitting (alternating, so machine load hits both alike), on real frames of two sizes and on a
1920x1080 video made from PolypGen frames; JSON out.

    python benchmarks/ab_cli.py --base 4ec2670 --json benchmarks/results/ab_cli_cpu.json

The base commit is checked out with `git worktree` into a temporary folder and imported through
PYTHONPATH; both run in this environment, with the bundled `full` model and `--device cpu` by default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("POLYPSEG_DATA", ROOT.parent / "shared" / "datasets"))


def make_video(path: Path, frames: int = 100) -> Path:
    """A 25 fps mp4 of PolypGen-val's 1920x1080 frames, repeated to `frames` frames."""
    big = [f for f in sorted((DATA / "PolypGen-val" / "images").iterdir())]
    imgs = [im for im in (cv2.imread(str(f)) for f in big) if im is not None and im.shape[:2] == (1080, 1920)]
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (1920, 1080))
    for k in range(frames):
        w.write(imgs[k % len(imgs)])
    w.release()
    return path


def run(src: Path, args: list[str], out: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(src))
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "polypseg", *args, "--out", str(out)], env=env, capture_output=True, text=True
    )
    dt = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"failed ({src}): polypseg {' '.join(args)}\n{r.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the earlier commit")
    ap.add_argument("--checkpoint", default="full")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), args.base], check=True
        )
        try:
            video = make_video(tmp / "clip1080.mp4")
            common = ["--checkpoint", args.checkpoint, "--device", "cpu"]
            jobs = {
                "predict PolypGen-val images (150, up to 1920x1080)": [
                    "predict",
                    *common,
                    str(DATA / "PolypGen-val" / "images"),
                ],
                "predict CVC-ClinicDB images (612, 384x288)": [
                    "predict",
                    *common,
                    str(DATA / "CVC-ClinicDB" / "PNG" / "Original"),
                ],
                "predict video (100 frames, 1920x1080)": ["predict", *common, str(video)],
                "evaluate PolypGen-val (150)": ["evaluate", *common, "--data", str(DATA / "PolypGen-val")],
            }
            frames = {k: int(re.search(r"\((\d+)", k).group(1)) for k in jobs}
            times: dict = {k: {"base": [], "head": []} for k in jobs}
            for r in range(args.rounds):
                for j, (name, cmd) in enumerate(jobs.items()):
                    for version, src in (("base", base / "src"), ("head", ROOT / "src")):
                        out = tmp / f"out_{version}_{r}_{j}"
                        times[name][version].append(round(run(src, cmd, out), 2))
                        print(
                            f"round {r + 1}  {version:4s}  {name:52s} {times[name][version][-1]:7.1f} s",
                            flush=True,
                        )
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    import torch

    result = {
        "device": f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)",
        "date": time.strftime("%Y-%m-%d"),
        "base": args.base,
        "head": subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "checkpoint": args.checkpoint,
        "note": "wall seconds of the whole command (process start, model load, outputs written)",
        "jobs": {},
    }
    print(f"\n{result['device']}; median wall seconds, {args.rounds} rounds")
    for name, t in times.items():
        b, h = statistics.median(t["base"]), statistics.median(t["head"])
        result["jobs"][name] = {**t, "frames": frames[name], "speedup": round(b / h, 2)}
        print(f"{name:52s} base {b:6.1f}  head {h:6.1f}  {b / h:4.2f}x  ({frames[name] / h:5.1f} frames/s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Decoded-cache load time vs decoding the PNGs, side by side, for the 612-frame CVC-ClinicDB set.

python benchmarks/cache_load.py [--data DIR] [--size 288 384] [--json benchmarks/results/cache_load.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from polypseg.data.cache import decode, load_decoded
from polypseg.data.layouts import discover


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None)
    ap.add_argument("--size", type=int, nargs=2, default=[288, 384])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default="benchmarks/results/cache_load.json")
    a = ap.parse_args()
    pairs = discover(a.data).pairs
    h, w = a.size
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        decode(pairs, h, w)
        t_decode = time.perf_counter() - t0
        load_decoded(pairs, h, w, cache_dir=cache, progress=False)  # fills the cache
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            d = load_decoded(pairs, h, w, cache_dir=cache, progress=False)
            times.append(time.perf_counter() - t0)
    res = {
        "frames": len(pairs),
        "size": [h, w],
        "bytes": int(d.images.nbytes + d.masks.nbytes),
        "decode_pngs_s": round(t_decode, 3),
        "cache_load_s_min": round(min(times), 3),
        "cache_load_s_median": round(sorted(times)[len(times) // 2], 3),
        "cpu": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(
        f"{len(pairs)} frames at {h}x{w} ({res['bytes'] / 1e6:.0f} MB): decode PNGs {t_decode:.2f} s, "
        f"cache load {res['cache_load_s_median']:.3f} s (median of {a.repeats}) on {res['cpu']}"
    )
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

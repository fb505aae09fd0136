"""The GPU suite's training runs, one after another in one process; each is evaluated in the background.

One process keeps one CUDA context, one cuDNN autotuning cache and one import of torch for every run,
so a short GPU window goes to training: as separate commands, each run cost ~20 s more than its time
budget (start-up, data checks, autotuning). While run k+1 trains, `polypseg evaluate` measures run k
in a separate process (metrics are CPU work). After every run the `--after` command is called (the
suite packs its results there), so a time-out still returns everything that finished.

A plan is a JSON list of runs:
  {"name": "fold0", "seconds": 70, "set": ["data.split_by=kfold", "data.fold=0"],
   "evaluate": [[], ["--prune", "1"]],            # one background evaluation per argument list
   "export": "unetpp_cvc.safetensors"}            # fp16 safetensors of best.pt into --export-dir

Example:
  python benchmarks/suite_runs.py --plan plan.json --data CVC --work out/work --device cuda \\
      --common --preset full --set ema=0.99
The first run failing stops the plan (the device path is broken: no use spending the window);
a later failure is logged and the plan goes on.

`--lanes N` runs the plan as N such processes at once, the runs dealt out in turn (run k to lane
k mod N), for a GPU that one small run leaves idle: at 96x128 a step is mostly kernel launches
(benchmarks/NOTES.md 19), so several processes can fill each other's gaps. Each run keeps its own
wall-clock budget, so a lane trains fewer epochs in it than it would alone; whether N lanes win is
what the runs' img/s say. Each lane gets an equal share of the CPU cores for its threads
(OMP_NUM_THREADS, unless already set): N processes each with every core oversubscribe them, and on a
2-core machine two one-thread lanes trained 1.5x the images of one two-thread run (NOTES.md 31).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

MAX_RETURNED_FILE = 15 * 2**20  # the GPU machine returns files up to 16 MiB: bigger ones go in parts


LANE = os.environ.get("SUITE_LANE", "")


def log(msg: str, start=time.time()) -> None:
    print(f"[{time.time() - start:6.0f}s]{' lane ' + LANE if LANE else ''} {msg}", flush=True)


def split_file(path: Path, part_bytes: int = 12 * 2**20) -> list[Path]:
    """path -> path.part00, .part01, ... (`cat path.part* > path` restores it); the original is removed."""
    parts, data = [], path.read_bytes()
    for i in range(0, len(data), part_bytes):
        part = path.with_name(f"{path.name}.part{i // part_bytes:02d}")
        part.write_bytes(data[i : i + part_bytes])
        parts.append(part)
    path.unlink()
    return parts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", required=True, help="JSON file with the list of runs")
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True, help="run folders and evaluations go here")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--export-dir", default=None, help="where exported weights go (default: --work)")
    ap.add_argument("--after", default=None, help="bash command run after each run (e.g. packing)")
    ap.add_argument("--only", default=None, help="comma-separated run names to keep from the plan")
    ap.add_argument("--lanes", type=int, default=1, help="run the plan in N processes at once")
    ap.add_argument("--common", nargs=argparse.REMAINDER, default=[], help="--preset/--set for every run")
    a = ap.parse_args()

    def after() -> None:
        if a.after:  # under bash: the suite passes an exported shell function
            subprocess.run(["bash", "-c", a.after])

    plan = json.loads(Path(a.plan).read_text())
    if a.only:
        keep = set(a.only.split(","))
        unknown = sorted(keep - {r["name"] for r in plan})
        if unknown:  # a misspelt name would otherwise spend a GPU window training nothing
            ap.error(f"--only names no run of the plan: {', '.join(unknown)}")
        plan = [r for r in plan if r["name"] in keep]
    preset, overrides, it = None, [], iter(a.common)
    for tok in it:  # --preset NAME / --set k=v, as on the command line
        if tok == "--preset":
            preset = next(it)
        elif tok == "--set":
            overrides.append(next(it))
        else:
            ap.error(f"--common takes --preset and --set only, got {tok!r}")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    export_dir = Path(a.export_dir or work)
    if a.lanes > 1:
        return run_lanes(a, plan, work, export_dir)

    from polypseg.checkpoint import load_checkpoint, save_safetensors
    from polypseg.config import load_config
    from polypseg.train import train

    evals: list[tuple[str, subprocess.Popen]] = []
    failed = 0
    for k, run in enumerate(plan):
        name = run["name"]
        sets = overrides + [f"device={a.device}", f"time_limit_s={run['seconds']}", *run.get("set", [])]
        log(f"run {name}: {run['seconds']} s; {' '.join(run.get('set', []))}")
        try:
            cfg = load_config(preset=preset, overrides=sets)
            s = train(
                cfg, out=work / name, data=a.data, progress=False, overwrite=True
            )  # the suite's own folder
            best = (
                f"best val Dice {s['best_val_dice']:.4f} at epoch {s['best_epoch']}"
                if s["best_epoch"] > 0
                else "no validation"
            )
            log(
                f"run {name} ok: {best} of {s['epochs']}, {s['mean_img_per_s']} img/s, wall {s['wall_seconds']} s"
            )
        except Exception:
            failed += 1
            log(f"run {name} FAILED")
            traceback.print_exc(file=sys.stdout)
            if k == 0:
                log("the first run failed: stopping the plan")
                return 1
            continue
        finally:
            after()
        if run.get("export"):
            dst = export_dir / run["export"]
            save_safetensors(load_checkpoint(work / name / "best.pt"), dst)
            if dst.stat().st_size > MAX_RETURNED_FILE:
                dst = split_file(dst)
            log(f"exported {dst}")
        for extra in run.get("evaluate", []):
            tag = "_".join(x.lstrip("-") for x in extra)
            cmd = [sys.executable, "-m", "polypseg", "evaluate", "--checkpoint", str(work / name / "best.pt")]
            cmd += ["--data", a.data, "--split", "test", "--device", a.device, "--batch-size", "32"]
            cmd += ["--out", str(work / f"eval_{name}{'_' + tag if tag else ''}"), "--overwrite", *extra]
            log(f"evaluating in the background: {shlex.join(cmd[3:])}")
            evals.append((name, subprocess.Popen(cmd, stdout=sys.stdout, stderr=subprocess.STDOUT)))
    for name, p in evals:
        if p.wait() != 0:
            failed += 1
            log(f"evaluation of {name} FAILED ({p.args[-1] if len(p.args) else ''})")
    after()
    log(f"plan done: {len(plan)} runs, {failed} failure(s)")
    return 1 if failed else 0


def run_lanes(a: argparse.Namespace, plan: list[dict], work: Path, export_dir: Path) -> int:
    """Deal the plan out to `a.lanes` child processes of this script and wait for all of them."""
    procs, lanes = [], min(a.lanes, len(plan))
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // lanes))
    for k in range(lanes):
        lane_plan = work / f"plan.lane{k}.json"
        lane_plan.write_text(json.dumps(plan[k :: a.lanes], indent=1))
        cmd = [sys.executable, __file__, "--plan", str(lane_plan), "--data", a.data, "--work", str(work)]
        cmd += ["--device", a.device, "--export-dir", str(export_dir)]
        cmd += ["--after", a.after] if a.after else []
        log(f"lane {k} ({threads} CPU threads): {', '.join(r['name'] for r in plan[k :: a.lanes])}")
        env = {**os.environ, "SUITE_LANE": str(k), "OMP_NUM_THREADS": threads}
        procs.append(subprocess.Popen([*cmd, "--common", *a.common], env=env))
    codes = [p.wait() for p in procs]
    log(f"lanes done: exit codes {codes}")
    return 1 if any(codes) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

"""benchmarks/suite_runs.py, the GPU suite's one-process driver, on the CPU: runs, evaluations, exports,
a failing run that does not stop the plan, and a failing first run that does."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from tests.conftest import ROOT, TINY, plain_mode

from polypseg.data.splits import Split, cvc_clinicdb_groups
from polypseg.predict import Predictor


def _run(plan, tmp_path, data, groups, name, extra=()):
    (tmp_path / f"{name}.json").write_text(json.dumps(plan))
    common = ["--preset", "fast"] + [x for o in TINY + [f"data.groups={groups}"] for x in ("--set", o)]
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "suite_runs.py"),
        "--plan",
        str(tmp_path / f"{name}.json"),
    ]
    cmd += ["--data", str(data), "--work", str(tmp_path / name), "--device", "cpu"]
    cmd += ["--after", f"echo packed >> {tmp_path / name}.after", *extra, "--common", *common]
    return subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}
    )


def test_plan_runs_evaluates_exports_and_goes_on_after_a_failure(cvc_subset, subset_groups, tmp_path):
    plan = [
        {
            "name": "a",
            "seconds": 60,
            "set": ["optim.epochs=1"],
            "evaluate": [[], ["--prune", "1"]],
            "export": "a.safetensors",
        },
        {"name": "bad", "seconds": 60, "set": ["optim.nope=1"]},
        {"name": "c", "seconds": 60, "set": ["optim.epochs=1", "model.name=unet"]},
    ]
    p = _run(plan, tmp_path, cvc_subset, subset_groups, "w")
    assert p.returncode == 1, p.stdout[-2000:]  # one run failed: the plan says so in its exit status
    assert "run bad FAILED" in p.stdout and "unknown config key 'optim.nope'" in p.stdout
    assert "plan done: 3 runs, 1 failure(s)" in p.stdout
    w = tmp_path / "w"
    assert (w / "a" / "best.pt").is_file() and (w / "c" / "best.pt").is_file()
    assert json.loads((w / "a" / "summary.json").read_text())["epochs"] == 1
    for ev in ("eval_a", "eval_a_prune_1"):
        m = json.loads((w / ev / "metrics.json").read_text())
        assert 0 <= m["segmentation"]["dice"] <= 1, ev
    # The exported weights are a working model; the after-command ran after every run and at the end.
    Predictor.from_checkpoint(w / "a.safetensors", device="cpu")
    assert ((w / "a.safetensors").stat().st_mode & 0o777) == plain_mode(is_dir=False)  # safetensors: 0600
    assert (tmp_path / "w.after").read_text().count("packed") == 4

    # The summary tables are the evaluations' own numbers, with each run's training summary found.
    evals = [str(w / "eval_a"), str(w / "eval_a_prune_1")]
    p = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "summarize.py"),
            "--json",
            str(tmp_path / "s.json"),
            "--folds",
            *evals,
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    dice = [
        json.loads((w / e / "metrics.json").read_text())["segmentation"]["dice"]
        for e in ("eval_a", "eval_a_prune_1")
    ]
    assert f"| eval_a | {dice[0]:.4f} |" in p.stdout and f"| eval_a_prune_1 | {dice[1]:.4f} |" in p.stdout
    stats = json.loads((tmp_path / "s.json").read_text())["folds"]["stats"]["Dice@0.5"]
    assert stats["n"] == 2 and abs(stats["mean"] - (dice[0] + dice[1]) / 2) < 1e-12
    assert "| 1 |" in p.stdout  # epochs, from run a's summary.json
    # The evaluations used the training's groups CSV: the pooled line counts its sequences.
    pooled = json.loads((tmp_path / "s.json").read_text())["folds"]["pooled"]
    seqs = {g["sequence"] for g in json.loads((w / "eval_a" / "metrics.json").read_text())["per_sequence"]}
    assert seqs and pooled["sequences"] == len(seqs) and f"({len(seqs)} sequences)" in p.stdout
    # Per-polyp counts pooled from per_image.csv: over one evaluation, exactly what evaluate reported.
    cmd = [sys.executable, str(ROOT / "benchmarks" / "summarize.py"), "--json", str(tmp_path / "d.json")]
    p = subprocess.run(cmd + ["--folds", evals[0]], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    det = json.loads((w / "eval_a" / "metrics.json").read_text())["detection"]
    got = json.loads((tmp_path / "d.json").read_text())["folds"]["pooled"]["detection"]
    assert {k: got[k] for k in det} == det and f"F1 **{det['f1']:.3f}**" in p.stdout

    # Paired: the pruned head against the full model on the same frames.
    cmd = [sys.executable, str(ROOT / "benchmarks" / "summarize.py"), "--json", str(tmp_path / "p.json")]
    p = subprocess.run(cmd + ["--folds", evals[1], "--baseline", evals[0]], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    vs = json.loads((tmp_path / "p.json").read_text())["folds"]["vs_baseline"]
    lo, hi = vs["dice"]["ci95"]
    assert abs(vs["dice"]["mean"] - (dice[1] - dice[0])) < 1e-9 and vs["sequences"] == len(seqs) == 1
    assert math.isnan(lo) and "Against the baseline on the same" in p.stdout and "one sequence" in p.stdout
    p = subprocess.run(
        cmd + ["--folds", evals[1], "--baseline", str(tmp_path)], capture_output=True, text=True
    )
    assert p.returncode == 1 and p.stderr.strip().endswith(
        "has no metrics.json (not a folder polypseg evaluate wrote)"
    )


def test_first_run_failing_stops_the_plan(cvc_subset, subset_groups, tmp_path):
    plan = [{"name": "bad", "seconds": 60, "set": ["model.name=nope"]}, {"name": "b", "seconds": 60}]
    p = _run(plan, tmp_path, cvc_subset, subset_groups, "w")
    assert p.returncode == 1 and "the first run failed: stopping the plan" in p.stdout
    assert not (tmp_path / "w" / "b").exists()


def test_only_refuses_a_name_of_no_run(cvc_subset, subset_groups, tmp_path):
    """A misspelt --only would otherwise train nothing and spend a GPU window doing it."""
    plan = [{"name": "fold0", "seconds": 60}, {"name": "fold1", "seconds": 60}]
    p = _run(plan, tmp_path, cvc_subset, subset_groups, "w", extra=["--only", "fold0,fodl1"])
    assert p.returncode == 2 and "--only names no run of the plan: fodl1" in p.stderr
    assert not (tmp_path / "w").exists()


def test_lanes_run_the_plan_in_parallel_processes(cvc_subset, subset_groups, tmp_path):
    # Dealt in turn: a and c to lane 0, bad to lane 1, where it is the first run and stops that lane only.
    plan = [
        {"name": "a", "seconds": 60, "set": ["optim.epochs=1"], "evaluate": [[]]},
        {"name": "bad", "seconds": 60, "set": ["model.name=nope"]},
        {"name": "c", "seconds": 60, "set": ["optim.epochs=1", "model.name=unet"]},
    ]
    p = _run(plan, tmp_path, cvc_subset, subset_groups, "w", extra=["--lanes", "2"])
    assert p.returncode == 1, p.stdout[-2000:]
    w = tmp_path / "w"
    assert [r["name"] for r in json.loads((w / "plan.lane0.json").read_text())] == ["a", "c"]
    assert "lane 1 run bad FAILED" in p.stdout and "lane 1 the first run failed" in p.stdout
    assert "lanes done: exit codes [0, 1]" in p.stdout
    assert json.loads((w / "c" / "summary.json").read_text())["epochs"] == 1
    assert json.loads((w / "eval_a" / "metrics.json").read_text())["segmentation"]["dice"] >= 0
    # The lanes share the cores: each process's torch threads are its share (or what the user set).
    share = os.environ.get("OMP_NUM_THREADS") or str(max(1, os.cpu_count() // 2))
    assert f"lane 0 ({share} CPU threads): a, c" in p.stdout
    for run in ("a", "c"):
        assert json.loads((w / run / "summary.json").read_text())["device"].endswith(f", {share} threads)")
    # Every lane packs after each of its runs and at its end: lane 0 three times; lane 1 once, after the
    # run that stopped it.
    assert (tmp_path / "w.after").read_text().count("packed") == 4


def test_devdata_carries_the_same_pixels(cvc_subset, subset_groups, tmp_path):
    """benchmarks/devdata.py: lossless WebP to carry to the GPU machine, PNG again there, masks binarised."""
    import cv2
    import numpy as np

    script = [sys.executable, str(ROOT / "benchmarks" / "devdata.py")]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    packed = subprocess.run(
        [*script, "pack", str(cvc_subset), str(tmp_path / "carry"), "--groups", str(subset_groups)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert packed.returncode == 0, packed.stderr
    assert "40 pairs" in packed.stdout and "of 64 MiB" in packed.stdout
    assert sorted(p.suffix for p in (tmp_path / "carry" / "images").iterdir()) == [".webp"] * 40
    un = subprocess.run(
        [*script, "unpack", str(tmp_path / "carry"), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert un.returncode == 0, un.stderr
    out = tmp_path / "data" / "CVC-ClinicDB"
    for image in sorted((cvc_subset / "images").iterdir()):
        assert np.array_equal(cv2.imread(str(image)), cv2.imread(str(out / "images" / image.name)))
        truth = cv2.imread(str(cvc_subset / "masks" / image.name), cv2.IMREAD_GRAYSCALE) > 127
        carried = cv2.imread(str(out / "masks" / image.name), cv2.IMREAD_GRAYSCALE)
        assert set(np.unique(carried)) <= {0, 255} and np.array_equal(carried > 127, truth)
    assert (out / "sequences.csv").read_text() == subset_groups.read_text()


def _fake_eval(root, name, train_frames, dice_by_frame):
    """A run folder with split.json and an evaluation folder with per_image.csv, as the tools write them."""
    run = root / name
    (run / "eval").mkdir(parents=True)
    Split("kfold", 0, train=train_frames, val=list(dice_by_frame), fold=0, folds=5).save(run / "split.json")
    (run / "eval" / "metrics.json").write_text(json.dumps({"checkpoint": str(run / "best.pt")}))
    table = cvc_clinicdb_groups()
    rows = ["name,group,negative,dice"] + [f"{n},{table[n]},False,{d}" for n, d in dice_by_frame.items()]
    (run / "eval" / "per_image.csv").write_text("\n".join(rows) + "\n")
    return run / "eval"


def test_learning_curve_pools_the_same_frames_and_fits_dice_per_doubling(tmp_path):
    # CVC-ClinicDB frames 1-25 are sequence 1, 26-50 sequence 2; training on 6 and then 12 sequences
    # (frames of sequences 3-8 and 3-14) lifts sequence 1 from 0.5 to 0.6 and sequence 2 from 0.7 to 0.8.
    table = cvc_clinicdb_groups()
    held = [n for n in table if table[n] in ("1", "2")]
    train = {k: [n for n in table if 3 <= int(table[n]) <= 2 + k] for k in (6, 12)}
    lift = {6: 0.0, 12: 0.1}
    evals = {
        k: _fake_eval(
            tmp_path, f"lc{k}", train[k], {n: (0.5 if table[n] == "1" else 0.7) + lift[k] for n in held}
        )
        for k in (6, 12)
    }
    cmd = [sys.executable, str(ROOT / "benchmarks" / "learning_curve.py"), "--hard", "1"]
    cmd += [
        "--point",
        "0.5",
        str(evals[6]),
        "--point",
        "1",
        str(evals[12]),
        "--json",
        str(tmp_path / "lc.json"),
    ]
    cmd += ["--plot", str(tmp_path / "lc.png")]
    p = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}
    )
    assert p.returncode == 0, p.stderr
    out = json.loads((tmp_path / "lc.json").read_text())
    n1 = sum(table[n] == "1" for n in held)
    pooled = (0.5 * n1 + 0.7 * (len(held) - n1)) / len(held)
    pts = out["points"]
    assert [p["train_sequences"] for p in pts] == [6, 12] and out["sequences"] == 2
    assert abs(pts[0]["dice"] - pooled) < 1e-12 and abs(pts[1]["dice"] - pooled - 0.1) < 1e-12
    assert abs(pts[0]["dice_hard"] - 0.5) < 1e-12 and abs(pts[1]["dice_rest"] - 0.8) < 1e-12
    # One doubling of the sequences gave +0.1 on every frame: so does the slope and every bootstrap draw.
    assert abs(out["per_doubling"]["mean"] - 0.1) < 1e-9
    assert all(abs(v - 0.1) < 1e-9 for v in out["per_doubling"]["ci95"])
    assert abs(out["per_doubling_last_step"]["mean"] - 0.1) < 1e-9  # two points: the last step is the line
    reach = 12 * 2 ** ((0.85 - pooled - 0.1) / 0.1)
    assert abs(out["sequences_for_target"]["extrapolated"] - reach) < 1e-6 * reach
    assert (tmp_path / "lc.png").stat().st_size > 0 and "(extrapolations beyond 12)" in p.stdout
    bad = subprocess.run(cmd[:2] + ["--point", "1", str(evals[6])], capture_output=True, text=True)
    assert bad.returncode == 2 and "at least two --point" in bad.stderr

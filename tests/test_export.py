"""ONNX export: parity with PyTorch on real frames, ONNX Runtime through Predictor/predict, clear errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from tests.conftest import cli

from polypseg import Predictor
from polypseg.cli import main
from polypseg.errors import PolypsegError
from polypseg.imageio import read_rgb


@pytest.fixture(scope="module")
def exported(tiny_run, cvc_subset, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert cli("export", tiny_run / "best.pt", "--out", out, "--data", cvc_subset, "--dynamic-batch") == 0
    return out


def test_export_parity_printed(tiny_run, cvc_subset, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert cli("export", tiny_run / "best.pt", "--out", out, "--data", cvc_subset, "--prune", "2") == 0
    text = capsys.readouterr().out
    assert "parity on 4 real frames: max |p_onnx - p_torch| =" in text
    diff = float(text.split("= ")[1].split()[0])
    assert diff <= 1e-3
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["polypseg"])["prune"] == 2
    # An ONNX model is fixed to its head: asking it for another is a clear error, asking for its own is fine.
    assert Predictor.from_checkpoint(out, prune=2).head == "head L2"
    with pytest.raises(
        PolypsegError, match="this ONNX model is fixed to head L2; export it again with --prune"
    ):
        Predictor.from_checkpoint(out, prune=0)


def test_export_defaults_to_the_deepest_head(exported):
    p = Predictor.from_checkpoint(exported)
    assert (p.prune, p.head) == (4, "head L4")


def test_onnx_predictor_matches_pytorch(exported, tiny_run, cvc):
    rgb = read_rgb(cvc / "PNG" / "Original" / "30.png")
    a = Predictor.from_checkpoint(tiny_run / "best.pt", device="cpu").predict(rgb)
    b = Predictor.from_checkpoint(exported).predict(rgb)
    assert np.abs(a.probability - b.probability).max() < 1e-3
    assert abs(a.polyp_present_score - b.polyp_present_score) < 1e-3 and (a.mask != b.mask).mean() < 1e-3


def test_predict_cli_accepts_onnx(exported, cvc, tmp_path):
    out = tmp_path / "p"
    assert cli("predict", exported, cvc / "PNG" / "Original" / "30.png", "--out", out) == 0
    assert json.loads((out / "30.json").read_text())["width"] == 384
    import onnxruntime

    env = Predictor.from_checkpoint(exported).environment()
    assert env["onnxruntime"] == onnxruntime.__version__ and "ONNX Runtime" in env["device"]


def test_an_onnx_file_is_not_exported_again(exported, tmp_path, capsys):
    assert cli("export", exported, "--out", tmp_path / "again.onnx") == 2
    err = capsys.readouterr().err
    assert "is an exported ONNX model; this needs the .pt or .safetensors model" in err
    assert err.count("\n") == 1 and not (tmp_path / "again.onnx").exists()


@pytest.mark.parametrize("device", ["cpu", "auto", "cuda", "cuda:1", "tpu"])
def test_an_onnx_model_runs_where_asked_or_says_why_not(exported, cvc, tmp_path, capsys, device):
    """--device is obeyed for an ONNX model as for a PyTorch one: the CPU, CUDA through onnxruntime-gpu,
    or a one-line error; never a silent CPU run when a GPU was asked for."""
    import onnxruntime as ort

    cuda_ort = "CUDAExecutionProvider" in ort.get_available_providers()
    frame = cvc / "PNG" / "Original" / "30.png"
    code = cli("predict", exported, frame, "--out", tmp_path / "p", "--device", device)
    err = capsys.readouterr().err
    if device in ("cpu", "auto") or (device.startswith("cuda") and cuda_ort):
        assert code == 0
    else:
        assert code == 2 and err.count("\n") == 1 and not (tmp_path / "p").exists()
        why = "unknown device 'tpu'" if device == "tpu" else "this ONNX Runtime runs on the CPU only"
        assert why in err


def test_foreign_onnx_is_a_clear_error(tmp_path, capsys):
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "other.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    for name, msg in (
        ("other.onnx", "not a polypseg polyp model"),
        ("junk.onnx", "not a readable ONNX model"),
    ):
        assert cli("predict", tmp_path / name, tmp_path / "other.onnx", "--out", tmp_path / "o") == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1


def test_fixed_batch_onnx_serves_any_batch(tiny_run, cvc_subset, tmp_path):
    # Exported without --dynamic-batch, the graph takes batch 1; predict still runs batches of 8 frames.
    fixed = tmp_path / "fixed.onnx"
    args = [
        "export",
        "--checkpoint",
        str(tiny_run / "best.pt"),
        "--out",
        str(fixed),
        "--data",
        str(cvc_subset),
    ]
    assert main(args) == 0
    out = tmp_path / "q"
    args = [
        "predict",
        str(cvc_subset / "images"),
        "--checkpoint",
        str(fixed),
        "--out",
        str(out),
        "--batch-size",
        "8",
    ]
    assert main(args) == 0
    assert len(list(out.glob("*.json"))) == 40


def test_pretrained_encoder_model_exports_with_parity(cvc_subset, tmp_path, capsys):
    """The encoder's asymmetric "SAME" padding and ReLU6 survive ONNX export (ImageNet encoder, random decoder)."""
    from polypseg.checkpoint import make_checkpoint, save_atomic
    from polypseg.models import create_model

    torch.manual_seed(0)
    arch = {"name": "unetpp", "kwargs": {"width": 4, "encoder": "efficientnet-lite0"}}
    model = create_model("unetpp", **arch["kwargs"], encoder_weights="imagenet").eval()
    save_atomic(make_checkpoint(model, arch, 64, 96), tmp_path / "lite.pt")
    assert cli("export", tmp_path / "lite.pt", "--out", tmp_path / "lite.onnx", "--data", cvc_subset) == 0
    diff = float(capsys.readouterr().out.split("max |p_onnx - p_torch| = ")[1].split()[0])
    assert diff <= 1e-3


def test_safetensors_export_of_last_pt_is_the_model_alone(tiny_run, cvc, tmp_path):
    """A last.pt (optimiser and resume state inside) exports to the bundled format: weights and description."""
    from safetensors import safe_open

    out = tmp_path / "m.safetensors"
    assert cli("export", tiny_run / "last.pt", "--format", "safetensors", "--out", out) == 0
    with safe_open(str(out), "pt") as f:
        desc = json.loads(f.metadata()["polypseg"])
    assert not {"train_state", "optimizer", "rng", "ema"} & set(desc) and desc["arch"]["name"] == "unetpp"
    rgb = read_rgb(cvc / "PNG" / "Original" / "30.png")
    a = Predictor.from_checkpoint(tiny_run / "last.pt", device="cpu").predict(rgb)
    b = Predictor.from_checkpoint(out, device="cpu").predict(rgb)
    assert np.abs(a.probability - b.probability).max() < 1e-2  # fp16 weights


@pytest.mark.parametrize(
    "key, default, bad, message",
    [
        ("min_score", 0.0, "-1", "min_score must be in 0..1"),
        ("threshold", 0.5, "1.5", "threshold must be in 0..1"),
    ],
)
def test_an_exported_operating_point_is_the_default(
    tiny_run, cvc_subset, tmp_path, capsys, key, default, bad, message
):
    """`export --min-score` and `--threshold` store the operating point in the model (both formats);
    predict, evaluate and serve then use it unless told otherwise; a bad value is refused before anything
    is written."""
    flag = "--" + key.replace("_", "-")
    st, ox = tmp_path / "m.safetensors", tmp_path / "m.onnx"
    assert cli("export", tiny_run / "best.pt", "--format", "safetensors", flag, "0.9", "--out", st) == 0
    assert cli("export", tiny_run / "best.pt", flag, "0.8", "--data", cvc_subset, "--out", ox) == 0
    assert getattr(Predictor.from_checkpoint(st, device="cpu"), key) == 0.9
    assert getattr(Predictor.from_checkpoint(ox), key) == 0.8
    assert getattr(Predictor.from_checkpoint(st, device="cpu", **{key: 0.2}), key) == 0.2
    assert (
        getattr(Predictor.from_checkpoint(tiny_run / "best.pt", device="cpu"), key) == default
    )  # as trained
    for model, stored in ((st, 0.9), (ox, 0.8)):
        out = tmp_path / f"ev_{model.suffix[1:]}"
        assert (
            cli("evaluate", model, "--data", cvc_subset, "--split", "all", "--out", out, "--device", "cpu")
            == 0
        )
        assert json.loads((out / "metrics.json").read_text())[key] == stored
    capsys.readouterr()
    for fmt in ("safetensors", "onnx"):
        out = tmp_path / f"bad.{fmt}"
        assert cli("export", tiny_run / "best.pt", "--format", fmt, flag, bad, "--out", out) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and not out.exists()


def test_export_without_data_checks_parity_on_random_frames(tiny_run, tmp_path, monkeypatch, capsys):
    """A machine with a checkpoint and no dataset can still export; missing data that was asked for, or
    int8 calibration without frames, fails before any file is written."""
    monkeypatch.setenv("POLYPSEG_DATA", str(tmp_path / "no_data_here"))
    out = tmp_path / "m.onnx"
    assert cli("export", tiny_run / "best.pt", "--out", out) == 0
    assert "parity on 4 synthetic frames (no data found" in capsys.readouterr().out and out.is_file()
    for args, msg in (
        (["--data", str(tmp_path / "missing")], "data folder not found"),
        (["--quantize", "int8"], "data folder not found"),
    ):
        bad = tmp_path / "bad.onnx"
        assert cli("export", tiny_run / "best.pt", "--out", bad, *args) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1
        assert not bad.exists() and not list(tmp_path.glob("bad*"))


@pytest.mark.parametrize("fmt", ["safetensors", "onnx"])
def test_export_never_writes_over_a_file_unasked(tiny_run, cvc_subset, tmp_path, capsys, fmt):
    """An existing --out is kept byte for byte unless --overwrite; the checkpoint being read is never the
    output, even with --overwrite; a missing output folder is created."""
    out = tmp_path / f"m.{fmt}"
    out.write_bytes(b"the user's file")
    args = ["--format", fmt, "--data", cvc_subset]
    assert cli("export", tiny_run / "best.pt", *args, "--out", out) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith(f"{out} exists; pass --overwrite to replace it") and err.count("\n") == 1
    assert out.read_bytes() == b"the user's file"
    assert cli("export", tiny_run / "best.pt", *args, "--out", out, "--overwrite") == 0
    assert Predictor.from_checkpoint(out).meta["arch"]["name"] == "unetpp"
    src = tmp_path / "copy.pt"
    src.write_bytes((tiny_run / "best.pt").read_bytes())
    assert cli("export", src, *args, "--out", src, "--overwrite") == 2
    assert "is the input itself" in capsys.readouterr().err
    assert src.read_bytes() == (tiny_run / "best.pt").read_bytes()
    nested = tmp_path / "new" / "folder" / f"m.{fmt}"
    assert cli("export", tiny_run / "best.pt", *args, "--out", nested) == 0 and nested.is_file()
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # no temp file left behind


def test_int8_export_is_int8_but_keeps_the_probability_in_float(cvc_subset, cvc, tmp_path, capsys):
    """The bundled fast model quantised: the graph really runs int8 convolutions, its output tail (head
    convolution, resize, sigmoid) stays float, so probabilities are not cut to 256 levels (that tied the
    frame scores at 1.0 and cost the full model 0.18 AUROC on PolypGen-val), its masks agree with the fp32
    graph's, and reports name the precision."""
    out = tmp_path / "fast.onnx"
    assert cli("export", "fast", "--out", out, "--data", cvc_subset, "--quantize", "int8") == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.startswith("int8 against fp32 on 4 real frames"))
    assert float(line.split("masks agree at Dice ")[1].split()[0]) >= 0.95
    int8 = tmp_path / "fast_int8.onnx"
    graph = onnx.load(str(int8)).graph
    producer = {o: n for n in graph.node for o in n.output}
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) >= 20
    head = producer["probability"]
    while head.op_type != "Conv":  # back from the output to the head convolution: no quantisation on the way
        assert head.op_type not in ("QuantizeLinear", "DequantizeLinear")
        head = producer[next(i for i in head.input if i in producer)]
    assert producer[head.output[0]] is head and not any(
        head.output[0] in n.input for n in graph.node if n.op_type == "QuantizeLinear"
    )
    rgb = read_rgb(cvc / "PNG" / "Original" / "30.png")
    a, b = Predictor.from_checkpoint(out), Predictor.from_checkpoint(int8)
    pa, pb = a.predict(rgb), b.predict(rgb)
    assert np.unique(pb.probability[pb.probability > 0.9]).size > 256
    assert (pa.mask == pb.mask).mean() > 0.97 and abs(pa.polyp_present_score - pb.polyp_present_score) < 0.05
    assert (a.precision, b.precision) == ("fp32", "int8 (calibrated on 16 frames)")

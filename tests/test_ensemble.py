"""Ensembles: several models' probabilities averaged, from repeated --checkpoint or a `polypseg cv` folder."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from tests.conftest import TINY

from polypseg import Predictor
from polypseg.cli import main
from polypseg.errors import PolypsegError
from polypseg.imageio import read_rgb, resize_to


@pytest.fixture(scope="module")
def tiny_cv(cvc_subset, subset_groups, tmp_path_factory):
    """A finished 2-fold cross-validation of a tiny UNet++ on the real 40-frame subset."""
    out = tmp_path_factory.mktemp("ens") / "cv"
    args = ["cv", "--data", str(cvc_subset), "--out", str(out), "--no-progress"]
    for o in [*TINY, f"data.groups={subset_groups}", "data.folds=2"]:
        args += ["--set", o]
    assert main(args) == 0
    return out


def test_an_ensemble_is_the_mean_of_its_models_each_at_its_own_size(cvc):
    """The bundled full (160x224) and fast (64x96) models: the ensemble's probabilities are the mean of
    each model's own, the fast one's resized to the first model's grid; with flip TTA too."""
    frames = [read_rgb(cvc / "PNG" / "Original" / f"{i}.png") for i in (5, 300)]
    frames.append(cv2.resize(frames[0], (500, 333)))  # another frame size
    full = Predictor.from_checkpoint("full", device="cpu")
    fast = Predictor.from_checkpoint("fast", device="cpu")
    both = Predictor.from_checkpoint(["full", "fast"], device="cpu", min_score=0.0)
    assert (both.height, both.width) == (full.height, full.width) == (160, 224)
    assert (fast.height, fast.width) == (64, 96)
    assert both.output == "head L4, mean of 2 models"
    for tta in (False, True):
        full.tta = fast.tta = both.tta = tta
        a, b = full.network_probabilities(frames), fast.network_probabilities(frames)
        b = np.stack([cv2.resize(q, (224, 160), interpolation=cv2.INTER_LINEAR) for q in b])
        assert np.abs(a - b).max() > 0.05  # two different models: the mean is not either one
        np.testing.assert_allclose(both.network_probabilities(frames), (a + b) / 2, atol=1e-6)
    # The same model twice is that model.
    twice = Predictor.from_checkpoint(["fast", "fast"], device="cpu")
    x = np.stack([resize_to(f, 64, 96) for f in frames])
    np.testing.assert_allclose(twice.network_probabilities(frames), fast.networks[0](x), atol=1e-6)
    pred = both.predict(frames[0])
    assert pred.mask.shape == frames[0].shape[:2] and pred.polyps


def test_models_that_store_different_operating_points_need_one_chosen(cvc, tmp_path, capsys):
    """Both bundled models carry minimum score 0.9; a copy of full exported with 0 differs from fast, and
    the ensemble asks for one."""
    assert Predictor.from_checkpoint(["full", "fast"], device="cpu").min_score == 0.9
    full0 = tmp_path / "full0.safetensors"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                "full",
                "--format",
                "safetensors",
                "--min-score",
                "0",
                "--out",
                str(full0),
            ]
        )
        == 0
    )
    with pytest.raises(PolypsegError, match="different min scores .*--min-score"):
        Predictor.from_checkpoint([str(full0), "fast"], device="cpu")
    img = cvc / "PNG" / "Original" / "5.png"
    args = [
        "predict",
        "--checkpoint",
        str(full0),
        "--checkpoint",
        "fast",
        str(img),
        "--out",
        str(tmp_path / "p"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("polypseg: error: the models store different min scores (0.0, 0.9)")
    assert "\n" not in err and not (tmp_path / "p").exists()
    assert main([*args, "--min-score", "0.5"]) == 0
    out = json.loads((tmp_path / "p" / "5.json").read_text())
    assert out["min_score"] == 0.5


def test_a_cv_folder_is_its_folds_ensemble(tiny_cv, cvc_subset, tmp_path, capsys):
    folds = [tiny_cv / f"fold{i}" / "best.pt" for i in (0, 1)]
    p = Predictor.from_checkpoint(str(tiny_cv), device="cpu")
    assert [n.meta["checkpoint_path"] for n in p.networks] == [str(f) for f in folds]
    assert p.output == "head L4, mean of 2 models"

    # Each fold trained on the other's test frames: no frame is held out from both, and evaluate says so.
    args = ["evaluate", "--checkpoint", str(tiny_cv), "--data", str(cvc_subset), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "no frame of this data is held out from every model of the ensemble" in err
    assert not (tmp_path / "e").exists()

    # Fold 0 twice: the frames held out from both are fold 0's own test frames.
    val0 = json.loads((tiny_cv / "fold0" / "split.json").read_text())["val"]
    two = ["evaluate", "--checkpoint", str(folds[0]), "--checkpoint", str(folds[0])]
    assert main([*two, *args[3:], "--out", str(tmp_path / "e0")]) == 0
    m = json.loads((tmp_path / "e0" / "metrics.json").read_text())
    assert m["frames"] == len(val0) and m["split"].startswith("the frames held out from all 2 models")
    assert m["checkpoint"] == [str(folds[0])] * 2 and len(m["checkpoint_sha256"]) == 2
    single = json.loads((tiny_cv / "fold0" / "eval" / "metrics.json").read_text())
    assert m["segmentation"]["dice"] == pytest.approx(single["segmentation"]["dice"], abs=1e-6)
    report = (tmp_path / "e0" / "report.html").read_text()
    assert "Ensemble of 2 models" in report and str(folds[0]) in report
    # The bundled fast model trained on all 40 of these CVC-ClinicDB frames (found by their pixels, in
    # this copy under another layout): beside it, no frame is held out.
    mixed = ["evaluate", "--checkpoint", str(folds[0]), "--checkpoint", "fast", "--min-score", "0"]
    assert main([*mixed, *args[3:], "--out", str(tmp_path / "em")]) == 2
    assert "no frame of this data is held out from every model" in capsys.readouterr().err

    # The whole folder on every frame (labelled optimistic by --split all), and predict with it.
    assert main([*args, "--split", "all", "--out", str(tmp_path / "ea")]) == 0
    m = json.loads((tmp_path / "ea" / "metrics.json").read_text())
    assert m["frames"] == 40 and m["checkpoint"] == [str(f) for f in folds]
    img = next((cvc_subset / "images").glob(f"{sorted(val0)[0]}.*"))
    assert main(["predict", "--checkpoint", str(tiny_cv), str(img), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / f"{img.stem}.json").is_file()
    assert "head L4, mean of 2 models); outputs in" in capsys.readouterr().out

    # export: one ONNX graph of the folds' mean, with parity on real frames; it runs as the ensemble did,
    # and knows every frame either fold trained on.
    onnx = tmp_path / "cv.onnx"
    assert main(["export", "--checkpoint", str(tiny_cv), "--data", str(cvc_subset), "--out", str(onnx)]) == 0
    assert "max |p_onnx - p_torch|" in capsys.readouterr().out
    g = Predictor.from_checkpoint(str(onnx))
    assert g.output == "head L4, mean of 2 models" and len(g.networks) == 1
    frames = [read_rgb(f) for f in sorted((cvc_subset / "images").iterdir())[:4]]
    for n in p.networks:
        n.amp = False  # ONNX Runtime runs in fp32; PyTorch on a CPU with native bf16 runs in bf16
    np.testing.assert_allclose(g.network_probabilities(frames), p.network_probabilities(frames), atol=1e-5)
    assert [e["checkpoint"] for e in g.meta["ensemble"]] == [str(f) for f in folds]
    assert main([*args[:2], str(onnx), *args[3:], "--out", str(tmp_path / "eo")]) == 2
    assert "trained on every frame of this data" in capsys.readouterr().err

    # What one graph cannot be: two input sizes, or a safetensors file of several models.
    assert (
        main(["export", "--checkpoint", "full", "--checkpoint", "fast", "--out", str(tmp_path / "x.onnx")])
        == 2
    )
    assert (
        "an ONNX ensemble takes one input size; these models take 64x96, 160x224" in capsys.readouterr().err
    )
    st = ["export", "--checkpoint", str(tiny_cv), "--format", "safetensors", "--out", str(tmp_path / "x.st")]
    assert main(st) == 2
    assert "a safetensors file holds one model" in capsys.readouterr().err
    assert not list(tmp_path.glob("x.*"))


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"k": ', "not a cv.json that `polypseg cv` wrote"),
        ('{"x": 1}', "not a cv.json that `polypseg cv` wrote"),
        ('{"k": "5"}', "'k' must be a number of folds"),
        ('{"k": 2}', "a cross-validation folder without"),
    ],
)
def test_a_broken_cv_folder_is_one_line(cvc, tmp_path, capsys, text, message):
    (tmp_path / "cv").mkdir()
    (tmp_path / "cv" / "cv.json").write_text(text)
    img = cvc / "PNG" / "Original" / "5.png"
    assert (
        main(["predict", "--checkpoint", str(tmp_path / "cv"), str(img), "--out", str(tmp_path / "p")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("polypseg: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "p").exists()

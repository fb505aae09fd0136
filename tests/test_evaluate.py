"""`polypseg evaluate` end to end on real frames with a tiny trained model."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import torch
from tests.conftest import cli, csv_rows, plain_mode

from polypseg.cli import main


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.tables = [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])
        self.tables += tag == "table"


def test_training_frames_are_found_by_their_pixels_in_any_copy(cvc, polypgen, tmp_path, capsys):
    """Six CVC-ClinicDB frames re-saved under other names in another layout: the bundled fast model trained
    on three of them (its grouped fold 0 held out the others). `--split test` scores only the three it
    never saw; the full model, trained on all 612, is refused; `--split all` says it is optimistic."""
    import cv2

    from polypseg.checkpoint import load_checkpoint
    from polypseg.imageio import read_mask, read_rgb
    from polypseg.network import bundled_checkpoint

    split = load_checkpoint(bundled_checkpoint("fast"))["split"]
    frames = sorted(split["val"], key=int)[:3] + sorted(split["train"], key=int)[:3]
    data = tmp_path / "copy"
    for d in ("images", "masks"):
        (data / d).mkdir(parents=True)
    for i, n in enumerate(frames):
        rgb = read_rgb(cvc / "PNG" / "Original" / f"{n}.png")
        cv2.imwrite(str(data / "images" / f"case{i}.png"), rgb[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
        cv2.imwrite(
            str(data / "masks" / f"case{i}.png"), read_mask(cvc / "PNG" / "Ground Truth" / f"{n}.png") * 255
        )
    args = ["--data", data, "--device", "cpu"]
    assert cli("evaluate", "fast", *args, "--out", tmp_path / "e") == 0
    screen = capsys.readouterr().out
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["frames"] == 3 and m["split"] == (
        "the frames the checkpoint was not trained on: 3 of the 6 are training frames, found by their "
        "pixels, and left out"
    )
    names = [r["name"] for r in csv_rows(tmp_path / "e" / "per_image.csv")]
    assert sorted(names) == ["case0", "case1", "case2"] and m["split"] in screen

    assert cli("evaluate", "full", *args, "--out", tmp_path / "f") == 2
    assert "this checkpoint was trained on every frame of this data" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()
    assert cli("evaluate", "fast", *args, "--split", "all", "--out", tmp_path / "a") == 0
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["frames"] == 6 and m["split"] == "all frames (3 of them the checkpoint trained on: optimistic)"

    # Frames it never trained on (two PolypGen-val ones, by name and by pixels): all of them, and it says so.
    other = tmp_path / "other"
    for d in ("images", "masks"):
        (other / d).mkdir(parents=True)
    for name in ("106OLCV1_100H0014", "10_endocv2021_positive_1006"):
        for d, suffix in (("images", ""), ("masks", "_mask")):
            (other / d / f"{name}{suffix}.jpg").symlink_to(polypgen / d / f"{name}{suffix}.jpg")
    assert cli("evaluate", "full", "--data", other, "--device", "cpu", "--out", tmp_path / "o") == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["frames"] == 2 and m["split"] == "all frames (the checkpoint was not trained on this data)"


def test_evaluate_writes_every_output(tiny_run, cvc_subset, tmp_path, capsys):
    out = tmp_path / "eval"
    assert cli("evaluate", tiny_run / "best.pt", "--data", cvc_subset, "--out", out, "--device", "cpu") == 0
    screen = capsys.readouterr().out
    assert "held-out frames of the checkpoint's split" in screen and "mDice(256 thr)" in screen
    m = json.loads((out / "metrics.json").read_text())
    val = json.loads((tiny_run / "split.json").read_text())["val"]
    assert m["frames"] == len(val) and m["threshold"] == 0.5 and len(m["checkpoint_sha256"]) == 64
    assert (m["prune"], m["head"]) == (4, "head L4") and "output head L4" in screen  # the default output
    env = m["environment"]  # what the numbers were measured with
    assert (
        env["device"] == m["device"] and env["torch"] == str(torch.__version__) and "onnxruntime" not in env
    )
    for k in (
        "dice",
        "iou",
        "mdice",
        "miou",
        "s_measure",
        "wf_measure",
        "mean_e_measure",
        "max_e_measure",
        "mae",
        "hd95",
    ):
        assert k in m["segmentation"]
    assert set(m["detection"]) >= {"recall", "precision", "f1", "fp_per_frame"}
    assert "resized" in m["resize_note"]  # 384x288 frames through a 80x64 network
    rows = csv_rows(out / "per_image.csv")
    assert sorted(r["name"] for r in rows) == sorted(val)
    # The report is one self-contained HTML file with its images inside.
    p = _Images()
    p.feed((out / "report.html").read_text())
    # Three metric tables, the detection curve, one by polyp area and one by sequence (the training's groups
    # CSV names these frames).
    assert p.tables == 6 and len(p.srcs) >= 3 and all(s.startswith("data:image/png;base64,") for s in p.srcs)
    # By polyp area: every polyp and every frame with one in exactly one bin, adding up to the totals.
    sizes, det = m["by_size"], m["detection"]
    assert [b["size"] for b in sizes] == ["under 1%", "1-5%", "5% and more"]
    assert (
        sum(b["found"] for b in sizes) == det["tp"]
        and sum(b["polyps"] for b in sizes) == det["tp"] + det["fn"]
    )
    assert sum(b["frames"] for b in sizes) == m["polyp_frames"]
    shares = [float(r["polyp_share"]) for r in rows]
    assert [sum(1.0 <= x < 5.0 for x in shares), sum(x >= 5.0 for x in shares)] == [
        b["frames"] for b in sizes[1:]
    ]
    # Outputs are as readable as anything else the user creates (the temp folder was 0700).
    assert (out.stat().st_mode & 0o777) == plain_mode(is_dir=True)


def test_evaluate_by_sequence(tiny_run, cvc, cvc_subset, tmp_path, capsys):
    # Real CVC-ClinicDB layout: sequences come from the built-in table. 12 frames of 3 sequences.
    val = [str(n) for n in (*range(1, 5), *range(26, 30), *range(80, 84))]
    (tmp_path / "s.json").write_text(json.dumps({"method": "group", "seed": 0, "train": [], "val": val}))
    out = tmp_path / "seq"
    args = ("--split", tmp_path / "s.json", "--device", "cpu")
    assert cli("evaluate", tiny_run / "best.pt", "--data", cvc, "--out", out, *args) == 0
    screen = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    seqs = m["per_sequence"]
    assert "built-in table" in m["groups"] and [g["sequence"] for g in seqs] == ["1", "2", "5"]
    assert [g["frames"] for g in seqs] == [4, 4, 4]
    seg = m["segmentation"]
    # Equal-sized sequences: the frame mean is the mean of the sequence means.
    assert np.isclose(np.mean([g["dice"] for g in seqs]), seg["dice"])
    lo, hi = seg["dice_ci95"]
    assert lo <= seg["dice"] <= hi and seg["ci95_over"] == "3 sequences"
    assert "by sequence (3), lowest Dice@0.5" in screen and "(bootstrap over 3 sequences)" in screen
    rows = csv_rows(out / "per_image.csv")
    assert {r["name"]: r["group"] for r in rows}["80"] == "5"
    p = _Images()
    p.feed((out / "report.html").read_text())
    assert p.tables == 6  # the three metric tables, the detection curve, by polyp area and by sequence

    # Data without a built-in table: --groups names the sequences.
    (tmp_path / "g.csv").write_text("frame,sequence\n" + "".join(f"{n},{n % 2}\n" for n in range(1, 100)))
    sub = ("--data", cvc_subset, "--split", "all", "--device", "cpu")
    assert (
        cli(
            "evaluate",
            tiny_run / "best.pt",
            *sub,
            "--out",
            tmp_path / "g",
            "--groups",
            tmp_path / "g.csv",
            "--tta",
        )
        == 0
    )
    m = json.loads((tmp_path / "g" / "metrics.json").read_text())
    assert m["output"] == "head L4, flip TTA" and "output head L4, flip TTA" in capsys.readouterr().out
    report = (tmp_path / "g" / "report.html").read_text()
    assert "output head L4, flip TTA, device" in report
    assert f"threads), {m['precision']}." in report and m["precision"] in ("fp32", "bf16 autocast")
    assert [g["sequence"] for g in m["per_sequence"]] == ["0", "1"] and m["frames"] == 40
    # Without --groups: the CSV the checkpoint was trained with (it names every frame of this data).
    assert cli("evaluate", tiny_run / "best.pt", *sub, "--out", tmp_path / "own") == 0
    m = json.loads((tmp_path / "own" / "metrics.json").read_text())
    assert [g["sequence"] for g in m["per_sequence"]] == ["1", "2", "3", "5"]
    assert m["groups"].endswith("(the checkpoint's training config)")


def test_evaluate_external_data_with_negatives(tiny_run, polypgen, tmp_path):
    # PolypGen frames are up to 1920x1080; pick 3 negatives and 3 positives through a split file.
    from polypseg.data.layouts import discover
    from polypseg.imageio import read_mask

    pairs = discover(polypgen).pairs
    neg = [p.name for p in pairs if not read_mask(p.mask).any()][:3]
    pos = [p.name for p in pairs if p.name not in neg][:3]
    (tmp_path / "s.json").write_text(
        json.dumps({"method": "group", "seed": 0, "train": [], "val": neg + pos})
    )
    out = tmp_path / "ext"
    assert (
        cli(
            "evaluate",
            tiny_run / "best.pt",
            "--data",
            polypgen,
            "--split",
            tmp_path / "s.json",
            "--out",
            out,
            "--device",
            "cpu",
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames"] == 6 and m["polyp_frames"] == 3 and m["negatives"]["frames"] == 3
    assert m["classification"]["negatives"] == 3 and 0 <= m["classification"]["auroc"] <= 1
    rows = {r["name"]: r for r in csv_rows(out / "per_image.csv")}
    assert all(rows[n]["dice"] == "" for n in neg) and all(rows[n]["dice"] != "" for n in pos)
    assert np.isfinite(m["segmentation"]["dice"])
    # No sequences known for these frames (the training CSV does not name them): each frame stands alone.
    assert m["per_sequence"] == [] and m["segmentation"]["ci95_over"] == "3 frames"
    assert "too narrow" in m["segmentation"]["ci95_method"]


# PolypGen-val frames on which the bundled full model marks components scoring both under and over 0.99:
# two without a polyp (three false alarms peaking at 0.999, 0.996 and 0.83; one at 0.94) and three with one.
MIXED_SCORES = [
    "13_endocv2021_positive_222",
    "14_endocv2021_positive_864",
    "117OLCV1_100H0010",
    "12_endocv2021_positive_979",
    "161OLCV1_100S0021",
]


def test_min_score_and_the_detection_curve(polypgen, tmp_path, capsys):
    """The detection curve is the detection counted again at each minimum score, and `--min-score` gives
    that point's counts in evaluate and the same polyps in predict (the mask keeps every pixel); without
    it, the minimum score stored in the model (0.9 in the bundled full model) applies."""
    (tmp_path / "s.json").write_text(
        json.dumps({"method": "group", "seed": 0, "train": [], "val": MIXED_SCORES})
    )
    args = ("--data", polypgen, "--split", tmp_path / "s.json", "--device", "cpu")
    assert cli("evaluate", "full", *args, "--out", tmp_path / "stored") == 0
    stored = json.loads((tmp_path / "stored" / "metrics.json").read_text())
    assert stored["min_score"] == 0.9
    assert {"min_score": 0.9, **stored["detection"]} in stored["detection_curve"]
    assert cli("evaluate", "full", *args, "--min-score", "0", "--out", tmp_path / "all") == 0
    m = json.loads((tmp_path / "all" / "metrics.json").read_text())
    curve = {c["min_score"]: c for c in m["detection_curve"]}
    assert m["min_score"] == 0.0 and curve[0.0] == {"min_score": 0.0, **m["detection"]}
    assert m["detection_curve"] == stored["detection_curve"] and curve[0.9] != curve[0.0]
    fp = [c["fp"] for c in m["detection_curve"]]
    recall = [c["recall"] for c in m["detection_curve"]]
    assert fp == sorted(fp, reverse=True) and recall == sorted(recall, reverse=True)
    assert curve[0.0]["fp"] >= 4 and 1 <= curve[0.99]["fp"] < curve[0.0]["fp"]
    assert "with --min-score 0.9: recall" in capsys.readouterr().out

    assert cli("evaluate", "full", *args, "--min-score", "0.99", "--out", tmp_path / "strict") == 0
    s = json.loads((tmp_path / "strict" / "metrics.json").read_text())
    assert s["min_score"] == 0.99 and {"min_score": 0.99, **s["detection"]} == curve[0.99]
    assert s["detection_curve"] == m["detection_curve"] and s["segmentation"] == m["segmentation"]
    # Frame classification calls a frame positive on a detection: the 0.989 false alarm no longer counts.
    assert (m["classification"]["specificity"], s["classification"]["specificity"]) == (0.0, 0.5)
    assert "(components scoring >= 0.99)" in capsys.readouterr().out
    assert "Detection at other minimum scores" in (tmp_path / "strict" / "report.html").read_text()

    frame = polypgen / "images" / f"{MIXED_SCORES[0]}.jpg"
    for name, extra in (("p_all", ("--min-score", "0")), ("p_strict", ("--min-score", "0.99"))):
        assert cli("predict", "full", frame, "--out", tmp_path / name, "--device", "cpu", *extra) == 0
    polyps = [
        json.loads((tmp_path / d / f"{MIXED_SCORES[0]}.json").read_text())["polyps"]
        for d in ("p_all", "p_strict")
    ]
    assert len(polyps[0]) == 3 and polyps[1] == [p for p in polyps[0] if p["score"] >= 0.99] and polyps[1]
    masks = [(tmp_path / d / f"{MIXED_SCORES[0]}_mask.png").read_bytes() for d in ("p_all", "p_strict")]
    assert masks[0] == masks[1]


def test_bad_inputs_are_one_line_errors(tiny_run, cvc_subset, tmp_path, capsys):
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint at all")
    (tmp_path / "cut.pt").write_bytes((tiny_run / "best.pt").read_bytes()[:5000])  # a copy cut short
    ck = torch.load(tiny_run / "best.pt", weights_only=True)
    ck["arch"]["name"] = "segformer"
    torch.save(ck, tmp_path / "unknown.pt")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    binary = tmp_path / "groups.csv"
    binary.write_bytes(b"\xff\xfe\x00")
    cases = [
        (
            ["--checkpoint", str(tmp_path / "corrupt.pt"), "--data", str(cvc_subset)],
            "corrupt.pt: not a checkpoint (expected a .pt file from `polypseg train`",
        ),
        (
            ["--checkpoint", str(tmp_path / "cut.pt"), "--data", str(cvc_subset)],
            "cut.pt: corrupt or truncated checkpoint",
        ),
        (
            ["--checkpoint", str(tmp_path / "unknown.pt"), "--data", str(cvc_subset)],
            "unknown architecture 'segformer'",
        ),
        (
            ["--checkpoint", str(tiny_run / "best.pt"), "--data", str(tmp_path / "empty")],
            "no usable image/mask pairs",
        ),
        (["--checkpoint", str(tmp_path / "missing.pt"), "--data", str(cvc_subset)], "checkpoint not found"),
        (
            ["--checkpoint", str(tiny_run), "--data", str(cvc_subset)],
            f"{tiny_run} is a folder: pass a checkpoint file such as {tiny_run / 'best.pt'}",
        ),
        (
            ["--checkpoint", str(tiny_run / "best.pt"), "--data", str(cvc_subset), "--groups", "nope.csv"],
            "groups file not found: nope.csv",
        ),
        (
            ["--checkpoint", str(tiny_run / "best.pt"), "--data", str(cvc_subset), "--groups", str(binary)],
            f"cannot read groups file {binary}: 'utf-8' codec can't decode",
        ),
        (
            ["--checkpoint", str(tiny_run / "best.pt"), "--data", str(cvc_subset), "--threshold", "50"],
            "threshold must be in 0..1 (a probability), got 50.0",
        ),
        (
            ["--checkpoint", str(tiny_run / "best.pt"), "--data", str(cvc_subset), "--min-area", "-1"],
            "min_area must be >= 0 pixels",
        ),
        (
            ["--checkpoint", str(tiny_run / "best.pt"), "--data", str(cvc_subset), "--min-score", "1.5"],
            "min_score must be in 0..1 (a component's peak probability), got 1.5",
        ),
        (
            ["--checkpoint", str(tiny_run / "best.pt"), "--data", str(cvc_subset), "--prune", "5"],
            "--prune takes 1..4 for this model (0 = the mean of the heads), got 5",
        ),
        (
            [
                "--checkpoint",
                str(tiny_run / "best.pt"),
                "--data",
                str(cvc_subset),
                "--mode",
                "accurate",
                "--prune",
                "2",
            ],
            "--mode accurate averages the heads; drop --prune",
        ),
    ]
    for args, msg in cases:
        assert main(["evaluate", *args, "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_stray_mask_pixels_are_not_polyps_to_detect(cvc, tmp_path, capsys):
    """CVC-ClinicDB masks 14, 88 and 118 each hold a 1-px component beside the polyp. Counted as polyps, no
    detection could find them: recall fell by one polyp per frame. By default (0.01% of the frame) they are
    specks, counted apart; `--min-polyp-area 0` counts them as polyps again; a bad value is one line."""
    from polypseg.detection import components
    from polypseg.imageio import read_mask

    data = tmp_path / "specks"
    for d in ("images", "masks"):
        (data / d).mkdir(parents=True)
    for n in (14, 88, 118):
        areas = sorted(c.area_px for c in components(read_mask(cvc / "PNG" / "Ground Truth" / f"{n}.png"))[1])
        assert len(areas) == 2 and areas[0] == 1 and areas[1] > 4000  # a polyp and one stray pixel
        (data / "images" / f"{n}.png").symlink_to(cvc / "PNG" / "Original" / f"{n}.png")
        (data / "masks" / f"{n}.png").symlink_to(cvc / "PNG" / "Ground Truth" / f"{n}.png")
    args = ("--data", data, "--split", "all", "--device", "cpu")
    assert cli("evaluate", "full", *args, "--out", tmp_path / "default") == 0
    assert "3 stray mask component(s) under 0.01% of the frame" in capsys.readouterr().out
    assert cli("evaluate", "full", *args, "--out", tmp_path / "zero", "--min-polyp-area", "0") == 0
    a, b = (json.loads((tmp_path / k / "metrics.json").read_text()) for k in ("default", "zero"))
    assert (a["gt_specks"], b["gt_specks"]) == (3, 0)
    da, db = a["detection"], b["detection"]
    assert (db["tp"], db["fp"], db["fn"]) == (da["tp"], da["fp"], da["fn"] + 3)
    assert da["recall"] > db["recall"] and a["segmentation"]["dice"] == b["segmentation"]["dice"]
    assert "stray mask components not counted as polyps" in (tmp_path / "default" / "report.html").read_text()
    capsys.readouterr()
    assert cli("evaluate", "full", *args, "--out", tmp_path / "bad", "--min-polyp-area", "tiny") == 2
    err = capsys.readouterr().err
    assert "--min-polyp-area: expected pixels (50) or a share of the frame" in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()

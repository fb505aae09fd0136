"""Several dataset folders trained as one (--data A --data B): names, groups, splits, evaluation by part."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import TINY

from polypseg.checkpoint import load_checkpoint
from polypseg.cli import main
from polypseg.data.layouts import discover
from polypseg.data.splits import check_no_leak, load_groups, make_split

CVC_PART = {
    n: s for s, frames in {1: range(1, 9), 2: range(26, 34), 3: range(51, 59)}.items() for n in frames
}
# Another dataset whose file names repeat CVC_PART's stems (1..8): real frames of sequence 5, images/ + masks/.
OTHER_PART = {i + 1: n for i, n in enumerate(range(80, 88))}


@pytest.fixture(scope="module")
def two_datasets(cvc, tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("combined")
    a, b = base / "clinic" / "PNG", base / "other"
    for sub in ("Original", "Ground Truth"):
        (a / sub).mkdir(parents=True)
        for n in CVC_PART:
            (a / sub / f"{n}.png").symlink_to(cvc / "PNG" / sub / f"{n}.png")
    for sub, src in (("images", "Original"), ("masks", "Ground Truth")):
        (b / sub).mkdir(parents=True)
        for stem, n in OTHER_PART.items():
            (b / sub / f"{stem}.png").symlink_to(cvc / "PNG" / src / f"{n}.png")
    return base / "clinic", b


def test_frames_are_named_by_folder_and_keep_their_own_groups(two_datasets):
    a, b = two_datasets
    ds = discover([a, b])
    assert ds.names[:2] == ["clinic/1", "clinic/2"] and ds.names[-1] == "other/8"
    assert len(ds.names) == len(set(ds.names)) == len(CVC_PART) + len(OTHER_PART)
    assert ds.roots == [a, b] and ds.label == f"{a} + {b}"
    groups, source = load_groups(ds)
    group_of = dict(zip(ds.names, groups))
    # clinic keeps the built-in sequence table; other has none, so each frame is its own group
    assert group_of["clinic/1"] == group_of["clinic/8"] == "clinic/1" and group_of["clinic/26"] == "clinic/2"
    assert group_of["other/1"] == "other/1" != group_of["other/2"]
    assert source.startswith("each dataset's own groups (clinic: CVC-ClinicDB sequences")
    assert "; other: no groups given" in source
    for fold in range(3):
        split = make_split(ds.names, groups, method="kfold", folds=3, fold=fold, seed=0)
        check_no_leak(split, ds.names, groups)

        def sequences(names):
            return {CVC_PART[int(n.split("/")[1])] for n in names if n.startswith("clinic/")}

        assert not sequences(split.val) & sequences(split.train)


def test_a_groups_csv_names_frames_by_folder_or_stem(two_datasets, tmp_path):
    ds = discover(list(two_datasets))
    csv = tmp_path / "groups.csv"
    # clinic's frames by stem where the stem is its alone (9 and up), else by FOLDER/stem like other's
    rows = [f"{n},c{s}" for n, s in CVC_PART.items() if n > 8] + [f"clinic/{n}.png,c1" for n in range(1, 9)]
    rows += [f"other/{stem},video9" for stem in OTHER_PART]
    csv.write_text("frame,group\n" + "\n".join(rows) + "\n")
    groups, source = load_groups(ds, csv)
    group_of = dict(zip(ds.names, groups))
    assert group_of["clinic/1"] == "c1" and group_of["clinic/30"] == "c2" and group_of["other/3"] == "video9"
    csv.write_text("frame,group\n" + "\n".join(rows[:-1]) + "\n")
    with pytest.raises(Exception, match="no group for 1 frames, e.g. 'other/8'"):
        load_groups(ds, csv)


def test_bad_combinations_are_one_line_errors(two_datasets, cvc, tmp_path, capsys):
    a, b = two_datasets
    twin = tmp_path / "elsewhere" / "other"  # a second dataset folder named like b
    for sub in ("images", "masks"):
        (twin / sub).mkdir(parents=True)
        (twin / sub / "1.png").symlink_to(b / sub / "1.png")
    for args, message in [
        (["--data", str(a), "--data", str(a)], f"{a}: given twice"),
        (["--data", str(b), "--data", str(twin)], "two datasets are named 'other'"),
        (
            ["--data", str(a), "--data", str(b), "--images", str(b / "images"), "--masks", str(b / "masks")],
            "--images/--masks name one dataset",
        ),
    ]:
        assert main(["train", *args, "--out", str(tmp_path / "run"), "--no-progress"]) != 0
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "run").exists()


def test_train_on_two_datasets_then_evaluate_each_held_out(two_datasets, tmp_path, capsys):
    a, b = two_datasets
    run = tmp_path / "run"
    args = ["train", "--data", str(a), "--data", str(b), "--out", str(run), "--no-progress"]
    for o in [*TINY, "optim.epochs=1", "data.split_by=kfold", "data.folds=3", "data.fold=0"]:
        args += ["--set", o]
    assert main(args) == 0
    split = json.loads((run / "split.json").read_text())
    ck = load_checkpoint(run / "best.pt")
    assert set(ck["dataset"]["parts"]) == {"clinic", "other"} and ck["dataset"]["root"] == f"{a} + {b}"
    held = {
        p: sorted(n.split("/")[1] for n in split["val"] if n.startswith(f"{p}/")) for p in ("clinic", "other")
    }
    assert held["clinic"] and held["other"]

    def evaluated(*data) -> tuple[list[str], str]:
        out = tmp_path / f"eval{len(data)}-{data[0].name}"
        flags = [arg for d in data for arg in ("--data", str(d))]
        assert (
            main(
                [
                    "evaluate",
                    "--checkpoint",
                    str(run / "best.pt"),
                    *flags,
                    "--out",
                    str(out),
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        rows = (out / "per_image.csv").read_text().splitlines()[1:]
        metrics = json.loads((out / "metrics.json").read_text())
        by_dataset = {g["dataset"]: g["frames"] for g in metrics["per_dataset"]}
        assert by_dataset == (
            {"clinic": len(held["clinic"]), "other": len(held["other"])} if len(data) > 1 else {}
        )
        assert ("By dataset" in (out / "report.html").read_text()) == (len(data) > 1)
        return sorted(r.split(",")[0] for r in rows), metrics["split"]

    # each dataset alone is recognised as part of the training data: only its held-out frames count
    for part, root in (("clinic", a), ("other", b)):
        names, how = evaluated(root)
        assert names == held[part] and how.startswith("held-out frames"), (part, names, how)
    names, how = evaluated(a, b)
    assert names == sorted(split["val"]) and how.startswith("held-out frames")
    table = capsys.readouterr().out
    assert f"  clinic: {len(held['clinic'])} frames, Dice@0.5 " in table and "  other: " in table


def test_cv_over_two_datasets_pools_each_apart(two_datasets, tmp_path, capsys):
    a, b = two_datasets
    out = tmp_path / "cv"
    args = ["cv", "--data", str(a), "--data", str(b), "--out", str(out), "--no-progress"]
    for o in [*TINY, "optim.epochs=1", "data.folds=2"]:
        args += ["--set", o]
    assert main(args) == 0
    printed = capsys.readouterr().out
    r = json.loads((out / "cv.json").read_text())
    parts = r["per_dataset"]
    assert {k: v["polyp_frames"] for k, v in parts.items()} == {
        "clinic": len(CVC_PART),
        "other": len(OTHER_PART),
    }
    assert r["pooled"]["polyp_frames"] == len(CVC_PART) + len(OTHER_PART)
    # the whole is the frame-weighted mean of its parts
    whole = sum(v["dice"]["mean"] * v["polyp_frames"] for v in parts.values()) / r["pooled"]["polyp_frames"]
    assert whole == pytest.approx(r["pooled"]["dice"]["mean"])
    assert (
        f"  clinic: {len(CVC_PART)} frames with a polyp, Dice@0.5 {parts['clinic']['dice']['mean']:.4f}"
        in printed
    )


def test_resume_without_the_same_data_names_the_runs_data(two_datasets, tmp_path, capsys):
    a, b = two_datasets
    run = tmp_path / "run"
    args = ["train", "--data", str(a), "--data", str(b), "--out", str(run), "--no-progress"]
    for o in [*TINY, "optim.epochs=1"]:
        args += ["--set", o]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--data", str(a), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"it trained on {a} + {b}: resume with the same --data" in err and len(err.splitlines()) == 1, err

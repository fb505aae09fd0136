"""`polypseg compare`: two real evaluations of the same frames, paired frame by frame."""

from __future__ import annotations

import json
import statistics

import pytest
from tests.conftest import cli, csv_rows

from polypseg.cli import main


@pytest.fixture(scope="module")
def two_evals(tiny_run, cvc_subset, tmp_path_factory):
    """The tiny model on the 40 subset frames, plain and with flip TTA: two models' answers on one set."""
    root = tmp_path_factory.mktemp("cmp")
    args = ("--data", cvc_subset, "--split", "all", "--device", "cpu")
    assert cli("evaluate", tiny_run / "best.pt", *args, "--out", root / "plain") == 0
    assert cli("evaluate", tiny_run / "best.pt", *args, "--tta", "--out", root / "tta") == 0
    return root / "tta", root / "plain"


def _rows(d):
    return {r["name"]: r for r in csv_rows(d / "per_image.csv")}


def test_compare_is_the_frame_by_frame_difference(two_evals, tmp_path, capsys):
    tta, plain = two_evals
    out = tmp_path / "cmp.json"
    assert main(["compare", str(tta), str(plain), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    a, b = _rows(tta), _rows(plain)
    diff = [float(a[n]["dice"]) - float(b[n]["dice"]) for n in a]
    assert r["frames"] == r["all_frames"] == 40 and r["negatives"] == 0
    assert r["dice"]["mean"] == pytest.approx(statistics.fmean(diff))
    lo, hi = r["dice"]["ci95"]
    assert lo <= r["dice"]["mean"] <= hi and r["sequences"] == 4  # the subset's groups: 4 sequences
    m = json.loads((plain / "metrics.json").read_text())
    side = r["sides"]["baseline"]
    assert side["dice"] == pytest.approx(m["segmentation"]["dice"])
    assert side["detection"]["recall"] == pytest.approx(m["detection"]["recall"])
    assert "Dice@0.5" in printed and f"{r['dice']['mean']:+.4f}" in printed and "4 sequences" in printed
    # A model against itself: no difference, an interval of zero width.
    assert main(["compare", str(plain), str(plain)]) == 0
    assert "+0.0000 (+0.0000 to +0.0000)" in capsys.readouterr().out


def test_compare_refuses_what_it_cannot_pair(two_evals, polypgen, tmp_path, capsys):
    tta, plain = two_evals
    other = tmp_path / "pg"
    (other).mkdir()
    m = json.loads((plain / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**m, "data": str(polypgen)}))
    (other / "per_image.csv").write_text((plain / "per_image.csv").read_text())
    for args, message in (
        ([str(tta), str(other)], "these evaluations scored different data"),
        (
            [str(tta), str(tmp_path)],
            "neither an evaluate folder (metrics.json, per_image.csv) nor a cv folder",
        ),
    ):
        assert main(["compare", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1

"""Dataset discovery, validation and `polypseg data check` on real and deliberately broken data."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from polypseg.cli import main
from polypseg.data.layouts import discover
from polypseg.data.validate import validate


def _snapshot(folder):
    return sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def test_cvc_clinicdb_summary(cvc, capsys):
    before = _snapshot(cvc)
    assert main(["data", "check", str(cvc), "--json", "--strict"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["layout"], s["pairs"], s["groups"], s["errors"], s["warnings"]) == (
        "cvc-clinicdb",
        612,
        29,
        0,
        0,
    )
    assert s["negatives"] == 0 and s["image_sizes"] == {"384x288": 612}
    assert _snapshot(cvc) == before  # nothing written into the data folder


def test_polypgen_summary(polypgen, capsys):
    assert main(["data", "check", str(polypgen), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["layout"], s["pairs"], s["negatives"], s["errors"]) == ("polypgen", 150, 12, 0)


def test_pairs_by_stem_not_order(polypgen):
    ds = discover(polypgen)
    assert all(p.mask.name == f"{p.image.stem}_mask.jpg" for p in ds.pairs)


def test_explicit_folders_and_default(cvc, capsys):
    assert (
        main(
            [
                "data",
                "check",
                "--images",
                str(cvc / "PNG" / "Original"),
                "--masks",
                str(cvc / "PNG" / "Ground Truth"),
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["pairs"] == 612
    assert main(["data", "check", "--json"]) == 0  # default: $POLYPSEG_DATA/CVC-ClinicDB
    assert json.loads(capsys.readouterr().out)["pairs"] == 612


@pytest.fixture
def bad_folder(cvc, tmp_path):
    img = cv2.imread(str(cvc / "PNG" / "Original" / "1.png"))
    mask = cv2.imread(str(cvc / "PNG" / "Ground Truth" / "1.png"))
    im, ms = tmp_path / "images", tmp_path / "masks"
    im.mkdir(), ms.mkdir()
    for name in ("good1", "good2"):
        cv2.imwrite(str(im / f"{name}.png"), img), cv2.imwrite(str(ms / f"{name}.png"), mask)
    (im / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(4000) + b"\0\0\0\0IEND\xaeB`\x82")
    cv2.imwrite(str(ms / "corrupt.png"), mask)
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    (im / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    cv2.imwrite(str(ms / "truncated.png"), mask)
    cv2.imwrite(str(im / "nomask.png"), img)
    cv2.imwrite(str(im / "othersize.png"), img)
    cv2.imwrite(str(ms / "othersize.png"), cv2.resize(mask, (100, 80)))
    cv2.imwrite(str(im / "rgba.png"), cv2.cvtColor(img, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(ms / "rgba.png"), mask)
    cv2.imwrite(str(im / "deep.png"), img.astype(np.uint16) * 257)
    cv2.imwrite(str(ms / "deep.png"), mask)
    (im / "notes.txt").write_text("not an image")
    return tmp_path


def test_bad_folder_names_each_problem(bad_folder, capsys):
    before = _snapshot(bad_folder)
    assert main(["data", "check", str(bad_folder), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    every = {}
    for p in s["problems"]:
        every.setdefault(os.path.basename(p["file"]), []).append((p["severity"], p["problem"]))
    by_file = {f: problems[0] for f, problems in every.items()}
    assert by_file["corrupt.png"][0] == "error" and "decode" in by_file["corrupt.png"][1]
    assert by_file["truncated.jpg"] == ("error", "image: truncated JPEG (no end-of-image marker)")
    assert by_file["nomask.png"] == ("error", "no mask with the same name")
    assert by_file["othersize.png"][0] == "error" and "100x80" in by_file["othersize.png"][1]
    assert by_file["rgba.png"] == ("warning", "RGBA image (alpha channel dropped)")
    assert by_file["deep.png"] == ("warning", "16-bit image (converted to 8-bit)")
    assert by_file["notes.txt"][0] == "error" and "not an image" in by_file["notes.txt"][1]
    # The four usable frames are one frame four times (8-bit, 16-bit, with alpha): each is named a duplicate.
    dup = "(a duplicate frame: keep copies on one side of a split)"
    assert every["good1.png"] == [("warning", f"the same pixels as deep, good2, rgba {dup}")]
    assert every["deep.png"][1] == ("warning", f"the same pixels as good1, good2, rgba {dup}")
    assert len(every["rgba.png"]) == 2 and "corrupt.png" not in str(every["good1.png"])
    assert s["pairs"] == 4  # good1, good2, rgba, deep; the bad pairs are left out
    assert main(["data", "check", str(bad_folder), "--strict"]) == 1
    assert _snapshot(bad_folder) == before


def test_validation_keeps_good_pairs(bad_folder):
    names = sorted(p.name for p in validate(discover(bad_folder)).good)
    assert names == ["deep", "good1", "good2", "rgba"]


def test_missing_folder_is_one_line_error(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("polypseg: error: data folder not found") and err.count("\n") == 1
    # A bare word that names nothing is probably a misspelt dataset name: the known ones are listed.
    assert main(["data", "check", "cvc"]) == 2
    err = capsys.readouterr().err
    assert "one of the names cvc-clinicdb, polypgen-val" in err and err.count("\n") == 1
    assert main(["data", "check", str(tmp_path)]) == 2
    assert "no known layout" in capsys.readouterr().err


def test_validation_cache_follows_the_files(bad_folder, tmp_path, monkeypatch):
    cache = tmp_path / "vcache"
    first = validate(discover(bad_folder), cache_dir=cache)
    assert len(list((cache / "validated").glob("*.json"))) == 1

    # Unchanged files: the saved results come back without reading a single image.
    def no_reads(pair):
        raise AssertionError(f"{pair.name} was read again")

    monkeypatch.setattr("polypseg.data.validate.check_pair", no_reads)
    again = validate(discover(bad_folder), cache_dir=cache)
    assert again.problems == first.problems and [r.size for r in again.reports] == [
        r.size for r in first.reports
    ]
    monkeypatch.undo()

    # A good image replaced by a broken one is checked again and reported.
    good = bad_folder / "images" / "good1.png"
    good.write_bytes(good.read_bytes()[:3000])
    after = validate(discover(bad_folder), cache_dir=cache)
    assert sorted(p.name for p in after.good) == ["deep", "good2", "rgba"]
    assert any("good1.png" in f and s == "error" for s, f, _ in after.problems)
    # --recheck reads everything even when the cache is current.
    monkeypatch.setattr("polypseg.data.validate.check_pair", no_reads)
    with pytest.raises(AssertionError, match="read again"):
        validate(discover(bad_folder), cache_dir=cache, use_cache=False)

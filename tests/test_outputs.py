"""Every command that writes refuses an output it cannot write with one line, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from polypseg.cli import _os_error, main


def _commands(tiny_run: Path, cvc_subset: Path, out: Path) -> dict[str, list[str]]:
    frame = next((cvc_subset / "images").iterdir())
    ckpt = str(tiny_run / "best.pt")
    return {
        "train": ["train", "--data", str(cvc_subset), "--preset", "fast", "--out", str(out)],
        "cv": ["cv", "--data", str(cvc_subset), "--preset", "fast", "--out", str(out)],
        "evaluate": ["evaluate", "--checkpoint", ckpt, "--data", str(cvc_subset), "--out", str(out)],
        "predict": ["predict", "--checkpoint", ckpt, str(frame), "--out", str(out)],
        "export onnx": ["export", "--checkpoint", ckpt, "--out", str(out / "m.onnx")],
        "export safetensors": [
            "export",
            "--checkpoint",
            ckpt,
            "--format",
            "safetensors",
            "--out",
            str(out / "m.safetensors"),
        ],
        "benchmark": ["benchmark", "--checkpoint", ckpt, "--device", "cpu", "--json", str(out / "b.json")],
        "compare": ["compare", str(tiny_run), str(tiny_run), "--json", str(out / "c.json")],
    }


@pytest.mark.parametrize(
    "command",
    ["train", "cv", "evaluate", "predict", "export onnx", "export safetensors", "benchmark", "compare"],
)
def test_an_output_under_a_file_is_refused_before_any_work(tiny_run, cvc_subset, tmp_path, capsys, command):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder would have to be")
    before = sorted(tmp_path.rglob("*"))
    assert main(_commands(tiny_run, cvc_subset, blocker / "out")[command]) == 2
    err = capsys.readouterr().err
    assert err.startswith("polypseg: error: cannot write ") and err.count("\n") == 1
    assert f"{blocker} is a file, not a folder" in err
    assert sorted(tmp_path.rglob("*")) == before and blocker.read_text().startswith("a file")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("command", ["train", "evaluate", "export onnx", "benchmark"])
def test_a_folder_that_takes_no_files_is_refused_before_any_work(tiny_run, cvc_subset, capsys, command):
    """/proc refuses new files even to root, whom permission bits never stop: the check must try a write."""
    assert main(_commands(tiny_run, cvc_subset, Path("/proc/polypseg-out"))[command]) == 2
    err = capsys.readouterr().err
    assert err.startswith("polypseg: error: cannot write /proc/polypseg-out") and err.count("\n") == 1


def test_a_failed_write_names_the_target_not_its_temp_file(tmp_path):
    """A disk that fills midway (no real one here: the errors a full disk raises, inside the write) is
    reported against the file the user asked for, in one line, and no temp file stays."""
    from polypseg import atomic

    target = tmp_path / "best.pt"
    for filename in (None, "tmp"):
        with pytest.raises(OSError) as raised, atomic.replacing(target) as tmp:
            raise OSError(28, "No space left on device", None if filename is None else str(tmp))
        assert raised.value.filename == str(target)
        assert _os_error(raised.value) == f"{target}: No space left on device"
        assert list(tmp_path.iterdir()) == []
    assert _os_error(OSError(13, "Permission denied", "/data/a.png")) == "/data/a.png: Permission denied"
    assert _os_error(OSError(28, "No space left on device")) == "No space left on device"

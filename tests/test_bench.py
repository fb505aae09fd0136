"""`polypseg benchmark`: a real (tiny) run writes a table and JSON naming the device, both backends."""

from __future__ import annotations

import json

from polypseg.cli import main


def test_benchmark_table_and_json(tiny_run, tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = [
        "benchmark",
        "--checkpoint",
        str(tiny_run / "best.pt"),
        "--device",
        "cpu",
        "--height",
        "32",
        "--width",
        "48",
        "--iters",
        "2",
        "--json",
        str(out),
    ]
    assert main(args) == 0
    assert "device: CPU" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["device"].startswith("CPU") and (res["height"], res["width"]) == (32, 48)
    models = {r["model"] for r in res["rows"]}
    assert models == {"unetpp accurate"} | {f"unetpp prune L{k}" for k in (1, 2, 3, 4)}
    assert {r["backend"] for r in res["rows"]} == {"pytorch-cpu", "onnxruntime"}
    by = {(r["model"], r["backend"]): r for r in res["rows"]}
    # Pruning really removes work: head 1 has fewer parameters and FLOPs than the whole network.
    l1, full = by[("unetpp prune L1", "pytorch-cpu")], by[("unetpp accurate", "pytorch-cpu")]
    assert l1["params"] < full["params"] and l1["gflops"] < full["gflops"]
    assert all(
        r["p50_ms"] > 0 and r["p95_ms"] >= r["p50_ms"] and r["throughput_img_s"] > 0 for r in res["rows"]
    )


def test_benchmark_defaults_to_the_checkpoints_input_size(tiny_run, tmp_path):
    out = tmp_path / "bench.json"
    args = ["benchmark", "--checkpoint", str(tiny_run / "best.pt"), "--device", "cpu", "--iters", "1"]
    assert main(args + ["--no-onnx", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert (res["height"], res["width"]) == (64, 80)  # what the tiny run was trained at


def test_benchmark_bad_sizes_and_counts_are_one_line_errors(tiny_run, tmp_path, capsys):
    base = ["benchmark", "--checkpoint", str(tiny_run / "best.pt"), "--device", "cpu", "--no-onnx"]
    for extra, message in (
        (["--iters", "0"], "--iters must be at least 1, got 0"),
        (["--height", "-32"], "--height must be at least 1, got -32"),
        (["--height", "40"], "--height and --width must be multiples of 16 (four poolings), got 40x80"),
    ):
        assert main([*base, *extra, "--json", str(tmp_path / "b.json")]) == 2
        err = capsys.readouterr().err
        assert err.strip() == f"polypseg: error: {message}"
    assert not (tmp_path / "b.json").exists()


def test_benchmark_int8_rows_beside_fp32(tiny_run, cvc_subset, tmp_path, capsys):
    """--int8 times the int8 graph export writes beside PyTorch and fp32 ONNX Runtime, in one run; it is a
    CPU ONNX Runtime measure, so asking for it without ONNX is a one-line error."""
    out = tmp_path / "bench.json"
    base = ["benchmark", "--checkpoint", str(tiny_run / "best.pt"), "--device", "cpu", "--iters", "2"]
    assert main([*base, "--int8", "--data", str(cvc_subset), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["backend"] for r in rows} == {"pytorch-cpu", "onnxruntime", "ort-int8"}
    assert {r["precision"] for r in rows if r["backend"] == "ort-int8"} == {"int8"}
    assert len(rows) == 3 * 5 and all(r["device"].startswith("CPU") and r["p50_ms"] > 0 for r in rows)
    capsys.readouterr()
    assert main([*base, "--int8", "--no-onnx", "--json", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert "--int8 times ONNX Runtime on the CPU" in err and err.count("\n") == 1
    assert not (tmp_path / "b.json").exists()


def test_an_exported_onnx_file_is_timed_as_it_is(tiny_run, cvc_subset, tmp_path, capsys):
    """A deployment that has only the .onnx file can time it: its own input size and batch, one row;
    sizes or --int8 it cannot honour are one-line errors."""
    onnx_file = tmp_path / "m.onnx"
    export = ["export", "--checkpoint", str(tiny_run / "best.pt"), "--data", str(cvc_subset)]
    assert main([*export, "--out", str(onnx_file), "--dynamic-batch"]) == 0
    out = tmp_path / "bench.json"
    assert main(["benchmark", "--checkpoint", str(onnx_file), "--iters", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert (res["height"], res["width"]) == (64, 80)
    (row,) = res["rows"]
    assert row["model"] == "m.onnx" and row["backend"] == "onnxruntime" and row["gflops"] is None
    # the graph's weights: the network's, with batch norm folded into the convolutions (its affine pair
    # becomes their bias), so a little fewer
    n_params = json.loads((tiny_run / "summary.json").read_text())["params"]
    assert 0.95 * n_params < row["params"] <= n_params
    assert row["batch"] == 4 and row["p50_ms"] > 0 and row["throughput_img_s"] > 0
    capsys.readouterr()
    for extra, message in (
        (["--height", "32"], "m.onnx takes 64x80 frames; drop --height/--width"),
        (["--int8"], "--int8 quantises a PyTorch model; give an int8 .onnx file"),
    ):
        assert main(["benchmark", "--checkpoint", str(onnx_file), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1

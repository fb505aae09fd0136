"""Benchmark scripts on the CPU: step_traffic.py (the roofline of one training step: its counts against
the network's own arithmetic, and the profile of the real step), train_throughput.py's repeated,
alternating variants, determinism.py, and upsample_inference.py."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import torch
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import step_traffic  # noqa: E402

from polypseg.models import create_model  # noqa: E402


def _forward_conv_flops(width: int, size: tuple[int, int], batch: int) -> int:
    """2 * multiply-adds of every convolution in one forward pass, from the modules' shapes."""
    model = create_model("unetpp", width=width)
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total += 2 * out.numel() * mod.in_channels // mod.groups * k

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.device("meta"):
        model.to("meta")(torch.empty(batch, 3, *size), heads=True)
    return total


def test_counts_match_the_networks_arithmetic_and_bounds_are_ordered():
    counted = step_traffic.count(4, (64, 80), 2)
    fams = counted["families"]
    assert counted["params"] == sum(p.numel() for p in create_model("unetpp", width=4).parameters())
    fwd = _forward_conv_flops(4, (64, 80), 2)
    # Backward costs two forwards (input and weight gradients) except the first layer's input gradient,
    # which nothing needs: so the step's conv FLOPs lie just under three forwards.
    assert 2.9 * fwd < fams["conv"]["flop"] < 3 * fwd
    # Every map the network makes is read and written: the families of a VGG-block UNet++ all move bytes,
    # the conv's more than any elementwise family's.
    for name in ("conv", "batchnorm", "relu", "concat", "upsample", "pool", "grad-sum", "adamw"):
        assert fams[name]["read"] > 0 and fams[name]["written"] > 0, name
    assert fams["conv"]["read"] > max(f["read"] for k, f in fams.items() if k != "conv")
    b = step_traffic.bounds(fams, *step_traffic.CARDS["h200"], batch=2)["img_s_bound"]
    assert b["eager"] < b["conv+bn"] < b["conv-only"]


def test_the_seed_networks_step_costs_what_the_issue_says():
    """UNet++ width 32 at 256x256: ~207 GFLOP per image for a training step (issue 3's figure)."""
    fams = step_traffic.count(32, (256, 256), 1)["families"]
    assert 205e9 < fams["conv"]["flop"] < 209e9


def test_profile_on_the_cpu_times_every_family():
    measured, top = step_traffic.profile(torch.device("cpu"), 4, (64, 80), 2, steps=2)
    assert {"conv", "batchnorm", "upsample"} <= set(measured)
    assert all(ms > 0 for ms in measured.values())
    assert top and all(step_traffic.family(op) == fam for op, fam, _, _ in top)
    assert [o[2] for o in top] == sorted((o[2] for o in top), reverse=True)
    # A variant's step: up-sampling as matrix products leaves no bilinear kernel to time.
    measured, _ = step_traffic.profile(torch.device("cpu"), 4, (64, 80), 2, steps=2, variant="up-mm")
    assert "matmul" in measured and "upsample" not in measured


def test_throughput_repeats_alternate_and_report_medians(tmp_path):
    out = tmp_path / "tt.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--device", "cpu"]
    cmd += ["--width", "4", "--size", "32", "32", "--batch", "2", "--seconds", "0.3", "--repeat", "3"]
    cmd += ["--variants", "torch-bn,cudnn-all", "--skip", "loop,conventional", "--json", str(out)]
    # The network alone needs no data: a missing data folder must not stop it.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "POLYPSEG_DATA": str(tmp_path / "none")}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert len(r["network_alone_img_s_all"]) == 3
    assert r["network_alone_img_s"] == statistics.median(r["network_alone_img_s_all"])
    for name in ("torch-bn", "cudnn-all"):
        v = r["variants"][name]
        assert len(v["img_s_all"]) == 3 and v["img_s"] == statistics.median(v["img_s_all"]) > 0
    assert p.stdout.count("network alone, torch-bn") == 3  # one per round, between the baselines


def test_determinism_check_finds_cpu_runs_repeat(cvc_subset, tmp_path):
    """benchmarks/determinism.py trains each setting twice on real frames and compares the weights: on the
    CPU both repeat bit for bit (the GPU suite runs it where the default is expected not to)."""
    out = tmp_path / "det.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "determinism.py"), "--data", str(cvc_subset)]
    cmd += ["--device", "cpu", "--width", "4", "--size", "32", "48", "--epochs", "2", "--batch", "8"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "POLYPSEG_CACHE": str(tmp_path / "cache")}
    p = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["device"].startswith("CPU")
    for flag in ("false", "true"):
        v = r[f"deterministic_{flag}"]
        assert v["identical"] and v["max_abs_diff"] == 0 and v["tensors"] > 0 and len(v["img_s"]) == 2


def test_upsample_inference_times_both_and_restores_the_model(tmp_path, monkeypatch):
    """benchmarks/upsample_inference.py times torch's up-sampling and the matrix products side by side,
    alternating; the products run only inside its block, and compute the same output."""
    import upsample_inference

    from polypseg.models import blocks

    calls, products = [], blocks.upsample2x_matmul
    monkeypatch.setattr(blocks, "upsample2x_matmul", lambda t: calls.append(t.shape) or products(t))
    model = create_model("unetpp", width=4).eval()
    x = torch.rand(1, 3, 32, 48) * 255
    with torch.no_grad():
        ref = model(x)
        assert not calls  # inference keeps torch's kernel
        with upsample_inference.products_in_inference():
            assert torch.allclose(model(x), ref, atol=1e-4)
        assert len(calls) == 10
        assert torch.equal(model(x), ref) and len(calls) == 10  # restored
    out = tmp_path / "ui.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "upsample_inference.py"), "--device", "cpu"]
    cmd += ["--width", "4", "--size", "32", "48", "--batch", "2", "--iters", "2", "--repeat", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["device"].startswith("CPU") and r["repeat"] == 2
    for name in ("torch", "products"):
        assert len(r[name]["rounds"]) == 2 and r[name]["p50_ms"] > 0 and r[name]["throughput_img_s"] > 0
    assert r["products_speedup_batch1"] == round(r["torch"]["p50_ms"] / r["products"]["p50_ms"], 3)
    order = [ln.split()[2].rstrip(":") for ln in p.stdout.splitlines() if ln.startswith("round")]
    assert order == ["torch", "products"] * 2

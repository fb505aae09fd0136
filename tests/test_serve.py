"""The REST service on a real uvicorn server on 127.0.0.1: good and bad requests, a bounded burst, and
the web page driven in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from polypseg import Predictor

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _serve(*args: str):
    """`polypseg serve ARGS` in its own process on a free port, once /health answers: (base URL, process)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "polypseg", "serve", "--port", str(port), "--device", "cpu", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, OMP_NUM_THREADS="2"),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("server did not start: " + proc.stdout.read().decode()[-2000:])
    return base, proc


@pytest.fixture(scope="module")
def server(cvc):
    """The bundled full model behind `polypseg serve`, in its own process."""
    base, proc = _serve()
    yield base, proc
    proc.terminate()
    proc.wait(10)
    proc.stdout.close()


@pytest.fixture(scope="module")
def frame(cvc):
    return (cvc / "PNG" / "Original" / "50.png").read_bytes()


def _post(base, content, name="f.png", ctype="image/png", **params):
    return httpx.post(base + "/predict", files={"file": (name, content, ctype)}, params=params, timeout=60)


def test_health_docs_page(server):
    base, _ = server
    from polypseg.checkpoint import load_checkpoint
    from polypseg.network import bundled_checkpoint

    full = load_checkpoint(bundled_checkpoint("full"))  # what the server should be running by default
    h = httpx.get(base + "/health").json()
    assert h["status"] == "ok" and h["model"] == full["arch"]
    assert h["input"] == [full["input"]["height"], full["input"]["width"]] and h["output"] == "head L4"
    assert h["precision"] in ("fp32", "bf16 autocast")  # bf16 on a CPU with native bf16 (devices.use_bf16)
    assert "/predict" in httpx.get(base + "/openapi.json").json()["paths"]
    assert httpx.get(base + "/docs").status_code == 200
    assert 'id="drop"' in httpx.get(base + "/").text


def _health_and_answer(frame: bytes, *args: str) -> tuple[dict, dict, np.ndarray]:
    """A server of its own with `args`: its /health, its answer for `frame`, and the frame as RGB."""
    base, proc = _serve(*args)
    try:
        health, answer = httpx.get(base + "/health").json(), _post(base, frame).json()
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
    return health, answer, cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]


def test_an_ensemble_serves_the_mean_of_its_models(frame):
    """Two --checkpoint: the service runs both models and says so; its masks are the ensemble's."""
    h, r, rgb = _health_and_answer(
        frame, "--checkpoint", "full", "--checkpoint", "fast", "--min-score", "0.5"
    )
    assert h["output"] == "head L4, mean of 2 models" and h["min_score"] == 0.5
    want = Predictor.from_checkpoint(["full", "fast"], device="cpu", min_score=0.5).predict(rgb)
    assert [p["box_xyxy"] for p in r["polyps"]] == [p["box_xyxy"] for p in want.polyps] != []


def test_the_service_runs_the_model_as_evaluate_would(frame):
    """serve takes predict's and evaluate's model options (head, TTA, threshold, minimum area and score),
    says which it runs, and answers what the Predictor with the same options answers."""
    opts = dict(prune=2, tta=True, threshold=0.4, min_area=100, min_score=0.6)
    args = ["--checkpoint", "fast", "--prune", "2", "--tta", "--threshold", "0.4", "--min-area", "100"]
    h, r, rgb = _health_and_answer(frame, *args, "--min-score", "0.6")
    assert h["output"] == "head L2, flip TTA" and h["tta"] is True
    assert (h["threshold"], h["min_area"], h["min_score"]) == (0.4, "100", 0.6)
    want = Predictor.from_checkpoint("fast", device="cpu", **opts).predict(rgb).to_json()
    assert r["polyps"] == want["polyps"] and r["polyp_present_score"] == want["polyp_present_score"]


def test_predict_returns_schema_and_images(server, frame):
    base, _ = server
    r = _post(base, frame)
    assert r.status_code == 200
    j = r.json()
    assert (j["width"], j["height"], j["file"]) == (384, 288, "f.png") and j["polyps"]
    assert j["mask_png"].startswith("data:image/png;base64,") and j["overlay_png"].startswith(
        "data:image/png;base64,"
    )
    p = j["polyps"][0]
    assert set(p) == {"box_xyxy", "area_px", "score", "centroid"} and 0 < p["score"] <= 1
    strict = _post(base, frame, threshold=0.95).json()
    assert strict["threshold"] == 0.95 and sum(q["area_px"] for q in strict["polyps"]) <= sum(
        q["area_px"] for q in j["polyps"]
    )


def test_min_score_drops_low_scoring_polyps_not_pixels(server, polypgen):
    # A frame without a polyp where the bundled full model marks three components (peaks 0.999, 0.996,
    # 0.83); the model stores minimum score 0.9, which a request's min_score replaces for that request.
    base, _ = server
    jpg = (polypgen / "images" / "13_endocv2021_positive_222.jpg").read_bytes()
    every = _post(base, jpg, name="f.jpg", ctype="image/jpeg", min_score=0).json()
    stored = _post(base, jpg, name="f.jpg", ctype="image/jpeg").json()
    assert (every["min_score"], stored["min_score"]) == (0.0, 0.9) and len(every["polyps"]) == 3
    assert (
        stored["polyps"] == [p for p in every["polyps"] if p["score"] >= 0.9] and len(stored["polyps"]) == 2
    )
    assert stored["mask_png"] == every["mask_png"]  # the mask keeps every pixel above the threshold
    assert httpx.get(base + "/health").json()["min_score"] == 0.9  # the request's value was not kept
    bad = _post(base, jpg, name="f.jpg", ctype="image/jpeg", min_score=2)
    assert bad.status_code == 422 and "min_score" in bad.json()["error"]


def _bomb_png(w=60000, h=60000) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


def test_bad_requests_get_4xx_json_and_server_stays_up(server, frame):
    base, proc = server
    cases = [
        (_post(base, b"hello, not an image", "a.txt", "text/plain"), 415),
        (_post(base, b"hello, not an image", "a.png", "image/png"), 415),
        (_post(base, frame[: len(frame) // 2]), 422),
        (_post(base, _bomb_png()), 413),
        (_post(base, b""), 400),
        (httpx.post(base + "/predict", timeout=30), 422),
        (
            httpx.post(
                base + "/predict", content=b"raw bytes", headers={"content-type": "image/png"}, timeout=30
            ),
            422,
        ),
        (_post(base, frame, threshold=3), 422),
    ]
    for r, status in cases:
        assert r.status_code == status, r.text
        assert isinstance(r.json()["error"], str) and r.json()["error"]
    assert proc.poll() is None
    assert _post(base, frame).status_code == 200


def test_bounded_concurrent_burst(server, frame):
    base, proc = server
    ref = _post(base, frame).json()
    before = _rss_kb(proc.pid)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _post(base, frame), range(24)))
    assert all(r.status_code == 200 for r in results)
    assert all(r.json()["polyps"] == ref["polyps"] for r in results)
    grown_mb = (_rss_kb(proc.pid) - before) / 1024
    assert grown_mb < 300, f"server memory grew by {grown_mb:.0f} MB over the burst"


@pytest.mark.browser
def test_web_page_in_headless_chromium(server, cvc, polypgen, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    base, _ = server
    expected = _post(base, (cvc / "PNG" / "Original" / "50.png").read_bytes()).json()
    with sync_playwright() as p:
        # Playwright gives the browser a new empty profile; the flags keep Chromium off the (closed) network.
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(base + "/")
        page.set_input_files("#file", str(cvc / "PNG" / "Original" / "50.png"))
        page.wait_for_function(
            "document.getElementById('overlay').src.startsWith('data:image/png')", timeout=60000
        )
        page.wait_for_function("document.getElementById('overlay').naturalWidth > 0", timeout=10000)
        assert page.eval_on_selector("#overlay", "e => e.naturalWidth") == 384
        assert float(page.inner_text("#score")) == pytest.approx(expected["polyp_present_score"], abs=1e-3)
        rows = page.query_selector_all("#polyps tr.polyp")
        assert len(rows) == len(expected["polyps"]) >= 1
        assert rows[0].inner_text().split("\t")[1] == ", ".join(map(str, expected["polyps"][0]["box_xyxy"]))
        page.screenshot(path=str(tmp_path / "page.png"))
        # A non-image upload shows the server's error on the page; the server stays up.
        bad = tmp_path / "notes.png"
        bad.write_text("not an image")
        page.set_input_files("#file", str(bad))
        page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=20000)
        assert "not an image" in page.inner_text("#error")
        # The minimum score slider starts at the model's 0.9: two marks on a frame without a polyp, and a
        # third, scoring 0.83, once the slider is moved to 0.
        assert page.input_value("#minscore") == "0.9"
        page.set_input_files("#file", str(polypgen / "images" / "13_endocv2021_positive_222.jpg"))
        page.wait_for_function("document.querySelectorAll('#polyps tr.polyp').length == 2", timeout=60000)
        page.eval_on_selector("#minscore", "e => { e.value = '0'; e.dispatchEvent(new Event('change')); }")
        page.wait_for_function("document.querySelectorAll('#polyps tr.polyp').length == 3", timeout=60000)
        assert "minimum score 0" in page.inner_text("#status")
        browser.close()
    if os.environ.get("POLYPSEG_SCREENSHOT"):
        shutil.copy(tmp_path / "page.png", os.environ["POLYPSEG_SCREENSHOT"])
    assert json.dumps(expected)


def test_busy_port_and_bad_port_are_one_line_errors(capsys):
    from polypseg.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for args, msg in (
            (["--port", str(port)], f"cannot listen on 127.0.0.1:{port}: Address already in use"),
            (["--port", "70000"], "--port must be 0..65535, got 70000"),
        ):
            assert main(["serve", *args, "--checkpoint", "fast", "--device", "cpu"]) == 2
            err = capsys.readouterr().err
            assert msg in err and err.count("\n") == 1, err

"""`polypseg data download` against a real HTTP server on 127.0.0.1 (nothing reaches the internet)."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
import zipfile

import pytest

from polypseg.cli import main


@pytest.fixture
def server(cvc, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    with zipfile.ZipFile(site / "cvc.zip", "w") as z:
        for n in (1, 2):
            z.write(cvc / "PNG" / "Original" / f"{n}.png", f"CVC-ClinicDB/PNG/Original/{n}.png")
            z.write(cvc / "PNG" / "Ground Truth" / f"{n}.png", f"CVC-ClinicDB/PNG/Ground Truth/{n}.png")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(site), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.RequestHandlerClass.log_message = lambda *a: None
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield (
        f"http://127.0.0.1:{httpd.server_address[1]}",
        hashlib.sha256((site / "cvc.zip").read_bytes()).hexdigest(),
    )
    httpd.shutdown()


def test_download_verifies_and_unpacks(server, tmp_path, capsys):
    base, digest = server
    dest = tmp_path / "datasets"
    assert (
        main(
            [
                "data",
                "download",
                "cvc-clinicdb",
                "--url",
                f"{base}/cvc.zip",
                "--sha256",
                digest,
                "--dest",
                str(dest),
            ]
        )
        == 0
    )
    assert main(["data", "check", str(dest / "CVC-ClinicDB"), "--strict"]) == 0
    assert "pairs:      2" in capsys.readouterr().out


def test_bad_checksum_keeps_nothing(server, tmp_path, capsys):
    base, _ = server
    dest = tmp_path / "datasets"
    assert (
        main(
            [
                "data",
                "download",
                "cvc-clinicdb",
                "--url",
                f"{base}/cvc.zip",
                "--sha256",
                "0" * 64,
                "--dest",
                str(dest),
            ]
        )
        == 2
    )
    assert "checksum mismatch" in capsys.readouterr().err
    assert list(dest.iterdir()) == []
    assert (
        main(["data", "download", "cvc-clinicdb", "--url", f"{base}/missing.zip", "--dest", str(dest)]) == 2
    )
    assert "download failed" in capsys.readouterr().err
    assert main(["data", "download", "cvc-clinicdb", "--dest", str(dest)]) == 2
    assert "--url" in capsys.readouterr().err
    shutil.rmtree(dest)

"""Download a public dataset archive, verify its checksum and unpack it into the data folder.

Only for users with internet; everything else in polypseg works offline. The archive is
streamed to a temporary file, verified, unpacked into a temporary folder and only then
renamed into place, so an interrupted download leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from polypseg.errors import PolypsegError

# name -> (folder name, url or None, sha256 of the archive or None when not pinned).
# CVC-ClinicDB's owners hand it out after registration (polyp.grand-challenge.org), so no
# address is built in: pass --url to a zip copy you may use, and --sha256 to verify it.
SOURCES: dict[str, tuple[str, str | None, str | None]] = {
    "cvc-clinicdb": ("CVC-ClinicDB", None, None),
}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _safe_extract(zf: zipfile.ZipFile, dest: Path) -> None:
    root = dest.resolve()
    for info in zf.infolist():
        target = (dest / info.filename).resolve()
        if root not in target.parents and target != root:
            raise PolypsegError(f"archive member escapes the target folder: {info.filename}")
    zf.extractall(dest)


def download(
    name: str, dest_root: Path, url: str | None = None, sha256: str | None = None, timeout: float = 60
) -> Path:
    """Fetch dataset `name` into dest_root/<folder>; return that folder."""
    if name not in SOURCES:
        raise PolypsegError(f"unknown dataset {name!r}; known: {', '.join(SOURCES)}")
    folder, default_url, default_sha = SOURCES[name]
    url = url or default_url
    if not url:
        raise PolypsegError(f"{name} has no public address built in; pass --url (and --sha256 to verify it)")
    sha256 = (sha256 or default_sha or "").lower() or None
    target = dest_root / folder
    if target.exists():
        raise PolypsegError(f"{target} already exists; remove it to download again")
    dest_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_root, prefix=".download-") as tmp:
        archive = Path(tmp) / "archive"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(archive, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
        except OSError as e:
            raise PolypsegError(f"download failed from {url}: {e}") from None
        digest = sha256_of(archive)
        if sha256 and digest != sha256:
            raise PolypsegError(f"checksum mismatch: expected {sha256}, got {digest}; nothing was kept")
        if not zipfile.is_zipfile(archive):
            raise PolypsegError("downloaded file is not a zip archive; nothing was kept")
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(archive) as zf:
            _safe_extract(zf, unpacked)
        # A zip holding one top folder is unwrapped.
        entries = [p for p in unpacked.iterdir() if not p.name.startswith("__MACOSX")]
        src = entries[0] if len(entries) == 1 and entries[0].is_dir() else unpacked
        shutil.move(str(src), str(target))
    if not sha256:
        print(f"warning: no pinned checksum for {name}; downloaded archive sha256 = {digest}")
    return target

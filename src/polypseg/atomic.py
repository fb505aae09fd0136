"""Writes that lose nothing: atomic small files (a temp file beside the target, then a rename, so a kill never
leaves half a file), and output folders that are never written over unless the user says so."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from polypseg.errors import PolypsegError


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a unique temp path beside `path` to write; when the block ends well, the temp file gets the
    permissions a plain open() would give and replaces `path` in one rename; when it fails, it is removed.
    Unique, so two processes writing the same file never share a temp file. Errors name `path`, not the
    temp file, which the user never asked for."""
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        default_permissions(tmp)
        os.replace(tmp, path)
    except OSError as e:  # the temp file's, or a failed write's, which names no file: the target's
        if e.filename is None or Path(e.filename) == tmp:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=1))


def default_permissions(path: str | os.PathLike) -> None:
    """Give a temp file or folder (0600/0700 from mkstemp, mkdtemp, safetensors) the mode a plain
    open() or mkdir() would have had, before it is renamed into the user's place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


def claim_output_file(path: str | os.PathLike, overwrite: bool, inputs=()) -> Path:
    """`path` as an output file: never one of `inputs` (the file being read); refused (one-line error) if it
    exists, unless `overwrite`; its folder is created."""
    path = Path(path)
    if any(path.resolve() == Path(i).resolve() for i in inputs):
        raise PolypsegError(f"--out {path} is the input itself; choose another file")
    if path.is_dir():
        raise PolypsegError(f"{path} is a folder, not a file")
    if path.exists() and not overwrite:
        raise PolypsegError(f"{path} exists; pass --overwrite to replace it")
    check_writable(path, path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PolypsegError(f"cannot write {path}: {e.strerror}") from None
    return path


def claim_output_dir(
    path: str | os.PathLike, overwrite: bool, hint: str = "pass --overwrite to write into it"
) -> Path:
    """`path` as an output folder: refused (one-line error) if it exists and holds anything, unless `overwrite`."""
    path = Path(path)
    if path.is_file():
        raise PolypsegError(f"{path} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise PolypsegError(f"{path} exists and is not empty; {hint}")
    check_writable(path, path if path.is_dir() else path.parent)
    return path


def check_writable(path: Path, folder: Path) -> None:
    """A one-line error now, before any work, if `folder` (to hold output `path`) cannot take a new file:
    a file stands where a folder must, or its nearest existing folder refuses (read-only, no permission,
    a pseudo file system). Tried with a temp file, created and removed, since permission bits alone
    do not say it (root, read-only mounts)."""
    base = folder.absolute()
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise PolypsegError(f"cannot write {path}: {base} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".polypseg-probe-")
    except OSError as e:
        raise PolypsegError(f"cannot write {path}: {base}: {e.strerror}") from None
    os.close(fd)
    os.unlink(probe)

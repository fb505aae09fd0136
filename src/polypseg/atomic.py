"""Atomic small-file writes: a temp file beside the target, then a rename, so a kill never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a unique temp path beside `path` to write; when the block ends well, the temp file gets the
    permissions a plain open() would give and replaces `path` in one rename; when it fails, it is removed.
    Unique, so two processes writing the same file never share a temp file."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        default_permissions(tmp)
        os.replace(tmp, path)
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

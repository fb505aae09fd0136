"""The one exception type the CLI turns into a one-line message."""

from __future__ import annotations


class PolypsegError(Exception):
    """A user-facing error: bad input, missing file, wrong model. The CLI prints it on one line."""

"""The one exception type the CLI turns into a one-line message."""

from __future__ import annotations


class PolypsegError(Exception):
    """A user-facing error: bad input, missing file, wrong model. The CLI prints it on one line."""


def at_least_one(flag: str, value: int) -> int:
    """`value` if it is a whole number >= 1 (a batch size, a count of runs or repeats), else a one-line error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PolypsegError(f"{flag} must be at least 1, got {value}")
    return value

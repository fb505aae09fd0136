"""The one exception type the CLI turns into a one-line message."""

from __future__ import annotations

import re
import sys


class PolypsegError(Exception):
    """A user-facing error: bad input, missing file, wrong model. The CLI prints it on one line."""


def at_least_one(flag: str, value: int) -> int:
    """`value` if it is a whole number >= 1 (a batch size, a count of runs or repeats), else a one-line error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PolypsegError(f"{flag} must be at least 1, got {value}")
    return value


def out_of_memory(e: BaseException) -> str | None:
    """If `e` is a failed allocation (CUDA's torch.OutOfMemoryError, the CPU allocator's RuntimeError, a
    MemoryError), what it says in a few words ("ran out of memory allocating 12.0 GiB"); else None."""
    torch = sys.modules.get("torch")
    cuda = torch is not None and isinstance(e, torch.OutOfMemoryError)
    if not (cuda or isinstance(e, MemoryError) or "can't allocate memory" in str(e)):
        return None
    size = re.search(r"tried to allocate (\d+(?:\.\d+)?) ?(bytes|[KMGT]iB)", str(e), re.IGNORECASE)
    if size is None:
        return "ran out of memory"
    n, unit = size.groups()
    if unit.lower() == "bytes":
        n, unit = f"{int(n) / 2**30:.1f}", "GiB"
    return f"ran out of memory allocating {n} {unit}"

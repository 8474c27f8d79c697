"""Progress bars on long work, quiet where nobody watches them (output not a terminal, or under CI)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from tqdm.auto import tqdm


def quiet() -> bool:
    """No bars when stderr is not a terminal (a log file, a pipe), under CI (``CI`` set), or on a ``torchrun``
    process other than rank 0 (one bar per job, not one per process)."""
    return bool(os.environ.get("CI")) or not sys.stderr.isatty() or int(os.environ.get("RANK", 0)) > 0


def progress(iterable: Iterable, desc: str, total: int | None = None, unit: str = "it") -> Iterable:
    """``iterable`` with a tqdm bar on a terminal, plain otherwise."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=quiet(), leave=False)

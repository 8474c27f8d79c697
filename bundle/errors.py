"""What a user reads last when a run stops: the cause, on one line, below MONAI's wrappers.

``python -m monai.bundle run`` wraps every failure in ``RuntimeError: Failed to instantiate component ...`` or
``Failed to evaluate ConfigExpression ...``, so the bundle's own message (which file, which setting, what to do)
would sit dozens of lines above the last one. :func:`install_excepthook` keeps Python's traceback and adds one
line after it, ``error: <the innermost cause>``, with the exit status unchanged (non-zero).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType

PREFIX = "error: "
PACKAGE = Path(__file__).resolve().parent


def brief(error: BaseException, limit: int = 160) -> str:
    """A library's exception in a few words for a message of ours: its first sentence on its first line, at most
    ``limit`` characters (its type when it has no message)."""
    text = str(error).strip()
    return text.splitlines()[0].split(". ")[0][:limit] if text else type(error).__name__


def _raised_here(error: BaseException) -> bool:
    """Whether ``error`` was raised by this bundle's code (the innermost frame of its traceback is in it)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE)


def root_cause(error: BaseException) -> BaseException:
    """The cause to show: the innermost exception of ``error``'s chain that this bundle raised (its message says
    which file or setting and what to do), else the innermost one."""
    chain, seen = [error], {id(error)}
    while True:
        inner = chain[-1].__cause__ or (None if chain[-1].__suppress_context__ else chain[-1].__context__)
        if inner is None or id(inner) in seen:
            break
        chain.append(inner)
        seen.add(id(inner))
    return next((e for e in reversed(chain) if _raised_here(e)), chain[-1])


def last_line(error: BaseException) -> str:
    """``error: <message of the root cause>`` on one line (with the exception's type when it is not ours)."""
    cause = root_cause(error)
    message = " ".join(str(cause).split()) or type(cause).__name__
    if not _raised_here(cause):
        message = f"{type(cause).__name__}: {message}"
    return PREFIX + message


def _hook(previous):
    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        previous(kind, error, tb)
        if not isinstance(error, KeyboardInterrupt):
            print(last_line(error), file=sys.stderr, flush=True)

    hook.bundle_last_line = True
    return hook


def install_excepthook() -> None:
    """Print :func:`last_line` after the traceback of any uncaught exception in this process (once)."""
    if not getattr(sys.excepthook, "bundle_last_line", False):
        sys.excepthook = _hook(sys.excepthook)

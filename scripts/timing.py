"""Timing helpers shared by the benchmark scripts: best-of wall times after warm-ups, peak memory, and
alternating two implementations so that neither gains from the other's warm-up."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets the resident-set high-water mark (Linux)


def _peak_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], warmup: int, repeats: int) -> tuple[float, float]:
    """Best wall time of ``repeats`` calls after ``warmup`` calls (CPU timings fall over the first repeats), peak MB."""
    for _ in range(warmup):
        fn()
    _sync()
    _reset_peak()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - start)
    return best, _peak_mb()


def alternate(ours: Callable[[], object], theirs: Callable[[], object], warmup: int, repeats: int,
              rounds: int = 2) -> tuple[float, float]:
    """Best seconds of ours and of theirs, timed in alternating rounds after one warm-up of each."""
    best_ours = timed(ours, warmup, repeats)[0]
    best_theirs = timed(theirs, warmup, repeats)[0]
    for _ in range(rounds - 1):
        best_ours = min(best_ours, timed(ours, 0, repeats)[0])
        best_theirs = min(best_theirs, timed(theirs, 0, repeats)[0])
    return best_ours, best_theirs

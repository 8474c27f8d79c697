"""Thread counts, set on purpose and said in the log.

Two processes that each use every core of a 2-core machine slow each other far more than 2x (16x measured for two
torchrun ranks of two threads each), so a study or a training runs torch's intra-op pool at ``intra_op`` threads
(default: torch's own choice, the cores this process may use or ``OMP_NUM_THREADS``) and its inter-op pool at
``inter_op``, and the worker pools it forks (faithfulness's blurring, the verdicts' stability resamples) run one
torch and one BLAS thread per worker, never more workers than the parent has intra-op threads.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import torch
from threadpoolctl import threadpool_info, threadpool_limits

logger = logging.getLogger(__name__)

MAX_WORKERS = 2  # forked workers per pool: the judging and blurring they share scale no further on these machines


def blas_threads() -> int:
    """The most threads any BLAS library loaded in this process uses (1 when none is loaded)."""
    return max([pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"] or [1])


def pool_workers(limit: int = MAX_WORKERS) -> int:
    """Processes a worker pool forks: at most ``limit``, and never more than this process's intra-op threads (a job
    told to use one thread stays on one core)."""
    return max(1, min(limit, torch.get_num_threads()))


def configure(intra_op: int | None = None, inter_op: int | None = None) -> dict[str, int]:
    """Set this process's thread counts (``None`` keeps torch's), log them in one line, and return those in effect.

    Args:
        intra_op: threads of torch's intra-op pool (``torch.set_num_threads``), also the limit of the process's BLAS
            pools; ``None``: torch's default (the cores this process may use, or ``OMP_NUM_THREADS``).
        inter_op: threads of torch's inter-op pool; it can be set only before torch's first parallel work, so a
            different count later is an error naming the setting. ``None``: torch's default.
    """
    if intra_op is not None:
        if intra_op < 1:
            raise ValueError(f"threads#intra_op must be at least 1, got {intra_op}")
        torch.set_num_threads(intra_op)
        threadpool_limits(intra_op, user_api="blas")
    if inter_op is not None and inter_op != torch.get_num_interop_threads():
        try:
            torch.set_num_interop_threads(inter_op)
        except RuntimeError as error:
            raise RuntimeError(f"threads#inter_op {inter_op}: torch's inter-op pool already runs "
                               f"{torch.get_num_interop_threads()} threads and cannot change now ({error})") from None
    counts = {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads(),
              "blas": blas_threads(), "workers": pool_workers()}
    logger.info("threads: torch intra-op %(intra_op)d, inter-op %(inter_op)d, BLAS %(blas)d; worker pools of up to "
                "%(workers)d process(es), one torch and one BLAS thread each", counts)
    return counts


def worker_init() -> None:
    """A forked worker's threads: one for torch, one for BLAS (two forked OpenBLAS pools of two threads each on two
    cores ran 20x slower than one process)."""
    torch.set_num_threads(1)
    threadpool_limits(1)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` forked processes, each started by :func:`worker_init`."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=worker_init)

"""torch.distributed for the bundle under ``torchrun``: which process this is, its device, and the few collective
steps a sharded study needs (rank 0 first, gather to rank 0). Without a process group every function is the
single-process identity, so the same code runs under ``python -m monai.bundle run`` and under ``torchrun``."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the process that trains missing models, merges the study's records, reports and logs."""
    return rank() == 0


def device() -> torch.device:
    """This process's device: ``cuda:<LOCAL_RANK>`` where GPUs are, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def initialize(timeout_minutes: float = 720) -> torch.device:
    """Join the process group ``torchrun`` describes in the environment: NCCL on GPUs, gloo on CPUs. The timeout
    is long because the other ranks wait while rank 0 trains the models a study is missing."""
    if "RANK" not in os.environ:
        raise RuntimeError("the multi_gpu configs run under torchrun (e.g. torchrun --standalone --nproc_per_node=2 "
                           "-m monai.bundle run ...), which sets RANK, WORLD_SIZE and MASTER_ADDR; for one process "
                           "leave the multi_gpu config out")
    here = device()
    if not dist.is_initialized():
        if here.type == "cuda":
            torch.cuda.set_device(here)
        dist.init_process_group("nccl" if here.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return here


def finish() -> None:
    """Leave the process group (the ``finalize`` step of the multi_gpu configs)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (writes data, trains a model); the others run it after, finding the work done."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def gather_to_main(obj: object) -> list | None:
    """Every rank's ``obj`` in rank order on rank 0 (``None`` on the others); ``[obj]`` in one process."""
    if not active():
        return [obj]
    gathered = [None] * world_size() if is_main() else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered

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


def several_processes() -> bool:
    """Whether this process is one of several, in a process group or only launched by torchrun (``WORLD_SIZE``):
    what a one-process workflow refuses."""
    return world_size() > 1 or int(os.environ.get("WORLD_SIZE", 1)) > 1


def is_main() -> bool:
    """Rank 0: the process that trains missing models, merges the study's records, reports and logs."""
    return rank() == 0


def device() -> torch.device:
    """This process's device: ``cuda:<LOCAL_RANK>`` where GPUs are, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                      "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT")


def initialize(timeout_minutes: float = 720) -> torch.device:
    """Join the process group ``torchrun`` describes in the environment: NCCL on GPUs, gloo on CPUs.

    ``timeout_minutes`` (``distributed_timeout_minutes`` in the multi_gpu configs) bounds every collective the
    bundle starts: a rank that waits longer stops with an error naming the rank, the stage and what it waited for
    (:func:`barrier`). It is long by default because the other ranks wait while rank 0 trains a missing model.

    Args:
        timeout_minutes: the process group's timeout for every collective, in minutes (720, i.e. 12 hours, by
            default: long enough for rank 0 to train a missing model while the others wait).
    """
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


def environment_outside_the_group() -> dict[str, str]:
    """This process's environment without torchrun's variables: a child process started with it (a training that
    rank 0 runs alone) cannot join or wait on the group, as Ignite and MONAI would when they see them."""
    return {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES and not k.startswith("TORCHELASTIC_")}


@contextmanager
def waiting(stage: str, what: str) -> Iterator[None]:
    """A collective of ``stage`` that waits for ``what``: when it fails (a rank waited past the group's timeout, or
    a rank died), the error names this rank, the stage and what it waited for, as the last line a user reads."""
    try:
        yield
    except Exception as error:  # gloo raises RuntimeError, NCCL DistBackendError: both are a rank that never came
        raise TimeoutError(f"rank {rank()} of {world_size()}: {stage}: gave up waiting for {what} ({str(error)[:300]}); "
                           "if a rank failed, its own error is above; if it is only slow, raise "
                           "distributed_timeout_minutes") from error


def barrier(stage: str = "barrier", what: str = "every rank") -> None:
    if active():
        with waiting(stage, what):
            dist.barrier()


@contextmanager
def main_process_first(stage: str = "preparing") -> Iterator[None]:
    """Rank 0 runs the block first (writes data, trains a model); the others run it after, finding the work done."""
    if not is_main():
        barrier(stage, "rank 0 to finish it (it writes the data or trains the missing models first)")
    yield
    if is_main():
        barrier(stage, "the other ranks to reach the end of it")


def gather_to_main(obj: object, stage: str = "gathering the results") -> list | None:
    """Every rank's ``obj`` in rank order on rank 0 (``None`` on the others); ``[obj]`` in one process."""
    if not active():
        return [obj]
    gathered = [None] * world_size() if is_main() else None
    with waiting(stage, "every rank's share"):
        dist.gather_object(obj, gathered, dst=0)
    return gathered


class RankZeroBuffers:
    """An Ignite handler for the validation of a DDP training: when each validation starts, every rank takes rank 0's
    buffers (BatchNorm's running statistics). DDP broadcasts them only at the start of a training forward, so after
    the last training step each rank holds the statistics of its own shard, and a validation metric gathered across
    ranks would score a mix of models, not the one rank 0 saves as the checkpoint.

    Args:
        network: the module the evaluator runs (the plain network inside ``DistributedDataParallel``).
    """

    def __init__(self, network: torch.nn.Module) -> None:
        self.network = network

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine=None) -> None:
        if active():
            for buffer in self.network.buffers():
                dist.broadcast(buffer, src=0)

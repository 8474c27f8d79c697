"""torchrun without hangs: rank 0 trains a missing model alone while the others wait, and every wait has a timeout
that ends the run with an error naming the rank, the stage and what it waited for."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bundle import distributed

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def scenario(name: str, folder: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, str(ROOT / "tests" / "distributed_scenarios.py"), name, str(folder), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_rank_that_never_reaches_a_barrier_stops_the_other_with_an_error_naming_it(tmp_path):
    start = time.monotonic()
    result = scenario("late_rank", tmp_path, timeout=120)
    assert result.returncode != 0
    assert time.monotonic() - start < 60, "the 3-second timeout, not the late rank's 30 s sleep or a hang"
    assert ("TimeoutError: rank 0 of 2: preparing the data: gave up waiting for rank 0 to finish it"
            in result.stdout + result.stderr), (result.stdout + result.stderr)[-3000:]


def test_rank_0_trains_a_missing_model_alone_while_the_other_rank_waits(tmp_path):
    """The training runs Ignite's checkpoint saver, which asks torch.distributed for its rank: inside the process
    group that started a collective the waiting rank never joined (issue 28's hang). Trained in a process outside the
    group, it finishes, and both ranks go on with the same checkpoint."""
    result = scenario("rank_0_trains", tmp_path, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    checkpoint = tmp_path / "models" / "glass_box_seed0.pt"
    assert checkpoint.is_file()
    assert [(tmp_path / f"rank{r}.done").read_text() for r in (0, 1)] == [str(checkpoint)] * 2


def test_every_rank_validates_with_rank_0s_batchnorm_statistics(tmp_path):
    """DDP broadcasts buffers only at a training forward: without RankZeroBuffers each rank would validate with its
    own shard's BatchNorm statistics and the gathered metric would not be the checkpoint's."""
    import torch

    result = scenario("rank_zero_buffers", tmp_path, timeout=120)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert float(ranks[0]["1.running_mean"][0]) == 1.0 and float(ranks[0]["1.running_var"][0]) == 10.0
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])


def test_a_child_of_a_rank_sees_no_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "TORCHELASTIC_RUN_ID"):
        monkeypatch.setenv(name, "1")
    outside = distributed.environment_outside_the_group()
    assert not {"RANK", "WORLD_SIZE", "MASTER_ADDR", "TORCHELASTIC_RUN_ID"} & set(outside)
    assert outside["PATH"] == os.environ["PATH"]


def test_per_finding_refuses_torchrun_saying_what_to_run(monkeypatch):
    from bundle.findings import study_per_finding

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="run per_finding runs in one process"):
        study_per_finding(["Cardiomegaly"])


def test_calibrate_refuses_torchrun_saying_what_to_run(monkeypatch):
    from types import SimpleNamespace

    from bundle.calibration import Calibration
    from bundle.models import ModelSpec

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="calibrate runs in one process"):
        Calibration(SimpleNamespace(primary=ModelSpec("densenet121", 0))).run()

"""Freed memory kept for reuse: a pass's activations, freed and allocated again, fault no new pages."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PASSES = """
import resource, sys, torch
from bundle.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(6):  # a pass: ten 8 MiB activations, written and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    activations = [torch.ones(2 * 1024 * 1024) for _ in range(10)]
    del activations
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, *faults)
"""


TRAINING = """
import sys, torch
from bundle.allocator import keep_freed_memory
from bundle.networks import build_network
if sys.argv[1] == "keep":
    keep_freed_memory()
torch.manual_seed(0)
net = build_network("densenet121")
optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
for step in range(2):
    images, labels = torch.rand(8, 1, 64, 64), torch.tensor([0, 1] * 4)
    optimiser.zero_grad()
    torch.nn.functional.cross_entropy(net(images), labels).backward()
    optimiser.step()
print(*(float(p.double().sum()) for p in net.parameters()))
"""


def in_a_new_process(script: str, mode: str) -> list[str]:
    """What ``script`` prints in a new process (malloc's settings are the process's), split into words; glibc's own
    defaults where ``mode`` is not ``keep`` (no MALLOC_* variables, no preloaded allocator)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    result = subprocess.run([sys.executable, "-c", script, mode], cwd=ROOT, env=env, capture_output=True, text=True,
                            check=True)
    return result.stdout.split()


def page_faults_per_pass(mode: str) -> tuple[str, list[int]]:
    """Six passes: what keep_freed_memory returned (``None`` when not called) and each pass's minor page faults."""
    kept, *faults = in_a_new_process(PASSES, mode)
    return kept, [int(n) for n in faults]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings: other C libraries differ")
def test_kept_memory_is_reused_where_glibc_would_give_it_back():
    """glibc alone trims the freed 80 MiB (over twice its largest mapped block) and faults 20,480 pages in again each
    pass; kept, the passes after the second fault next to none. A pass of 80 MiB is 20,480 pages of 4 KiB."""
    kept, faults = page_faults_per_pass("keep")
    assert kept == "True"
    assert faults[0] >= 20_000 and max(faults[2:]) < 200
    _, faults = page_faults_per_pass("default")
    assert min(faults[2:]) >= 20_000


def test_kept_memory_changes_no_weight_of_a_training():
    """Where memory comes from changes no arithmetic: two training steps of DenseNet121 give bit-identical weights
    (the default study's four checkpoints were bit-identical too, docs/benchmarks.md)."""
    assert in_a_new_process(TRAINING, "keep") == in_a_new_process(TRAINING, "default")


def test_every_workflow_keeps_freed_memory_at_initialize():
    """The study, training (by its macro) and the multi-GPU study set the allocator right after threads; inference,
    which sets no threads, first."""
    from monai.bundle import ConfigParser

    step = "$bundle.allocator.keep_freed_memory()"
    for files in (["configs/evaluate.json"], ["configs/train.json"],
                  ["configs/evaluate.json", "configs/multi_gpu_evaluate.json"]):
        parser = ConfigParser()
        parser.read_config([str(ROOT / f) for f in files])
        parser.resolve_macro_and_relative_ids()  # train.json's initialize is evaluate.json's, by macro
        initialize = parser.get()["initialize"]
        assert initialize.index(step) == initialize.index("$bundle.threads.configure(**@threads)") + 1
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs/inference.json"))
    assert parser["initialize"][0] == step

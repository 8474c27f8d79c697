"""Freed memory kept for reuse: a pass's activations, freed and allocated again, fault no new pages."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PASSES = """
import ctypes, resource, sys, torch
from bundle.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):  # glibc's struct mallinfo2 (2.33 and later)
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
print(kept)
for _ in range(6):  # a pass: ten 8 MiB activations, written and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    activations = [torch.ones(2 * 1024 * 1024) for _ in range(10)]
    del activations
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, mallinfo2().fordblks // 2**20)
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


def in_new_processes(script: str, *modes: str) -> list[list[str]]:
    """What ``script`` prints in a new process per mode (malloc's settings are the process's), split into words; the
    processes run side by side on one thread each. glibc's own defaults where ``mode`` is not ``keep`` (no MALLOC_*
    variables, no preloaded allocator)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    env["OMP_NUM_THREADS"] = "1"
    running = [subprocess.Popen([sys.executable, "-c", script, mode], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for mode in modes]
    outputs = [process.communicate() for process in running]
    for process, (_, stderr) in zip(running, outputs):
        assert process.returncode == 0, stderr[-3000:]
    return [stdout.split() for stdout, _ in outputs]


def passes(words: list[str]) -> tuple[str, list[int], list[int]]:
    """Six passes: what keep_freed_memory returned (``None`` when not called), each pass's minor page faults, and the
    free memory malloc holds after each (MiB)."""
    kept, *numbers = words
    return kept, [int(n) for n in numbers[0::2]], [int(n) for n in numbers[1::2]]


GLIBC = platform.libc_ver()


@pytest.mark.skipif(GLIBC[0] != "glibc" or tuple(map(int, GLIBC[1].split(".")[:2])) < (2, 33),
                    reason="glibc's malloc settings and its mallinfo2 (2.33 and later): other C libraries differ")
def test_kept_memory_is_reused_where_glibc_would_give_it_back():
    """A new process's glibc maps blocks over 128 KiB and unmaps them when freed, so the first pass's 80 MiB are given
    back (what it does later depends on its adaptive thresholds: not asserted); kept, malloc holds them after every
    pass, and once the heap has settled (two or three passes) the last three fault next to no page in (a fault per
    4 KiB page, or per 2 MiB where the kernel backs the heap with huge pages: no lower bound is asserted)."""
    keep, default = in_new_processes(PASSES, "keep", "default")
    kept, faults, held = passes(keep)
    assert kept == "True" and min(held) >= 80 and max(faults[3:]) < 200
    kept, _, held = passes(default)
    assert kept == "None" and held[0] < 80


def test_kept_memory_changes_no_weight_of_a_training():
    """Where memory comes from changes no arithmetic: two training steps of DenseNet121 give bit-identical weights
    (the default study's four checkpoints were bit-identical too, docs/benchmarks.md)."""
    keep, default = in_new_processes(TRAINING, "keep", "default")
    assert keep == default and len(keep) > 100  # one sum per parameter tensor


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

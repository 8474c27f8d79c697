"""A study's network passes counted by kind and stage from the run itself (bundle.passes, scripts/benchmark_study.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from bundle.console import StudyProgress
from bundle.networks import build_network
from bundle.passes import PassCounter, floor_seconds, per_image_seconds

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script():
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("benchmark_study", SCRIPTS / "benchmark_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_passes_are_counted_by_stage_architecture_and_kind():
    script = _script()
    counter, seconds = PassCounter("between the stages (merging, AUCs, data)"), {}
    net = build_network("glass_box")
    outer = torch.nn.Sequential(net, torch.nn.Softmax(dim=1))  # a wrapper is not a network: one pass, not two
    images = torch.rand(3, 1, 32, 32)
    with script.staged(counter, seconds):
        with StudyProgress().stage("criterion one"):
            net.eval()
            with torch.no_grad():
                outer(images)
            torch.autograd.grad(outer(images.clone().requires_grad_(True))[:, 1].sum(), net.fc.weight)
        net.train()
        net(images[:2])
    net(images)  # after the benchmark: not counted
    assert dict(counter.images) == {("criterion one", "glass_box", "forward"): 3,
                                    ("criterion one", "glass_box", "backward"): 3,
                                    ("between the stages (merging, AUCs, data)", "glass_box", "train"): 2}
    assert counter.shapes == {"glass_box": (1, 32, 32)} and set(seconds) == {"criterion one"}
    assert StudyProgress.stage is not None and StudyProgress.stage.__qualname__ == "StudyProgress.stage"
    assert per_image_seconds("glass_box", (1, 32, 32), "forward", warmup=0, repeats=1) > 0
    assert counter.totals() == {"forward": 3, "backward": 3, "second_order": 0, "train": 2}
    assert per_image_seconds("glass_box", (1, 32, 32), "second_order", warmup=0, repeats=1) > 0
    floor, per_image = floor_seconds(counter, warmup=0, repeats=1)  # the images times each kind's per-image time
    assert set(per_image) == {"glass_box/forward", "glass_box/backward", "glass_box/train"}
    assert floor == pytest.approx(3 * per_image["glass_box/forward"] + 3 * per_image["glass_box/backward"]
                                  + 2 * per_image["glass_box/train"])
    _, one_stage = floor_seconds(counter, "criterion one", warmup=0, repeats=1)  # its own passes only
    assert set(one_stage) == {"glass_box/forward", "glass_box/backward"}

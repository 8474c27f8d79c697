"""Benchmark a whole study against its floor: the network passes it makes, counted from the run itself, each at the
best per-image time a pass of its kind reaches on this machine.

The study runs in this process through MONAI's ``run`` (the real configs) into a new output folder, so its map
cache starts empty, as a first run's does: each map is computed once and shared by the criteria that need it. A global module hook counts, per stage of the study (each training, each criterion, the outputs) and per
architecture, the images that went through a network and how: ``forward`` (no gradient), ``backward`` (forward and
backward to the input, weights frozen: the saliency methods, attacks) or ``train`` (a training step: forward,
backward to the weights and the optimiser's update). After the run, the best per-image time of each kind and
architecture is measured at batches of 8, 16 and 32 after warm-ups; a stage's floor is its images times those
times. The time spent inside the networks' forward calls is measured during the run; the rest of a stage (backward
passes, the methods' and metrics' own arithmetic: blurring and encoding for PIC, segmentation, SSIM, statistics,
I/O) is what remains. JSON after every row.

    python scripts/benchmark_study.py --json eval/benchmark_study.json            # the quick study
    python scripts/benchmark_study.py --config "['configs/evaluate.json']" --ckpt-dir models/synthetic
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.networks import build_network  # noqa: E402
from bundle.saliency.base import inference_state  # noqa: E402
from timing import timed  # noqa: E402  (scripts/timing.py, beside this script)

KINDS = ("forward", "backward", "train")


class PassCounter:
    """Images through the study's networks (modules built by ``bundle.networks``, which carry ``architecture``),
    per (stage, architecture, kind), and the seconds inside their forward calls per stage."""

    def __init__(self) -> None:
        self.stage = "between the stages (merging, AUCs, data)"
        self.images: dict = defaultdict(int)
        self.forward_seconds: dict = defaultdict(float)
        self.shapes: dict = {}
        self._started: dict = {}
        self._depth = 0

    def pre(self, module: nn.Module, args) -> None:
        if getattr(module, "architecture", None) is None or not args or not torch.is_tensor(args[0]):
            return
        self._depth += 1
        if self._depth == 1:
            self._started[id(module)] = time.perf_counter()

    def post(self, module: nn.Module, args, output) -> None:
        name = getattr(module, "architecture", None)
        if name is None or not args or not torch.is_tensor(args[0]):
            return
        self._depth -= 1
        if self._depth:
            return
        images = args[0]
        if module.training:
            kind = "train"
        elif torch.is_grad_enabled() and torch.is_tensor(output) and output.requires_grad:
            kind = "backward"
        else:
            kind = "forward"
        self.images[(self.stage, name, kind)] += images.shape[0]
        self.shapes[name] = tuple(images.shape[1:])
        self.forward_seconds[self.stage] += time.perf_counter() - self._started.pop(id(module))


@contextlib.contextmanager
def counting(counter: PassCounter, stage_seconds: dict):
    """Install the counter as a global module hook and name each study stage while it runs."""
    from bundle import console

    original = console.StudyProgress.stage

    @contextlib.contextmanager
    def stage(self, name):
        previous, counter.stage = counter.stage, name
        start = time.perf_counter()
        try:
            with original(self, name):
                yield
        finally:
            stage_seconds[name] = stage_seconds.get(name, 0.0) + time.perf_counter() - start
            counter.stage = previous

    handles = [nn.modules.module.register_module_forward_pre_hook(counter.pre),
               nn.modules.module.register_module_forward_hook(counter.post)]
    console.StudyProgress.stage = stage
    try:
        yield
    finally:
        console.StudyProgress.stage = original
        for handle in handles:
            handle.remove()


def per_image_seconds(architecture: str, shape: tuple[int, ...], kind: str, warmup: int, repeats: int) -> float:
    """Best per-image time of one pass of ``kind`` on an untrained ``architecture`` at batches of 8, 16 and 32."""
    spatial = shape[1:]
    model = build_network(architecture, spatial_dims=len(spatial), image_size=spatial[0])
    best = float("inf")
    for batch in (8, 16, 32):
        x = torch.rand(batch, *shape)
        if kind == "train":
            model.train()
            optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
            labels = torch.randint(0, 2, (batch,))

            def step():
                optimiser.zero_grad()
                nn.functional.cross_entropy(model(x), labels).backward()
                optimiser.step()

            best = min(best, timed(step, warmup, repeats)[0] / batch)
            continue
        with inference_state(model):
            if kind == "forward":
                def forward():
                    with torch.no_grad():
                        model(x)

                best = min(best, timed(forward, warmup, repeats)[0] / batch)
            else:
                def backward():
                    xi = x.clone().requires_grad_(True)
                    torch.autograd.grad(model(xi)[:, 1].sum(), xi)

                best = min(best, timed(backward, warmup, repeats)[0] / batch)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="['configs/evaluate.json','configs/quick.json']",
                        help="the study's config files, as for monai.bundle run (default: the quick study)")
    parser.add_argument("--dataset-dir", default=None, help="default: a temporary folder (the data are generated)")
    parser.add_argument("--ckpt-dir", default=None,
                        help="trained models to reuse (default: a temporary folder: every model is trained)")
    parser.add_argument("--override", nargs="*", default=[], metavar="ID=VALUE",
                        help="more config overrides, e.g. saliency#n_images=16")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="eval/benchmark_study.json")
    args = parser.parse_args()
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="benchmark_study_"))
    overrides = {"output_dir": str(work / "eval"), "dataset_dir": args.dataset_dir or str(work / "data"),
                 "ckpt_dir": args.ckpt_dir or str(work / "models")}
    for item in args.override:
        key, value = item.split("=", 1)
        overrides[key] = value
    from monai.bundle import run

    counter, stage_seconds = PassCounter(), {}
    start = time.perf_counter()
    with counting(counter, stage_seconds):
        config = ast.literal_eval(args.config) if args.config.startswith("[") else args.config
        run("evaluate", config_file=config, logging_file=str(ROOT / "configs" / "logging.conf"), **overrides)
    total = time.perf_counter() - start
    torch.set_grad_enabled(True)

    per_image = {}
    for (_, architecture, kind) in sorted({k for k in counter.images}):
        if (architecture, kind) not in per_image:
            per_image[(architecture, kind)] = per_image_seconds(architecture, counter.shapes[architecture], kind,
                                                                args.warmup, args.repeats)
    rows = []

    def save() -> None:  # after every row, so an interrupted run keeps what it measured
        out.write_text(json.dumps({"config": args.config, "threads": torch.get_num_threads(), "overrides": overrides,
                                   "per_image_seconds": {f"{a}/{k}": s for (a, k), s in per_image.items()},
                                   "rows": rows}, indent=2))

    stages = list(stage_seconds) + [s for s in dict.fromkeys(k[0] for k in counter.images) if s not in stage_seconds]
    print(f"{'stage':<46}{'measured s':>11}{'floor s':>9}{'ratio':>7}{'in forward s':>13}  passes (images)")
    for stage in stages:
        passes = {f"{a}/{k}": n for (s, a, k), n in counter.images.items() if s == stage}
        floor = sum(n * per_image[(a, k)] for (s, a, k), n in counter.images.items() if s == stage)
        measured = stage_seconds.get(stage)
        row = {"stage": stage, "measured_s": measured, "floor_s": floor,
               "ratio": measured / floor if measured and floor else None,
               "in_forward_s": counter.forward_seconds.get(stage, 0.0), "passes": passes}
        rows.append(row)
        save()
        print(f"{stage[:45]:<46}{measured or float('nan'):>11.1f}{floor:>9.1f}"
              f"{row['ratio'] or float('nan'):>7.2f}{row['in_forward_s']:>13.1f}  "
              + ", ".join(f"{k} {n}" for k, n in passes.items()), flush=True)
    floor = sum(n * per_image[(a, k)] for (_, a, k), n in counter.images.items())
    rows.append({"stage": "whole study", "measured_s": total, "floor_s": floor, "ratio": total / floor,
                 "in_forward_s": sum(counter.forward_seconds.values())})
    save()
    print(f"{'whole study':<46}{total:>11.1f}{floor:>9.1f}{total / floor:>7.2f}"
          f"{sum(counter.forward_seconds.values()):>13.1f}")
    print("per-image pass times: " + ", ".join(f"{a}/{k} {s * 1000:.1f} ms" for (a, k), s in per_image.items()))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Benchmark a whole study against its floor: the network passes it makes, counted from the run itself, each at the
best per-image time a pass of its kind reaches on this machine.

The study runs in this process through MONAI's ``run`` (the real configs) into a new output folder, so its map
cache starts empty, as a first run's does: each map is computed once and shared by the criteria that need it. A global module hook counts, per stage of the study (each training, each criterion, the outputs) and per
architecture, the images that went through a network and how: ``forward`` (no gradient), ``backward`` (forward and
backward to the input, weights frozen: the saliency methods), ``second_order`` (the maps PSC's attacks differentiate
again: forward, backward kept in the graph, and a backward through it) or ``train`` (a training step: forward,
backward to the weights and the optimiser's update). After the run, the best per-image time of each kind and
architecture is measured at batches of 8, 16 and 32 after warm-ups; a stage's floor is its images times those
times. The time spent inside the networks' forward calls is measured during the run, and so is the work besides the
passes, by kind (``bundle.passes.WORK``: PIC's blurring and encoding, XRAI's regions, the metrics' arithmetic, the
attacks' losses and steps, re-initialising and restoring weights, loading images, the statistics, the map cache's
reads and writes); a stage's ratio to its floor plus that work says what the rest costs (the passes above their best
time, the methods' own arithmetic, the work no kind names). The machine's speed moving by 10-20 % within an hour on
some machines, a probe times one uncounted pass after every stage and at the floor's timing: "speed" is a stage's
per-image time then over the floor's, "at speed" the stage's ratio to its floor scaled by it. JSON after every row.

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
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.passes import PassCounter, counting, per_image_seconds  # noqa: E402

PROBE_BATCH, PROBE_WARMUP, PROBE_REPEATS = 8, 2, 5


class SpeedProbe:
    """The machine's speed through the run: the best per-image time of one fixed pass (a forward pass of an untrained
    network of the study's first architecture, at batch 8, best of 5 after 2 warm-ups) at the end of every stage and at
    the floor's timing. This machine's speed moves by 10-20 % within an hour, so a stage's time is also read against
    its floor scaled to the speed the machine had then. The probe's network is not the study's: no counter counts it.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.spent = 0.0  # the probes' own time, taken out of the run's
        self._model: torch.nn.Module | None = None

    def __call__(self, name: str, shapes: dict[str, tuple[int, ...]]) -> None:
        """Probe after ``name``, on the first architecture of ``shapes`` (a counter's: architecture -> input shape)."""
        from bundle.networks import build_network

        start = time.perf_counter()
        architecture, shape = next(iter(shapes.items()))
        if self._model is None:
            self._model = build_network(architecture, spatial_dims=len(shape) - 1, image_size=shape[1]).eval()
            self._model.architecture = None  # not a study network: no pass counter counts it
        x, best = torch.rand(PROBE_BATCH, *shape), float("inf")
        with torch.no_grad():
            for _ in range(PROBE_WARMUP):
                self._model(x)
            for _ in range(PROBE_REPEATS):
                begin = time.perf_counter()
                self._model(x)
                best = min(best, (time.perf_counter() - begin) / PROBE_BATCH)
        self.seconds[name] = best
        self.spent += time.perf_counter() - start

    def speed(self, name: str, reference: str) -> float | None:
        """How much slower the machine was after stage ``name`` than at ``reference`` (above 1: slower)."""
        return self.seconds[name] / self.seconds[reference] if name in self.seconds and reference in self.seconds \
            else None


@contextlib.contextmanager
def staged(counter: PassCounter, stage_seconds: dict, probe: SpeedProbe | None = None):
    """Count the passes (:func:`bundle.passes.counting`) under the name of the study's stage running, and time
    each stage; with ``probe``, the machine's speed after each stage that made a pass."""
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
            if probe is not None and counter.shapes:
                probe(name, counter.shapes)

    console.StudyProgress.stage = stage
    try:
        with counting(counter):
            yield
    finally:
        console.StudyProgress.stage = original


def row(stage: str, measured: float | None, floor: float, work: dict[str, float], in_forward: float,
        passes: dict[str, int] | None = None, speed: float | None = None) -> dict:
    """One stage's row, printed: its time beside its floor, beside its floor plus the work timed apart, and (with
    ``speed``, the machine's per-image time then over its time at the floor's timing) beside its floor at that speed."""
    worked = sum(work.values())
    out = {"stage": stage, "measured_s": measured, "floor_s": floor, "ratio": measured / floor if measured and floor
           else None, "work_s": work, "ratio_to_floor_and_work": measured / (floor + worked)
           if measured and floor else None, "in_forward_s": in_forward, "speed": speed,
           "ratio_at_its_speed": measured / (floor * speed) if measured and floor and speed else None}
    if passes is not None:
        out["passes"] = passes
    nan = float("nan")
    print(f"{stage[:45]:<46}{measured or nan:>11.1f}{floor:>9.1f}{out['ratio'] or nan:>7.2f}{worked:>8.1f}"
          f"{out['ratio_to_floor_and_work'] or nan:>20.2f}{in_forward:>13.1f}{speed or nan:>7.2f}"
          f"{out['ratio_at_its_speed'] or nan:>10.2f}  "
          + "; ".join(filter(None, [", ".join(f"{k} {n}" for k, n in (passes or {}).items()),
                                    ", ".join(f"{k} {s:.1f} s" for k, s in work.items())])), flush=True)
    return out


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

    # data, merging, AUCs, statistics and the report's floor go to "between the stages"
    counter, stage_seconds, probe = PassCounter("between the stages", synchronise=True), {}, SpeedProbe()
    start = time.perf_counter()
    with staged(counter, stage_seconds, probe):
        config = ast.literal_eval(args.config) if args.config.startswith("[") else args.config
        run("evaluate", config_file=config, logging_file=str(ROOT / "configs" / "logging.conf"), **overrides)
    total = time.perf_counter() - start - probe.spent
    stage_seconds[counter.stage] = total - sum(stage_seconds.values())  # the time outside every named stage
    torch.set_grad_enabled(True)
    timing = "the floor's timing"
    probe(timing, counter.shapes)

    per_image = {}
    for (_, architecture, kind) in sorted({k for k in counter.images}):
        if (architecture, kind) not in per_image:
            per_image[(architecture, kind)] = per_image_seconds(architecture, counter.shapes[architecture], kind,
                                                                warmup=args.warmup, repeats=args.repeats)
    rows = []

    def save() -> None:  # after every row, so an interrupted run keeps what it measured
        out.write_text(json.dumps({"config": args.config, "threads": torch.get_num_threads(), "overrides": overrides,
                                   "per_image_seconds": {f"{a}/{k}": s for (a, k), s in per_image.items()},
                                   "rows": rows}, indent=2))

    stages = list(stage_seconds)  # the named stages, then the time between them
    print(f"{'stage':<46}{'measured s':>11}{'floor s':>9}{'ratio':>7}{'work s':>8}{'ratio to floor+work':>20}"
          f"{'in forward s':>13}{'speed':>7}{'at speed':>10}  passes (images); work")
    for stage in stages:
        passes = {f"{a}/{k}": n for (s, a, k), n in counter.images.items() if s == stage}
        floor = sum(n * per_image[(a, k)] for (s, a, k), n in counter.images.items() if s == stage)
        rows.append(row(stage, stage_seconds.get(stage), floor, counter.work_totals(stage),
                        counter.forward_seconds.get(stage, 0.0), passes, probe.speed(stage, timing)))
        save()
    floor = sum(n * per_image[(a, k)] for (_, a, k), n in counter.images.items())
    # the whole study at the speed of each stage, weighted by its floor
    scaled = sum(r["floor_s"] * (r["speed"] or 1.0) for r in rows)
    rows.append(row("whole study", total, floor, counter.work_totals(), sum(counter.forward_seconds.values()),
                    speed=scaled / floor if floor else None))
    save()
    print("per-image pass times: " + ", ".join(f"{a}/{k} {s * 1000:.1f} ms" for (a, k), s in per_image.items()))
    print("the probe's per-image times (" + next(iter(counter.shapes)) + " forward, batch 8): "
          + ", ".join(f"{name} {s * 1000:.1f} ms" for name, s in probe.seconds.items()))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""A study's network passes counted by kind and stage from the run itself (bundle.passes, scripts/benchmark_study.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from warm_python import run_python

from bundle.console import StudyProgress
from bundle.networks import build_network
from bundle.passes import PassCounter, best_over_batches, counting, floor_seconds, per_image_seconds, work

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script():
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("benchmark_study", SCRIPTS / "benchmark_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_report_times_a_larger_batch_only_within_its_budget():
    """The report's floor (budget_s) skips the batches whose timing would take longest, the costliest kind's largest;
    the benchmark times every batch."""
    per_image = {8: 0.16, 16: 0.17, 32: 0.10}  # seconds per image; 3 passes of 16 images: 7.7 s at 0.16
    timed = []

    def seconds_at(batch: int) -> float:
        timed.append(batch)
        return per_image[batch]

    assert best_over_batches((8, 16, 32), seconds_at, passes=3, budget_s=5.0) == 0.16 and timed == [8]
    timed.clear()
    assert best_over_batches((8, 16, 32), seconds_at, passes=3) == 0.10 and timed == [8, 16, 32]
    timed.clear()
    cheap = {8: 0.03, 16: 0.02, 32: 0.025}  # 3 x 16 x 0.03 = 1.4 s, then 3 x 32 x 0.02 = 1.9 s: both within 5 s
    assert best_over_batches((8, 16, 32), cheap.get, passes=3, budget_s=5.0) == 0.02
    # a batch is judged at the best time so far: 3 x 32 x 0.03 = 2.9 s fits a 3 s budget, at 16's 0.05 it would not
    assert best_over_batches((8, 16, 32), {8: 0.03, 16: 0.05, 32: 0.01}.get, passes=3, budget_s=3.0) == 0.01


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


def test_the_work_besides_the_passes_is_timed_apart_by_stage_and_kind():
    """bundle.passes.work: a block's wall time goes to the stage running, for every counter counting (a study's own and
    a benchmark's around it); a block inside another is the outer one's; nothing is timed when no counter counts."""
    import time

    outer, inner = PassCounter("criterion one"), PassCounter("study")
    with work("statistics"):  # no counter: nothing to time
        time.sleep(0.01)
    with counting(outer), counting(inner):
        with work("statistics"):
            time.sleep(0.05)
            with work("map_cache"):  # inside the statistics: their time, not counted twice
                time.sleep(0.02)
        outer.stage = "criterion two"
        with work("map_cache"):
            time.sleep(0.02)
        inner.paused = True
        with work("xrai_regions"):  # a paused counter times nothing
            time.sleep(0.01)
    with work("statistics"):  # the counters stopped counting
        time.sleep(0.01)
    assert set(outer.work_seconds) == {("criterion one", "statistics"), ("criterion two", "map_cache"),
                                       ("criterion two", "xrai_regions")}
    assert set(inner.work_seconds) == {("study", "statistics"), ("study", "map_cache")}
    assert 0.07 <= outer.work_seconds[("criterion one", "statistics")] == pytest.approx(
        inner.work_seconds[("study", "statistics")], abs=1e-3)
    assert outer.work_totals("criterion two").keys() == {"map_cache", "xrai_regions"}
    assert sum(outer.work_totals().values()) == pytest.approx(sum(outer.work_seconds.values()))
    with pytest.raises(ValueError, match="work must be one of"):
        work("blurring")  # when it is named, not when it runs


def test_work_in_threads_and_functions_is_counted_once_and_survives_errors():
    """A block another thread starts while one is open is part of that one's time; a decorated function is timed at
    every call, recursion included, and a block that raises is still timed."""
    import threading
    import time

    counter = PassCounter("criterion one")

    @work("map_cache")
    def read(depth: int) -> None:
        time.sleep(0.05)
        if depth:
            read(depth - 1)

    def helper() -> None:
        with work("xrai_regions"):
            time.sleep(0.05)

    with counting(counter):
        with work("statistics"):
            thread = threading.Thread(target=helper)
            thread.start()
            time.sleep(0.08)
            thread.join()
        read(2)
        with pytest.raises(RuntimeError), work("pic_blurring"):
            time.sleep(0.02)
            raise RuntimeError("a failing blur")
    seconds = counter.work_totals()
    assert set(seconds) == {"statistics", "map_cache", "pic_blurring"}  # the thread's block was the statistics' time
    assert seconds["statistics"] >= 0.08 and 0.15 <= seconds["map_cache"] < 0.25  # counted twice or more: 0.3
    assert seconds["pic_blurring"] >= 0.02 and counter._working == 0


def test_a_benchmarks_counter_waits_for_the_gpu_around_each_outermost_block_and_a_failed_wait_closes_it(monkeypatch):
    """With ``synchronise`` (the benchmark's counter), an outermost block waits for the GPU when it starts and when it
    ends, a nested one never, and a study's own counter never asks; a wait that fails (a CUDA error) still closes the
    block, or every later block would count as nested in it and go untimed."""
    import bundle.passes as passes

    waits = []
    monkeypatch.setattr(passes, "_synchronise", lambda: waits.append(1))
    with counting(PassCounter()):  # a study's own counter
        with work("metrics"):
            pass
    assert not waits
    with counting(PassCounter()), counting(PassCounter(synchronise=True)) as benchmark:
        with work("metrics"):
            with work("statistics"):
                pass
        assert len(waits) == 2

        def fail() -> None:
            raise RuntimeError("CUDA error: an illegal memory access")

        with pytest.raises(RuntimeError, match="illegal memory"):
            with work("weights"):
                monkeypatch.setattr(passes, "_synchronise", fail)
        monkeypatch.setattr(passes, "_synchronise", lambda: None)
        assert benchmark._working == 0
        with work("data"):
            pass
    assert set(benchmark.work_totals()) == {"metrics", "weights", "data"}


def test_pic_times_its_blurring_as_work_and_its_scoring_as_passes():
    """PIC's blurred images and their encoding are the faithfulness criterion's work besides its passes: timed apart
    as ``pic_blurring``, while the model's scoring of them is counted as forward passes."""
    import numpy as np

    from bundle.trust.pic import pic_measurements, random_reveal_mask

    rng = np.random.default_rng(0)
    images, maps = rng.integers(0, 256, (2, 32, 32), dtype=np.uint8), rng.random((2, 32, 32))
    counter, net = PassCounter("criterion faithfulness"), build_network("glass_box").eval()
    with counting(counter):
        info, logits = pic_measurements(net, images, maps, random_reveal_mask((32, 32)), fractions=(0.1, 0.5))
    assert set(counter.work_seconds) == {("criterion faithfulness", "pic_blurring")}
    assert counter.work_seconds[("criterion faithfulness", "pic_blurring")] > 0
    assert dict(counter.images) == {("criterion faithfulness", "glass_box", "forward"): 2 * 4} and info.shape == (2, 4)


def test_the_metrics_attacks_weights_and_data_are_timed_apart_from_the_passes():
    """The rest of a stage's work besides its passes, each under its kind and never its passes' time: the metrics'
    arithmetic (a normalisation inside an attack's step included), PSC's losses and optimisation steps, a cascade's
    re-initialised and restored weights, an engine's batches and a criterion's."""
    import time

    from ignite.engine import Engine

    from bundle.criteria.context import StudyContext
    from bundle.handlers import DataTimer
    from bundle.networks import get_architecture
    from bundle.saliency import get_method
    from bundle.saliency.differentiable import differentiable_map
    from bundle.trust.localization import localization_scores
    from bundle.trust.psc import Attack, attacked_images
    from bundle.trust.randomization import WeightRandomization
    from bundle.trust.similarity import ssim, spearman

    net, images = build_network("glass_box").eval(), torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, 8:16, 8:16] = 1.0

    def stage(name: str, run) -> PassCounter:
        with counting(PassCounter(name)) as counter:
            run()
        return counter

    maps = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(1))
    scored = stage("metrics", lambda: (ssim(maps, maps.flip(1)), spearman(maps, maps.flip(1)),
                                       localization_scores(maps, masks[:, 0], ["auprc", "iou"])))
    assert set(scored.work_totals()) == {"metrics"} and not scored.images

    grad = get_method("grad")
    attack = Attack("sensitivity", epsilon=0.05, iterations=3, lr=0.02)
    attacked = stage("psc", lambda: attacked_images(net, images, torch.ones(2, dtype=torch.long),
                                                    lambda m, x, t: differentiable_map(grad, m, x, t), attack))
    assert set(attacked.work_totals()) == {"attack_steps", "metrics"}  # the map normalised at each step: metrics
    assert attacked.images[("psc", "glass_box", "second_order")] == 2 * 3  # the passes themselves: not work

    cascade = WeightRandomization(net, get_architecture("glass_box").randomisation_blocks)
    randomised = stage("cascade", lambda: [step for step, _ in cascade.map_steps(lambda key, model: model()(images))])
    assert set(randomised.work_totals()) == {"weights"} and sum(randomised.images.values()) == 2

    class SlowImages(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> dict:
            time.sleep(0.02)
            return {"image": images[i % 2], "image_id": str(i)}

    loader = torch.utils.data.DataLoader(SlowImages(), batch_size=2)
    engine = Engine(lambda engine, batch: net(batch["image"]))
    DataTimer().attach(engine)
    trained = stage("training", lambda: engine.run(loader, max_epochs=1))
    ctx = StudyContext(primary=None, load_model=None, checkpoint_digest=None, dataloader=loader, sources={}, kinds={})
    read = stage("criterion", lambda: [ctx.image_ids(batch) for batch in ctx.study_batches(limit=3)])
    for counter, stage_name in ((trained, "training"), (read, "criterion")):
        assert set(counter.work_seconds) == {(stage_name, "data")}
        assert 0.08 <= counter.work_totals()["data"] < 0.5  # four images of 20 ms each, read in two batches
    assert sum(trained.images.values()) == 4 and not read.images


def test_a_benchmark_row_sets_the_stage_beside_its_floor_and_its_work(capsys):
    script = _script()
    row = script.row("criterion faithfulness", 405.0, 167.0, {"pic_blurring": 200.0, "map_cache": 3.0}, 179.0,
                     {"densenet121/forward": 13388})
    assert row["ratio"] == pytest.approx(405 / 167) and row["ratio_to_floor_and_work"] == pytest.approx(405 / 370)
    printed = capsys.readouterr().out
    assert "2.43   203.0                1.09" in printed
    assert printed.rstrip().endswith("densenet121/forward 13388; pic_blurring 200.0 s, map_cache 3.0 s")
    whole = script.row("whole study", 100.0, 80.0, {}, 50.0)
    assert whole["ratio_to_floor_and_work"] == pytest.approx(1.25) and "passes" not in whole
    assert whole["speed"] is None and whole["ratio_at_its_speed"] is None
    slower = script.row("criterion psc", 357.2, 304.5, {"xrai_regions": 9.9}, 190.3, speed=0.9)  # faster then
    assert slower["ratio_at_its_speed"] == pytest.approx(357.2 / (304.5 * 0.9))
    assert "   0.90      1.30  " in capsys.readouterr().out.splitlines()[-1]


def test_the_speed_probe_times_an_uncounted_pass_at_each_stage_and_reads_the_drift():
    """The benchmark's probe of the machine's speed makes passes no counter counts (the study's and the benchmark's
    pass counts stay the study's own) and sets each stage's per-image time against the floor's timing."""
    script = _script()
    probe = script.SpeedProbe()
    with counting(PassCounter()) as counter:
        for name in ("training", "the floor's timing"):
            probe(name, {"glass_box": (1, 32, 32)})
    assert not counter.images and not counter.forward_seconds and probe.spent > 0
    assert probe.speed("training", "the floor's timing") == pytest.approx(
        probe.seconds["training"] / probe.seconds["the floor's timing"])
    assert probe.speed("psc", "the floor's timing") is None  # a stage that made no pass was not probed


def test_the_study_times_its_floor_within_its_budget(monkeypatch):
    """The report's floor is timed with the study's FLOOR_BUDGET_S, which the report line then states."""
    from types import SimpleNamespace

    from bundle import passes, study

    budgets = []

    def recorded(batches, seconds_at, passes_per_batch=1, budget_s=None):
        budgets.append(budget_s)
        return best_over_batches(batches, seconds_at, passes_per_batch, budget_s)

    monkeypatch.setattr(passes, "best_over_batches", recorded)
    counter = PassCounter("criterion one")
    counter.images[("criterion one", "glass_box", "forward")] = 4
    counter.shapes["glass_box"] = (1, 32, 32)
    timing = study.SaliencyStudy._time_against_floor(SimpleNamespace(floor_batches=(8, 16), device="cpu"), counter,
                                                     start=0.0)
    assert budgets == [study.FLOOR_BUDGET_S] and timing["budget_s"] == study.FLOOR_BUDGET_S
    assert timing["floor_s"] == pytest.approx(4 * timing["per_image_s"]["glass_box/forward"])


def test_the_report_line_says_how_the_floor_was_timed():
    from bundle.report.tables import time_against_floor

    timing = {"measured_s": 130.0, "floor_s": 100.0, "batches": (8, 16, 32), "budget_s": 5.0,
              "images": {"forward": 1200, "backward": 30, "second_order": 8, "train": 0}}
    line = time_against_floor(timing)
    assert line.startswith("Time: 2 min 10 s up to this report against a floor of 1 min 40 s (1.30x): the 1,200 "
                           "forward, 30 backward, 8 second-order and 0 training images")
    assert "(timed at batches of 8, 16 and 32, a larger one where its timing takes at most 5 s);" in line
    assert "(timed at batches of 8);" in time_against_floor({**timing, "batches": (8,)})
    worked = time_against_floor({**timing, "work_s": {"pic_blurring": 215.3, "statistics": 14.04, "map_cache": 0.2}})
    assert ("(timed at batches of 8, 16 and 32, a larger one where its timing takes at most 5 s); besides its passes, "
            "PIC's blurring and encoding 3 min 35 s and the statistics 14.0 s; scripts/benchmark_study.py") in worked


def test_the_saliency_benchmark_times_as_a_studys_first_map_of_an_image(tmp_path):
    """scripts/benchmark_saliency.py keeps freed memory as a study does and keeps no XRAI regions, so every timed XRAI
    map segments its image (as a study's first map of it does); its JSON says both."""
    import json

    out = tmp_path / "saliency.json"
    ran = run_python([sys.executable, str(SCRIPTS / "benchmark_saliency.py"), "--networks", "glass_box", "--size", "32",
                      "--methods", "xrai", "grad", "--peers", "--steps-scale", "0.2", "--warmup", "0", "--repeats",
                      "1", "--batch-size", "2", "--json", str(out)], timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["keeps_freed_memory"] is True and result["xrai_kept_region_bytes"] == 0
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"xrai", "grad"} and rows["grad"]["passes_per_image"] == 1
    assert rows["xrai"]["passes_per_image"] == 2 * rows["xrai"]["params"]["n_steps"]  # IG's path, 2 references


def test_the_startup_benchmark_times_the_import_and_the_exit_frozen_and_unfrozen(tmp_path):
    """scripts/benchmark_startup.py: each variant in its own new interpreter, the frozen one with bundle's import-time
    freeze (over 10^5 objects) and the unfrozen one with none; the medians are those of its runs, the CPU named."""
    import json

    out = tmp_path / "startup.json"
    ran = run_python([sys.executable, str(SCRIPTS / "benchmark_startup.py"), "--repeats", "1", "--json", str(out)],
                     timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(out.read_text())
    (frozen,), (unfrozen,) = result["runs"]["frozen"], result["runs"]["unfrozen"]
    assert frozen["frozen_objects"] > 10**5 and unfrozen["frozen_objects"] == 0
    assert all(run[k] > 0 for run in (frozen, unfrozen) for k in ("launch_s", "import_s", "exit_s"))
    assert result["medians"]["unfrozen"] == {"import_s": unfrozen["import_s"], "exit_s": unfrozen["exit_s"]}
    assert result["exit_ratio_unfrozen_to_frozen"] == pytest.approx(unfrozen["exit_s"] / frozen["exit_s"])
    assert result["cpu"] != "unknown" and "exit: unfrozen / frozen" in ran.stdout

"""The per-epoch trust handler: its values, that it leaves training untouched, and its place in train.json."""

from __future__ import annotations

import random
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from ignite.engine import Engine
from nets import relu_net

from bundle.handlers import EpochTrust
from bundle.handlers.trust import SECONDS_KEY
from bundle.networks import build_network, randomisation_blocks_of
from bundle.saliency import get_method
from bundle.trust.localization import localization_scores
from bundle.trust.normalization import normalize_maps
from bundle.trust.similarity import ssim

ROOT = Path(__file__).resolve().parents[1]


def saliency_set(n: int = 6, size: int = 32) -> list[dict]:
    g = torch.Generator().manual_seed(5)
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        masks[i, :, 4 + i: 12 + i, 6 + 2 * i: 14 + 2 * i] = 1
    images = torch.rand(n, 1, size, size, generator=g) * 0.3 + 0.6 * masks
    ids = [f"img{i}" for i in range(n)]
    return [{"image": images[:4], "mask": masks[:4], "image_id": ids[:4]},
            {"image": images[4:], "mask": masks[4:], "image_id": ids[4:]}]


def engine_at(epoch: int) -> Engine:
    engine = Engine(lambda e, b: None)
    engine.state.epoch = epoch
    return engine


def test_metrics_are_the_trust_functions_on_the_methods_maps(tmp_path):
    net, batches = relu_net(), saliency_set()
    methods = {"grad": get_method("grad"), "gradcam": get_method("gradcam")}
    handler = EpochTrust(net, batches, methods, folder=tmp_path / "trust", model_name="net", figure_images=2)
    first = engine_at(1)
    handler(first)
    metrics = first.state.metrics
    for name, method in methods.items():
        maps = [method(net, b["image"], 1) for b in batches]
        for metric in ("auprc", "hit"):
            values = torch.cat([localization_scores(m, b["mask"], [metric], "pair", method.signed)[metric]
                                for m, b in zip(maps, batches)])
            assert metrics[f"localization/{metric}/{name}"] == pytest.approx(float(values.nanmean()), abs=1e-6)
            assert metrics[f"localization/{metric}/{name}/n"] == int((~values.isnan()).sum())
        assert f"map_drift/ssim/{name}" not in metrics  # nothing to compare with at the first evaluation
        # the logits layer re-initialised by hand, as the first cascading step does
        randomised = relu_net()
        randomised.load_state_dict(net.state_dict())
        torch.manual_seed(0)  # reset_block's seed for block index 0 of seed 0
        randomised.get_submodule(randomisation_blocks_of(net)[0][0]).reset_parameters()
        unit = torch.cat([normalize_maps(m, "pair", method.signed)[0] for m in maps])
        changed = torch.cat([normalize_maps(method(randomised, b["image"], 1), "pair", method.signed)[0]
                             for b in batches])
        expected = ssim(unit, changed).mean().item()
        assert metrics[f"logits_randomization/ssim/{name}"] == pytest.approx(expected, abs=1e-6)
        assert expected < 0.99
    assert metrics[SECONDS_KEY] > 0
    second = engine_at(2)
    handler(second)  # the weights did not change: the maps are the same as one evaluation ago
    assert second.state.metrics["map_drift/ssim/grad"] == pytest.approx(1.0, abs=1e-6)
    records = pd.read_csv(tmp_path / "trust" / "epoch_trust_records.csv")
    assert set(records.step) == {"epoch:1", "epoch:2"} and set(records.image_id) == {f"img{i}" for i in range(6)}
    assert len(records[(records.step == "epoch:1") & (records.criterion == "map_drift")]) == 0
    assert len(records[(records.step == "epoch:2") & (records.criterion == "map_drift")]) == 2 * 6
    for name in ("epoch_001_maps.png", "epoch_002_maps.png", "epoch_trust_curves.png"):
        assert (tmp_path / "trust" / name).stat().st_size > 1000


def test_it_leaves_generators_mode_weights_and_gradients_as_they_were():
    net = relu_net().train()
    for p in net.parameters():
        p.grad = torch.full_like(p, 0.25)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(11), np.random.seed(11), random.seed(11)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    handler = EpochTrust(net, saliency_set(), {"grad": get_method("grad"), "smoothgrad": get_method("smoothgrad",
                                                                                                   nt_samples=2)})
    handler(engine_at(1))
    assert net.training
    assert all(torch.equal(weights[k], v) for k, v in net.state_dict().items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.25)) and p.requires_grad for p in net.parameters())
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]


def test_interval_and_switch():
    net, batches = relu_net(), saliency_set()
    handler = EpochTrust(net, batches, {"grad": get_method("grad")}, interval=2)
    engine = engine_at(2)
    handler(engine)
    assert "localization/auprc/grad" in engine.state.metrics
    engine.state.epoch = 3
    handler(engine)  # not due: the last evaluation's values must not be logged again at this epoch
    assert not any(k.startswith(("localization/", "epoch_trust/")) for k in engine.state.metrics), engine.state.metrics
    off = Engine(lambda e, b: None)
    EpochTrust(net, batches, {"grad": get_method("grad")}, enabled=False).attach(off)
    assert not off._event_handlers or all(not handlers for handlers in off._event_handlers.values())
    assert EpochTrust(net, batches, {}, enabled="false").enabled is False  # as a command line passes it
    with pytest.raises(ValueError, match="enabled must be true or false"):
        EpochTrust(net, batches, {"grad": get_method("grad")}, enabled="maybe")
    with pytest.raises(ValueError, match="interval"):
        EpochTrust(net, batches, {"grad": get_method("grad")}, interval=0)
    with pytest.raises(ValueError, match="not a valid value"):
        EpochTrust(net, batches, {"grad": get_method("grad")}, metrics=["auprc", "iou"])


def test_logits_block_of_known_and_unknown_architectures():
    assert randomisation_blocks_of(build_network("densenet121"))[0][0] == "class_layers"
    assert randomisation_blocks_of(build_network("inception_v3"))[0][0] == "fc"
    assert [b for b, _ in randomisation_blocks_of(relu_net())] == ["6", "2", "0"]


def train(tmp: Path, data: Path, name: str, **overrides) -> None:
    """``run`` of configs/train.json in this process (the command line's own path is covered by the e2e tests)."""
    from monai.bundle import run

    run("run", config_file="configs/train.json", logging_file=False, dataset_dir=str(data),
        output_dir=str(tmp / name), ckpt_dir=str(tmp / name), synthetic={"n_images": 48, "seed": 1, "variant": "chest"},
        epochs=2, image_size=32, run_name=name, **overrides)


def test_training_with_the_handler_gives_the_same_weights_and_logs_per_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs' macros name configs/evaluate.json from the bundle folder
    data = tmp_path / "data"  # generated by the first run, read by the second
    train(tmp_path, data, "with")
    train(tmp_path, data, "without", **{"epoch_trust#enabled": False})
    with_handler = torch.load(tmp_path / "with" / "densenet121_seed0.pt", weights_only=True)
    without = torch.load(tmp_path / "without" / "densenet121_seed0.pt", weights_only=True)
    assert with_handler.keys() == without.keys()
    assert all(torch.equal(with_handler[k], without[k]) for k in without), "the handler changed training"

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'with' / 'mlruns.db'}")
    run = client.search_runs([client.get_experiment_by_name("saliency_trust_synthetic").experiment_id])[0]
    # the count, not the hit itself: a Grad-CAM with no positive evidence has no hit (NaN, not logged), as at epoch 2
    # on an Intel Xeon with AVX-512
    for key in ("localization/auprc/grad", "localization/hit/gradcam/n", "logits_randomization/ssim/grad",
                SECONDS_KEY):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
    assert [m.step for m in client.get_metric_history(run.info.run_id, "map_drift/ssim/grad")] == [2]
    records = pd.read_csv(tmp_path / "with" / "with_epoch_trust" / "epoch_trust_records.csv")
    epoch2 = records[(records.step == "epoch:2") & (records.criterion == "localization") & (records.metric == "auprc")
                     & (records.method == "grad")]
    logged = client.get_metric_history(run.info.run_id, "localization/auprc/grad")[-1].value
    assert logged == pytest.approx(epoch2.value.mean(), abs=1e-9) and len(epoch2) >= 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"epoch_001_maps.png", "epoch_002_maps.png", "epoch_trust_curves.png"} <= artifacts
    assert not (tmp_path / "without" / "without_epoch_trust").exists()

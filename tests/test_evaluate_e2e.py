"""End to end: `python -m monai.bundle run evaluate` with the quick override, then read the MLflow store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from PIL import Image

from bundle.saliency import METHODS

ROOT = Path(__file__).resolve().parents[1]
SCORED = [*METHODS, "random", "prior"]  # the default study: every method beside both baselines


def run_quick(tmp: Path) -> str:
    """`python -m monai.bundle run evaluate` with configs/quick.json, everything written under ``tmp``."""
    command = [
        sys.executable, "-m", "monai.bundle", "run", "evaluate",
        "--config_file", "['configs/evaluate.json','configs/quick.json']",
        "--output_dir", str(tmp / "eval"), "--dataset_dir", str(tmp / "data"), "--ckpt_dir", str(tmp / "models"),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return result.stdout + result.stderr


def per_image_records(tmp: Path) -> list[pd.DataFrame]:
    return [pd.read_csv(p) for p in sorted((tmp / "eval").glob("*_per_image.csv"), key=lambda p: p.stat().st_mtime)]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle_run")
    return tmp, run_quick(tmp)


def test_run_generates_data_trains_and_prints_the_table(quick_run):
    tmp, output = quick_run
    assert (tmp / "data" / "dataset.json").is_file()
    assert (tmp / "models" / "densenet121_seed0.pt").is_file()
    assert "training with" in output, "a missing checkpoint must be trained"
    for name in SCORED:
        kind = "baseline" if name in ("random", "prior") else "method"
        assert f"{name:<10} {kind:<9} auprc" in output, name


def test_mlflow_store_holds_finished_runs_with_the_metrics(quick_run):
    tmp, _ = quick_run
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp / 'eval' / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("saliency_trust")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2, [r.info.run_name for r in runs]
    by_kind = {r.info.run_name.split("_")[0]: r for r in runs}
    assert set(by_kind) == {"train", "evaluate"}
    train, evaluate = by_kind["train"], by_kind["evaluate"]
    assert train.info.status == "FINISHED" and evaluate.info.status == "FINISHED"
    assert "val_auc" in train.data.metrics and train.data.params["network"] == "densenet121"
    metrics = evaluate.data.metrics
    for method in SCORED:
        for suffix in ("", ".ci_low", ".ci_high", ".n", ".n_nan"):
            assert f"{method}.auprc{suffix}" in metrics
        assert 0.0 <= metrics[f"{method}.auprc"] <= 1.0
        assert metrics[f"{method}.auprc.n"] + metrics[f"{method}.auprc.n_nan"] == 8
    assert evaluate.data.params["method.ig"].startswith("ig(") and "n_steps=4" in evaluate.data.params["method.ig"]

    artifacts = {a.path for a in client.list_artifacts(evaluate.info.run_id)}
    gallery = client.download_artifacts(evaluate.info.run_id, next(a for a in artifacts if a.endswith("_maps.png")),
                                        str(tmp))
    with Image.open(gallery) as figure:  # one row per gallery image, a column per method and baseline
        assert figure.width > 1.3 * figure.height and figure.height > 300
    per_image_name = next(a for a in artifacts if a.endswith("_per_image.csv"))
    local = client.download_artifacts(evaluate.info.run_id, per_image_name, str(tmp))
    per_image = pd.read_csv(local)
    assert set(per_image.columns) == {"image_id", "model", "method", "test", "step", "value"}
    assert len(per_image) == len(SCORED) * 2 * 8  # methods and baselines x scores x images
    # the logged mean is the mean of the per-image records
    gradcam = per_image[(per_image.method == "gradcam") & (per_image.test == "auprc")]["value"]
    assert gradcam.mean() == pytest.approx(metrics["gradcam.auprc"], rel=1e-6)
    assert str(tmp / "eval") in client.get_experiment(experiment.experiment_id).artifact_location


def test_same_seed_same_numbers_and_cached_rerun(quick_run, tmp_path):
    """A second run from scratch reproduces every per-image value; a rerun reuses the model and the maps."""
    tmp, _ = quick_run
    run_quick(tmp_path)
    first, fresh = per_image_records(tmp)[0], per_image_records(tmp_path)[0]
    pd.testing.assert_frame_equal(first.drop(columns="image_id"), fresh.drop(columns="image_id"))
    assert list(first.image_id) == list(fresh.image_id)

    cached_maps = sorted((tmp / "eval" / "map_cache").rglob("*.npy"))
    assert len(cached_maps) == len(SCORED) * 8  # methods and baselines x images
    stamps = {p: p.stat().st_mtime_ns for p in cached_maps}
    output = run_quick(tmp)
    assert "training with" not in output, "the existing checkpoint must be reused"
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items()), "cached maps must not be recomputed"
    pd.testing.assert_frame_equal(per_image_records(tmp)[-1], first)

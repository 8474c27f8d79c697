"""MLflow conventions shared by the configs: where the store is and how runs are named."""

from __future__ import annotations

import datetime
import os
import uuid
from pathlib import Path


def sqlite_uri(output_dir: str | os.PathLike) -> str:
    """``sqlite:///<abs output_dir>/mlruns.db``, creating the folder (MLflow 3 refuses the plain file store)."""
    path = Path(output_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlruns.db'}"


def artifact_uri(output_dir: str | os.PathLike) -> str:
    """``file://`` URI of ``<output_dir>/mlruns``, where run artifacts go (MLflow's default is ./mlruns in the cwd)."""
    return (Path(output_dir).resolve() / "mlruns").as_uri()


def unique_run_name(*parts: str) -> str:
    """A descriptive run name that is unique, so MLflow never appends to an unfinished run of the same name."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return "_".join([*map(str, parts), stamp, uuid.uuid4().hex[:6]])


def train_params(
    network: str, seed: int, learning_rate: float, epochs: int, batch_size: int, image_size: int,
    dataset_name: str, dataset_dir: str,
) -> dict:
    """The hyper-parameters a training run logs as MLflow params."""
    return {
        "network": network, "seed": seed, "learning_rate": learning_rate, "epochs": epochs,
        "batch_size": batch_size, "image_size": image_size, "dataset": dataset_name,
        "dataset_dir": str(Path(dataset_dir).resolve()),
    }


def ensure_experiment(tracking_uri: str, name: str, output_dir: str | os.PathLike) -> str:
    """Id of experiment ``name``, created with its artifacts under ``<output_dir>/mlruns``."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_uri(output_dir))

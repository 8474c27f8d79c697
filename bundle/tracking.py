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


def metric_key(criterion: str, metric: str, method: str, step: str = "trained") -> str:
    """The stable MLflow metric key of a summary row: ``criterion/metric/method`` (``/step`` for derived models)."""
    key = f"{criterion}/{metric}/{method}"
    return key if step == "trained" else f"{key}/{step}"


def log_study(
    tracking_uri: str, experiment_name: str, run_name: str, output_dir: str | os.PathLike, params: dict,
    summary, verdicts, comparisons, failures, artifacts, report: str, tags: dict | None = None,
) -> str:
    """Log one finished MLflow run for a study; return its id.

    Metrics ``criterion/metric/method`` (mean) with ``/ci_low``, ``/ci_high``, ``/n``, ``/n_nan``; paired
    tests as ``.../vs_baseline/diff`` and ``.../vs_baseline/p_holm``; verdicts as tags
    ``verdict/<criterion>/<method>``, failures as ``error/<criterion>/<method>``; ``artifacts`` (files) and
    the report text as artifacts.
    """
    import math

    import mlflow

    experiment_id = ensure_experiment(tracking_uri, experiment_name, output_dir)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        values = {}
        for r in summary.itertuples(index=False):
            key = metric_key(r.criterion, r.metric, r.method, r.step)
            values |= {key: r.mean, f"{key}/ci_low": r.ci_low, f"{key}/ci_high": r.ci_high, f"{key}/n": r.n,
                       f"{key}/n_nan": r.n_nan}
        for c in comparisons.itertuples(index=False) if len(comparisons) else ():
            key = f"{metric_key(c.criterion, c.metric, c.method)}/vs_baseline"
            values |= {f"{key}/diff": c.mean_diff, f"{key}/p_value": c.p_value, f"{key}/p_holm": c.p_holm}
        mlflow.log_metrics({k: float(v) for k, v in values.items() if v is not None and not math.isnan(float(v))})
        mlflow.set_tags({**(tags or {}),
                         **{f"verdict/{v.criterion}/{v.method}": v.verdict for v in verdicts.itertuples(index=False)},
                         **{f"error/{f['criterion']}/{f['method']}": f["error"][:5000] for f in failures}})
        for path in artifacts:
            mlflow.log_artifact(str(path))
        mlflow.log_text(report, "report.txt")
        return run.info.run_id

"""MLflow conventions shared by the configs: where the store is and how runs are named."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from bundle.errors import brief


def usable_folder(path: str | os.PathLike, setting: str = "output_dir") -> Path:
    """``path`` resolved and created, after checking a file can be written in it, so a run stops before any work
    when its results could not be saved (the error names the folder and the ``setting`` to change)."""
    folder = Path(path).resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(f"{folder}: cannot write results here ({e.strerror or e}): set {setting} to a folder you "
                         "can write to") from e
    return folder


def sqlite_uri(output_dir: str | os.PathLike) -> str:
    """``sqlite:///<abs output_dir>/mlruns.db``, creating the folder (MLflow 3 refuses the plain file store).

    Args:
        output_dir: the folder that holds the store (created when missing; an error when no file can be written in it).
    """
    return f"sqlite:///{usable_folder(output_dir) / 'mlruns.db'}"


@contextlib.contextmanager
def tracking_at(tracking_uri: str) -> Iterator[None]:
    """MLflow's fluent API (``mlflow.start_run``, ``log_metrics``) pointed at ``tracking_uri`` only inside, as before
    after: ``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI``, which MONAI's ``MLFlowHandler`` prefers
    to its own ``tracking_uri``, so a training run later in this process would log into this store."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None unsets both, as they were


def check_store(tracking_uri: str) -> None:
    """Open the MLflow store at ``tracking_uri`` once, so a damaged or unreachable one stops a run before any work
    (the error names the store and what to do).

    Args:
        tracking_uri: the MLflow store to open (e.g. the ``sqlite:///`` URI of :func:`sqlite_uri`).
    """
    import mlflow

    try:
        mlflow.MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    except Exception as e:
        raise ValueError(f"{tracking_uri.removeprefix('sqlite:///')}: not a usable MLflow store ({brief(e)}): move it "
                         "away, or set local_tracking_uri to another store") from e


def artifact_uri(output_dir: str | os.PathLike) -> str:
    """``file://`` URI of ``<output_dir>/mlruns``, where run artifacts go (MLflow's default is ./mlruns in the cwd).

    Args:
        output_dir: the run's output folder, resolved to an absolute path (not created here).
    """
    return (Path(output_dir).resolve() / "mlruns").as_uri()


def unique_run_name(*parts: str) -> str:
    """A descriptive run name that is unique, so MLflow never appends to an unfinished run of the same name."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return "_".join([*map(str, parts), stamp, uuid.uuid4().hex[:6]])


def running_workflow():
    """The MONAI ``ConfigWorkflow`` whose config is being run, or None when the code was called from Python. MONAI
    gives its parser to no config expression, so the workflow is found on the call stack (the innermost one)."""
    from monai.bundle import ConfigWorkflow

    frame = sys._getframe(1)
    while frame is not None:
        workflow = frame.f_locals.get("self")
        if isinstance(workflow, ConfigWorkflow):
            return workflow
        frame = frame.f_back
    return None


def export_executed_config(path: str | os.PathLike) -> Path | None:
    """Write the config of the MONAI bundle workflow that is running (its files merged, the command line's
    overrides applied, expressions as written) to ``path``, as MONAI's ``--tracking`` does; ``None`` when no
    workflow is running (the code was called from Python)."""
    workflow = running_workflow()
    if workflow is None:
        return None
    workflow.parser.export_config_file(workflow.parser.get(), str(path))
    return Path(path)


def train_params(
    network: str, seed: int, learning_rate: float, epochs: int, batch_size: int, image_size: int,
    dataset_name: str, dataset_dir: str, permute_labels: bool = False,
) -> dict:
    """The hyper-parameters a training run logs as MLflow params.

    Args:
        network: the architecture's name (``network_name``), logged as ``network``.
        seed: the training seed.
        learning_rate: the optimiser's learning rate.
        epochs: the number of training epochs.
        batch_size: training images per batch.
        image_size: the side, in pixels, the images are resized to.
        dataset_name: the dataset's name, logged as ``dataset``.
        dataset_dir: the dataset folder, logged as an absolute path.
        permute_labels: whether the model is trained on permuted labels (the label-randomisation model).
    """
    return {
        "network": network, "seed": seed, "learning_rate": learning_rate, "epochs": epochs,
        "batch_size": batch_size, "image_size": image_size, "dataset": dataset_name,
        "dataset_dir": str(Path(dataset_dir).resolve()), "permute_labels": permute_labels,
    }


def ensure_experiment(tracking_uri: str, name: str, output_dir: str | os.PathLike) -> str:
    """Id of experiment ``name``, created with its artifacts under ``<output_dir>/mlruns``."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_uri(output_dir))


def metric_key(criterion: str, metric: str, method: str, model: str | None = None, primary: str | None = None) -> str:
    """The stable MLflow metric key of a summary row: ``criterion/metric/method``, plus ``/<model>`` for a model
    other than the one under study (e.g. the InceptionV3 of a cascading randomisation)."""
    key = f"{criterion}/{metric}/{method}"
    return key if model is None or model == primary else f"{key}/{model}"


def _step_indices(frame) -> list[int]:
    """MLflow steps of a table's rows: 0 for the trained model, else the step's position (from 1) among the
    steps of its criterion, model and metric, in the order the criterion produced them (a cascade's blocks,
    a faithfulness curve's reveal fractions)."""
    order: dict = {}
    indices = []
    for r in frame.itertuples(index=False):
        if r.step == "trained" or not isinstance(r.step, str):
            indices.append(0)
            continue
        steps = order.setdefault((r.criterion, r.model, r.metric), [])
        if r.step not in steps:
            steps.append(r.step)
        indices.append(steps.index(r.step) + 1)
    return indices


def log_study(
    tracking_uri: str, experiment_name: str, run_name: str, output_dir: str | os.PathLike, params: dict,
    summary, verdicts, comparisons, failures, artifacts, report: str, tags: dict | None = None,
    primary: str | None = None, extra_metrics: dict | None = None, children: list[str] | None = None,
) -> str:
    """Log one finished MLflow run for a study; return its id.

    Metrics ``criterion/metric/method`` (mean) with ``/ci_low``, ``/ci_high``, ``/n``, ``/n_nan``; a derived
    model's steps (a cascade's blocks) under the same key with the step's position as the MLflow step;
    tests as ``.../vs_baseline/diff``, ``/p_value`` and ``/p_holm``; verdicts as tags
    ``verdict/<criterion>/<method>``, failures as ``error/<criterion>/<method>``; ``extra_metrics`` as they
    are; ``artifacts`` (files) and the report text as artifacts. The runs named in ``children`` (the trainings
    this study ran) become nested runs of this one.
    """
    import math
    from collections import defaultdict

    import mlflow

    experiment_id = ensure_experiment(tracking_uri, experiment_name, output_dir)
    by_step: dict[int, dict] = defaultdict(dict)

    def add(step: int, values: dict) -> None:
        clash = sorted(k for k in values if k in by_step[step])
        if clash:  # two rows under one key and step would silently overwrite each other
            raise RuntimeError(f"MLflow metric keys logged twice at step {step}: {clash[:5]}")
        by_step[step].update(values)

    for r, step in zip(summary.itertuples(index=False), _step_indices(summary)):
        key = metric_key(r.criterion, r.metric, r.method, r.model, primary)
        add(step, {key: r.mean, f"{key}/ci_low": r.ci_low, f"{key}/ci_high": r.ci_high, f"{key}/n": r.n,
                   f"{key}/n_nan": r.n_nan})
    if len(comparisons):
        for c, step in zip(comparisons.itertuples(index=False), _step_indices(comparisons.assign(
                model=comparisons.get("model", primary), step=comparisons.get("step", "trained")))):
            model = getattr(c, "model", None)
            key = metric_key(c.criterion, c.metric, c.method, model if isinstance(model, str) else None, primary)
            key += {"weak": "/vs_threshold", "strong": "/vs_readers"}.get(getattr(c, "test", None), "/vs_baseline")
            add(step, {f"{key}/diff": c.mean_diff, f"{key}/p_value": c.p_value, f"{key}/p_holm": c.p_holm})
    add(0, extra_metrics or {})
    with tracking_at(tracking_uri), mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        for step, values in sorted(by_step.items()):
            mlflow.log_metrics({k: float(v) for k, v in values.items() if v is not None and not math.isnan(float(v))},
                               step=step)
        mlflow.set_tags({**(tags or {}),
                         **{f"verdict/{v.criterion}/{v.method}": v.verdict for v in verdicts.itertuples(index=False)},
                         **{f"stability/{v.criterion}/{v.method}": f"{v.stability:.3f}"
                            for v in verdicts.itertuples(index=False) if math.isfinite(getattr(v, "stability", math.nan))},

                         **{f"error/{f['criterion']}/{f['method']}": f["error"][:5000] for f in failures}})
        for path in artifacts:
            mlflow.log_artifact(str(path))
        mlflow.log_text(report, "report.txt")
        client = mlflow.MlflowClient(tracking_uri)
        for name in children or ():
            for child in client.search_runs([experiment_id], filter_string=f"attributes.run_name = '{name}'"):
                client.set_tag(child.info.run_id, "mlflow.parentRunId", run.info.run_id)
        return run.info.run_id


def metric_name(text: str) -> str:
    """``text`` with every character MLflow refuses in a metric key (``+``, ``:``, ``@``, ...) replaced by ``_``."""
    return re.sub(r"[^\w.\- /]", "_", text)


def calibration_metrics(record: dict) -> dict[str, float]:
    """MLflow metrics of a calibration (``bundle.calibration``): per criterion ``calibration/<criterion>/<measure>``
    (``false_pass_rate``, ``false_pass_high``, ``power``, ``power_low``, ``calibrated``, and per graded control
    ``spearman/<control>`` and ``resolution/<control>``), and per control ``calibration/<criterion>/<control>/
    pass_rate``. Values that are not finite (a resolution beyond the last level) are left out."""
    import math

    values = {}
    for row in record.get("criteria", []):
        for measure, value in row.items():
            if measure not in ("criterion", "why") and value is not None:
                values[f"calibration/{row['criterion']}/{measure.replace(':', '/')}"] = float(value)
    for row in record.get("table", []):
        values[f"calibration/{row['criterion']}/{row['label']}/pass_rate"] = float(row["pass_rate"])
    return {metric_name(k): v for k, v in values.items() if math.isfinite(v)}


def log_calibration(tracking_uri: str, experiment_name: str, run_name: str, output_dir: str | os.PathLike,
                    record: dict, artifacts: list, report: str) -> str:
    """Log a calibration as one MLflow run of the study's experiment: its settings as params, its measures as
    metrics (:func:`calibration_metrics`), its tables and report as artifacts; return the run's id."""
    import mlflow

    experiment_id = ensure_experiment(tracking_uri, experiment_name, output_dir)
    params = {k: record[k] for k in ("draws", "power_target", "family", "seed", "noise_levels", "shift_fractions",
                                     "glass_box", "seconds")}
    params.update({f"criterion.{name}": setting for name, setting in record["settings"].items()})
    with tracking_at(tracking_uri), mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        mlflow.log_metrics(calibration_metrics(record))
        mlflow.set_tags({"calibration": "yes", **{f"calibrated/{c['criterion']}": "yes" if c["calibrated"] else "no"
                                                 for c in record["criteria"]}})
        for path in artifacts:
            mlflow.log_artifact(str(path))
        mlflow.log_text(report, "calibration.txt")
        return run.info.run_id

"""Copy runs from the local MLflow store to a tracking server: every run is logged locally first (a SQLite file
next to the results, which a network cannot break), then mirrored, now or later with ``scripts/log_to_mlflow.py``.

A live run and a later one go through the same :func:`mirror_runs`, so what reaches the server is the same
either way: params, every metric's history (value, step, timestamp), tags, artifacts, run name, times, status,
and the parent of a nested run. A mirrored run is tagged in the local store with the server's run id, so it is
never copied twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
BATCH = 1000  # MLflow's log_batch takes at most 1000 metrics, 100 params and 100 tags per call


def mirror_tag(target_uri: str) -> str:
    """The local tag that holds a run's id on ``target_uri`` once mirrored (tag keys cannot hold a URI)."""
    return "mirrored_to/" + hashlib.sha256(target_uri.encode()).hexdigest()[:12]


def reachable(target_uri: str, timeout: float = 5.0) -> str | None:
    """``None`` when the tracking server answers its health check, else why not (one line)."""
    if not target_uri.startswith(("http://", "https://")):
        return None  # another local store: nothing to reach
    import requests

    try:
        response = requests.get(target_uri.rstrip("/") + "/health", timeout=timeout)
        return None if response.ok else f"health check answered {response.status_code}"
    except requests.RequestException as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _copy_run(source, target, run, experiment_id: str, parent: str | None, mark: str) -> str:
    """One finished run from ``source`` to ``target`` (clients); returns its id there."""
    from mlflow.entities import Metric, Param, RunTag

    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mirrored_to/") and k != PARENT_TAG}
    if parent is not None:
        tags[PARENT_TAG] = parent
    copy = target.create_run(experiment_id, start_time=run.info.start_time, tags=tags, run_name=run.info.run_name)
    run_id = copy.info.run_id
    params = [Param(k, v) for k, v in run.data.params.items()]
    metrics = [Metric(m.key, m.value, m.timestamp, m.step) for key in run.data.metrics
               for m in source.get_metric_history(run.info.run_id, key)]
    for chunk in _chunks(params, 100):
        target.log_batch(run_id, params=chunk)
    for chunk in _chunks(metrics, BATCH):
        target.log_batch(run_id, metrics=chunk)
    with tempfile.TemporaryDirectory() as folder:
        if source.list_artifacts(run.info.run_id):
            local = source.download_artifacts(run.info.run_id, "", folder)
            target.log_artifacts(run_id, local)
    target.set_terminated(run_id, status=run.info.status, end_time=run.info.end_time)
    source.set_tag(run.info.run_id, mark, run_id)
    target.log_batch(run_id, tags=[RunTag("mirrored_from", run.info.run_id)])
    return run_id


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow prints two links per run it ends on a server and a progress bar per artifact download: copying the
    runs of a study is one line of ours (:func:`mirror_or_explain`), not two per run."""
    quiet = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    before = {name: os.environ.get(name) for name in quiet}
    os.environ.update(quiet)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def mirror_runs(source_uri: str, target_uri: str, run_ids: Sequence[str] | None = None) -> dict[str, str]:
    """Copy the finished, not yet mirrored runs of ``source_uri`` (all, or ``run_ids``) to ``target_uri``, parents
    before their children, into experiments of the same names; returns {local run id: server run id}."""
    with _quiet_mlflow():
        return _mirror_runs(source_uri, target_uri, run_ids)


def _mirror_runs(source_uri: str, target_uri: str, run_ids: Sequence[str] | None) -> dict[str, str]:
    import mlflow

    source, target = mlflow.MlflowClient(source_uri), mlflow.MlflowClient(target_uri)
    mark = mirror_tag(target_uri)
    copied: dict[str, str] = {}
    for experiment in source.search_experiments():
        runs = [r for r in source.search_runs([experiment.experiment_id], max_results=50000)
                if r.info.status != "RUNNING" and (run_ids is None or r.info.run_id in run_ids)]
        known = {r.info.run_id: r.data.tags.get(mark) for r in runs}
        todo = [r for r in runs if not known[r.info.run_id]]
        if not todo:
            continue
        remote = target.get_experiment_by_name(experiment.name)
        experiment_id = remote.experiment_id if remote else target.create_experiment(experiment.name)
        todo.sort(key=lambda r: PARENT_TAG in r.data.tags)  # parents (no parent tag) first
        for run in todo:
            parent = run.data.tags.get(PARENT_TAG)
            remote_parent = copied.get(parent) or known.get(parent) or (
                source.get_run(parent).data.tags.get(mark) if parent else None)
            copied[run.info.run_id] = _copy_run(source, target, run, experiment_id, remote_parent, mark)
    return copied


def mirror_or_explain(source_uri: str, target_uri: str, output_dir: str | Path,
                      run_ids: Sequence[str] | None = None) -> dict[str, str]:
    """:func:`mirror_runs` when ``target_uri`` is another store; when it cannot be reached, one line says so and
    how to log the results later (they are all on disk and in the local store), and nothing is raised.

    Args:
        source_uri: the local MLflow store the runs were logged to (``local_tracking_uri``).
        target_uri: the store to copy them to (``tracking_uri``); nothing is copied when it is empty or the same.
        output_dir: the folder holding the results on disk, named in the message on how to log them later.
        run_ids: the local runs to copy (every finished, not yet mirrored run when ``None``).
    """
    if not target_uri or target_uri == source_uri:
        return {}
    problem = reachable(target_uri)
    if problem is None:
        try:
            copied = mirror_runs(source_uri, target_uri, run_ids)
            logger.info("mirrored %d MLflow run(s) to %s", len(copied), target_uri)
            return copied
        except Exception as error:  # a server that went away mid-copy: the local store still holds everything
            problem = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
    print(f"MLflow server {target_uri} unreachable ({problem}): every result is in {output_dir} and in {source_uri}; "
          f"log them later with: python scripts/log_to_mlflow.py {output_dir} --tracking-uri {target_uri}",
          flush=True)
    return {}

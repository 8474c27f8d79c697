"""Runs go to the local store first and reach a real ``mlflow server`` over HTTP as they are, now or later."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow_server import MlflowServer, free_port
from warm_python import run_python

from bundle.mirror import PARENT_TAG, mirror_or_explain, mirror_runs, mirror_tag
from bundle.tracking import artifact_uri, sqlite_uri

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = MlflowServer(tmp_path_factory.mktemp("server")).start()
    yield running
    running.stop()


def local_study(folder: Path) -> tuple[str, dict[str, str]]:
    """A local store with a finished study run, its finished training child, and a run still going."""
    uri = sqlite_uri(folder)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("saliency_trust_synthetic", artifact_location=artifact_uri(folder))
    runs = {}
    for name, tags in (("evaluate_x", {"verdict/localization/grad": "FAIL"}), ("train_x", {}), ("still_going", {})):
        run = client.create_run(experiment, run_name=name, tags=tags)
        runs[name] = run.info.run_id
    client.set_tag(runs["train_x"], PARENT_TAG, runs["evaluate_x"])
    for step, value in enumerate([0.7, 0.9, 0.95], start=1):
        client.log_metric(runs["train_x"], "val_auc", value, step=step)
        client.log_metric(runs["train_x"], "localization/auprc/grad", value / 3, step=step)
    client.log_metric(runs["evaluate_x"], "localization/auprc/grad", 0.294)
    client.log_param(runs["evaluate_x"], "profile", "cpu")
    report = folder / "evaluate_x_report.html"
    report.write_text("<html>report</html>")
    client.log_artifact(runs["evaluate_x"], str(report))
    client.set_terminated(runs["evaluate_x"])
    client.set_terminated(runs["train_x"])
    return uri, runs


def assert_same_run(local: mlflow.MlflowClient, local_id: str, remote: mlflow.MlflowClient, remote_id: str) -> None:
    a, b = local.get_run(local_id), remote.get_run(remote_id)
    assert a.data.params == b.data.params and a.info.run_name == b.info.run_name and a.info.status == b.info.status
    assert (a.info.start_time, a.info.end_time) == (b.info.start_time, b.info.end_time)
    for key in a.data.metrics:
        history = [(m.value, m.step, m.timestamp) for m in local.get_metric_history(local_id, key)]
        assert history == [(m.value, m.step, m.timestamp) for m in remote.get_metric_history(remote_id, key)], key
    assert set(a.data.metrics) == set(b.data.metrics)
    assert {k: v for k, v in a.data.tags.items() if not k.startswith(("mirrored_to/", PARENT_TAG))} == {
        k: v for k, v in b.data.tags.items() if k not in ("mirrored_from", PARENT_TAG)}
    assert [f.path for f in local.list_artifacts(local_id)] == [f.path for f in remote.list_artifacts(remote_id)]


def test_mirror_copies_finished_runs_with_histories_parents_and_artifacts_once(server, tmp_path):
    uri, runs = local_study(tmp_path / "eval")
    copied = mirror_runs(uri, server.uri)
    assert set(copied) == {runs["evaluate_x"], runs["train_x"]}  # a running run waits for its end
    local, remote = mlflow.MlflowClient(uri), mlflow.MlflowClient(server.uri)
    for name in ("evaluate_x", "train_x"):
        assert_same_run(local, runs[name], remote, copied[runs[name]])
    assert remote.get_run(copied[runs["train_x"]]).data.tags[PARENT_TAG] == copied[runs["evaluate_x"]]
    html = remote.download_artifacts(copied[runs["evaluate_x"]], "evaluate_x_report.html", str(tmp_path))
    assert Path(html).read_text() == "<html>report</html>"
    assert remote.get_experiment(remote.get_run(copied[runs["train_x"]]).info.experiment_id).name == \
        "saliency_trust_synthetic"
    assert mirror_runs(uri, server.uri) == {}  # nothing is copied twice


def test_an_unreachable_server_is_one_line_and_the_script_logs_it_later(server, tmp_path, capsys):
    uri, runs = local_study(tmp_path / "eval")
    down = MlflowServer(tmp_path / "server", free_port())  # nothing listens on its port
    assert mirror_or_explain(uri, down.uri, tmp_path / "eval") == {}
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "unreachable" in printed[0] and "scripts/log_to_mlflow.py" in printed[0]

    result = run_python([sys.executable, "scripts/log_to_mlflow.py", str(tmp_path / "eval"), "--tracking-uri",
                         server.uri], cwd=ROOT, timeout=300)
    assert result.returncode == 0 and "logged 2 run(s)" in result.stdout, result.stdout + result.stderr
    local, remote = mlflow.MlflowClient(uri), mlflow.MlflowClient(server.uri)
    for name in ("evaluate_x", "train_x"):
        assert_same_run(local, runs[name], remote, local.get_run(runs[name]).data.tags[mirror_tag(server.uri)])



@pytest.mark.parametrize("folder, target, code, said", [
    ("nowhere", "server", 2, "nowhere/mlruns.db does not exist"),
    ("eval", "down", 1, "unreachable"),
])
def test_the_script_names_the_problem_on_its_last_line(server, tmp_path, capsys, monkeypatch, folder, target, code,
                                                       said):
    local_study(tmp_path / "eval")
    uri = server.uri if target == "server" else MlflowServer(tmp_path / "down", free_port()).uri
    script = runpy.run_path(str(ROOT / "scripts" / "log_to_mlflow.py"))  # in-process: the subprocess path is above
    monkeypatch.setattr(sys, "argv", ["log_to_mlflow.py", str(tmp_path / folder), "--tracking-uri", uri])
    assert script["main"]() == code
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and said in last

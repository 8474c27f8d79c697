"""The executed config a study logs: the bundle's files merged with the command line's overrides, as MONAI's
``--tracking`` writes it."""

from __future__ import annotations

import json
import os

from monai.bundle import run

from bundle.tracking import export_executed_config


def test_the_running_workflow_config_is_exported_with_its_overrides(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({
        "imports": ["$import bundle", "$import bundle.tracking"],
        "size": 16,
        "out": "$@size + 1",
        "run": ["$bundle.tracking.export_executed_config(@path)"],
    }))
    exported = tmp_path / "executed.json"
    run("run", config_file=str(config), logging_file=False, size=32, path=str(exported))  # as the command line does
    written = json.loads(exported.read_text())
    assert written["size"] == 32 and written["out"] == "$@size + 1" and written["path"] == str(exported)


def test_outside_a_workflow_nothing_is_written(tmp_path):
    assert export_executed_config(tmp_path / "none.json") is None and not (tmp_path / "none.json").exists()


def test_a_logged_study_leaves_mlflows_tracking_uri_to_the_next_training(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI, which MONAI's MLFlowHandler prefers to its own
    tracking_uri: a training after a study in the same process logged into the study's store."""
    import mlflow
    import pandas as pd
    from monai.handlers import MLFlowHandler

    from bundle.tracking import log_study, sqlite_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    study_store, training_store = sqlite_uri(tmp_path / "study"), sqlite_uri(tmp_path / "training")
    summary = pd.DataFrame(columns=["criterion", "metric", "method", "model", "step", "mean", "ci_low", "ci_high",
                                    "n", "n_nan"])
    run_id = log_study(study_store, "trust", "evaluate_x", tmp_path / "study", {"seed": 0}, summary,
                       pd.DataFrame(columns=["criterion", "method", "verdict"]), pd.DataFrame(), [], [], "report")
    assert mlflow.MlflowClient(study_store).get_run(run_id).info.run_name == "evaluate_x"
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert MLFlowHandler(tracking_uri=training_store).client.tracking_uri == training_store

    monkeypatch.setenv("MLFLOW_TRACKING_URI", training_store)  # a user's own setting stays theirs
    log_study(study_store, "trust", "evaluate_y", tmp_path / "study", {}, summary,
              pd.DataFrame(columns=["criterion", "method", "verdict"]), pd.DataFrame(), [], [], "report")
    assert os.environ["MLFLOW_TRACKING_URI"] == training_store == mlflow.get_tracking_uri()

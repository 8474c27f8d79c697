"""Shared fixtures, each made once per test session: a small synthetic dataset, a real MLflow server, and the quick
study from scratch (every end-to-end module reads it or its models)."""

from __future__ import annotations

import pytest

from mlflow_server import MlflowServer
from quick_study import run_quick

from bundle.data.synthetic_dataset import write_synthetic_dataset


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """24 synthetic chest radiographs in the RSNA layout, half MONOCHROME1 to exercise the reader."""
    out = tmp_path_factory.mktemp("synthetic") / "chest"
    return write_synthetic_dataset(out, n_images=24, seed=3, monochrome1_prob=0.5)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A real ``mlflow server`` on loopback (SQLite backend, local artifact root, a free port)."""
    running = MlflowServer(tmp_path_factory.mktemp("server")).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, server):
    """The quick study from scratch, with ``tracking_uri`` on the real server: every run is in the local store
    ``eval/mlruns.db`` and copied over HTTP when the study ends. Returns its folder and its console output."""
    tmp = tmp_path_factory.mktemp("bundle_run")  # 50 stability resamples (200 shipped): only their presence is tested
    return tmp, run_quick(tmp, "--tracking_uri", server.uri, "--saliency#stability_resamples", "50")

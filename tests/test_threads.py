"""Thread counts: set on purpose, said in the log, and carried into every worker pool the study forks."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from bundle import threads


def _counts(_: int) -> tuple[int, int]:
    return torch.get_num_threads(), threads.blas_threads()


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    threads.configure(intra_op=before)


def test_configure_sets_and_logs_the_counts_and_sizes_the_pools(restore_threads, caplog):
    with caplog.at_level("INFO", logger="bundle.threads"):
        counts = threads.configure(intra_op=1)
    assert counts["intra_op"] == torch.get_num_threads() == 1 and counts["blas"] == 1
    assert counts["workers"] == threads.pool_workers() == 1  # a job told to use one thread forks no workers
    assert "threads: torch intra-op 1, inter-op" in caplog.text
    threads.configure(intra_op=2)
    assert threads.pool_workers() == 2 and threads.pool_workers(limit=1) == 1
    with pytest.raises(ValueError, match="threads#intra_op must be at least 1"):
        threads.configure(intra_op=0)
    assert threads.configure(inter_op=torch.get_num_interop_threads())["inter_op"] == torch.get_num_interop_threads()


def test_worker_pools_run_one_torch_and_one_blas_thread(restore_threads):
    import numpy as np  # noqa: F401  (a BLAS pool loaded in the parent, as in a study)

    threads.configure(intra_op=2)
    with threads.worker_pool(2) as pool:
        assert list(pool.map(_counts, range(4))) == [(1, 1)] * 4
    assert torch.get_num_threads() == 2  # the parent keeps its own


def test_the_study_pools_are_forked_through_the_thread_settings(monkeypatch, restore_threads):
    """The verdicts' stability resamples and faithfulness's blurring fork their workers with ``worker_pool``."""
    from bundle.criteria import Faithfulness, Localization
    from bundle.verdicts import verdict_stability

    made = []
    real = threads.worker_pool
    monkeypatch.setattr(threads, "worker_pool", lambda workers: made.append(workers) or real(workers))
    threads.configure(intra_op=2)
    assert Faithfulness()._workers == 2 and Faithfulness(workers=1)._workers == 1
    criterion = Localization(metrics=["auprc"], verdict_metric="auprc")
    rows = [{"image_id": f"i{i}", "model": "m", "method": m, "criterion": "localization", "metric": "auprc",
             "step": "trained", "value": v + 0.01 * i} for i in range(8) for m, v in (("grad", 0.6), ("random", 0.2))]
    verdicts = pd.DataFrame({"criterion": ["localization"], "method": ["grad"], "verdict": ["PASS"]})
    stability = verdict_stability({"localization": criterion}, pd.DataFrame(rows),
                                  {"grad": "method", "random": "baseline"}, verdicts, n_resamples=8)
    assert made == [2] and len(stability) == 1


def test_the_documented_thread_overrides_reach_both_workflows(monkeypatch):
    """docs/scale_out.md: ``--threads#intra_op 1`` on a study; ``run train`` takes ``threads`` from evaluate.json by
    macro, so it is overridden whole."""
    from pathlib import Path

    from monai.bundle import ConfigParser

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    study, training = ConfigParser(), ConfigParser()
    study.read_config("configs/evaluate.json")
    training.read_config("configs/train.json")
    study.update({"threads#intra_op": 1})
    training.update({"threads": {"intra_op": 1}})
    assert study.get_parsed_content("threads") == {"intra_op": 1, "inter_op": None}
    assert training.get_parsed_content("threads") == {"intra_op": 1}
    assert study["initialize"][0] == training["initialize"][0] == "$bundle.threads.configure(**@threads)"

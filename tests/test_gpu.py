"""The published profile on a GPU: the quick study's data and models with every published setting, on ``cuda``.

Skipped on a machine without CUDA (every CI machine of this project): the rest of the suite runs the same code on
the CPU; this test is what a lent GPU machine runs (none has been lent to this project's sessions yet)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch

from quick_study import ROOT

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here: the published profile's GPU run needs one")


def test_the_published_profile_runs_the_quick_study_on_cuda(quick_run, tmp_path):
    tmp, _ = quick_run
    shutil.copytree(tmp / "models", tmp_path / "models")  # the quick study's trained models; the replicate's is new
    command = [sys.executable, "-m", "monai.bundle", "run", "evaluate", "--config_file",
               "['configs/evaluate.json','configs/quick.json','configs/published.json']",
               "--output_dir", str(tmp_path / "eval"), "--dataset_dir", str(tmp / "data"),
               "--ckpt_dir", str(tmp_path / "models"), "--run_name", "published_gpu"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3000)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    records = pd.read_csv(tmp_path / "eval" / "published_gpu_records.csv")
    methods = json.loads((ROOT / "configs" / "evaluate.json").read_text())["methods"]
    assert set(methods) <= set(records.method)
    steps = {json.loads(p.read_text())["step"] for p in (tmp_path / "eval" / "map_cache").glob("*/key.json")}
    assert any(step.endswith(":cuda") for step in steps)  # the randomised models were drawn on the GPU

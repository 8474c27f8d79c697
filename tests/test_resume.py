"""A study killed (SIGKILL) in the middle of training, of a criterion or of one method's maps and started again with
the same command finishes with the records of an uninterrupted run, reusing the maps computed before the kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 8  # configs/quick.json's study images, in batches of 4


def _command(tmp: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", "run", "evaluate",
            "--config_file", "['configs/evaluate.json','configs/quick.json']",
            "--dataset_dir", str(tmp / "data"), "--output_dir", str(tmp / name), "--ckpt_dir", str(tmp / f"{name}_models"),
            "--study#criteria", "$dict(localization=@criteria#localization, "
            "cascading_randomization=@criteria#cascading_randomization)",
            "--study#methods", "$dict(grad=@methods#grad, gradcam=@methods#gradcam, occlusion=@methods#occlusion)"]


def _records(folder: Path) -> pd.DataFrame:
    finished = [p for p in folder.glob("*_records.csv") if p.with_name(p.name.replace("_records.csv", "_report.txt"))
                .is_file()]
    assert len(finished) == 1, sorted(p.name for p in folder.glob("*"))
    return pd.read_csv(finished[0]).sort_values(["criterion", "method", "model", "step", "metric", "image_id"],
                                                ignore_index=True)


def _kill_when(command: list[str], marker: str, after_s: float = 0.0) -> None:
    """Start ``command`` and SIGKILL it ``after_s`` seconds after a line of its output contains ``marker``."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    for line in process.stdout:
        if marker in line:
            time.sleep(after_s)
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=600)
    assert process.returncode == -signal.SIGKILL, f"{marker!r} never appeared"


def _kill_mid_method(command: list[str], cache: Path, method: str) -> None:
    """Start ``command`` and SIGKILL it while ``method``'s trained maps are half cached: its first batch of the
    study's images stored, the next being computed."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    while process.poll() is None:
        for key in cache.glob("*/key.json"):
            described = json.loads(key.read_text())
            if described["step"] == "trained" and described["method"].startswith(method) and \
                    0 < len(list(key.parent.glob("*.npy"))) < N_IMAGES:
                os.killpg(process.pid, signal.SIGKILL)
                break
        time.sleep(0.02)
    assert process.wait(timeout=600) == -signal.SIGKILL, f"{method}'s maps were never half cached"


@pytest.mark.slow
def test_a_study_killed_anywhere_resumes_to_the_same_records(tmp_path):
    reference = subprocess.run(_command(tmp_path, "whole"), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert reference.returncode == 0, (reference.stdout + reference.stderr)[-3000:]
    expected = _records(tmp_path / "whole")
    # a nested training says nothing until it ends: killed 3 s into the first one (a quick epoch takes about 10 s),
    # and at the end of a criterion
    for name, marker, after_s in (("killed_training", "missing: training with", 3.0),
                                  ("killed_criterion", "criterion cascading_randomization: ", 0.0)):
        command = _command(tmp_path, name)
        _kill_when(command, marker, after_s)
        cached = {p: p.stat().st_mtime_ns for p in (tmp_path / name / "map_cache").rglob("*.npy")}
        again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
        pd.testing.assert_frame_equal(_records(tmp_path / name), expected)
        assert all(p.stat().st_mtime_ns == t for p, t in cached.items()), "maps computed before the kill are reused"
    command = _command(tmp_path, "killed_mid_method")  # within occlusion's maps, between its two batches
    _kill_mid_method(command, tmp_path / "killed_mid_method" / "map_cache", "occlusion")
    cached = {p: p.stat().st_mtime_ns for p in (tmp_path / "killed_mid_method" / "map_cache").rglob("*.npy")}
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    pd.testing.assert_frame_equal(_records(tmp_path / "killed_mid_method"), expected)
    assert all(p.stat().st_mtime_ns == t for p, t in cached.items()), "the half of the method's maps is reused"

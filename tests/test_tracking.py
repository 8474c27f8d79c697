"""The executed config a study logs: the bundle's files merged with the command line's overrides, as MONAI's
``--tracking`` writes it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bundle.tracking import export_executed_config

ROOT = Path(__file__).resolve().parents[1]


def test_the_running_workflow_config_is_exported_with_its_overrides(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({
        "imports": ["$import bundle", "$import bundle.tracking"],
        "size": 16,
        "out": "$@size + 1",
        "run": ["$bundle.tracking.export_executed_config(@path)"],
    }))
    exported = tmp_path / "executed.json"
    result = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config),
                             "--size", "32", "--path", str(exported)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(exported.read_text())
    assert written["size"] == 32 and written["out"] == "$@size + 1" and written["path"] == str(exported)


def test_outside_a_workflow_nothing_is_written(tmp_path):
    assert export_executed_config(tmp_path / "none.json") is None and not (tmp_path / "none.json").exists()

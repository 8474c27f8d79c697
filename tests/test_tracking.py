"""The executed config a study logs: the bundle's files merged with the command line's overrides, as MONAI's
``--tracking`` writes it."""

from __future__ import annotations

import json

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

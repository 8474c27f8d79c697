"""Bundle metadata verifies offline against the schema copy kept in the repository."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from warm_python import run_python

import bundle

ROOT = Path(__file__).resolve().parents[1]


def test_metadata_verifies_against_the_local_schema():
    result = run_python(
        [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", "configs/metadata.json",
         "--filepath", "configs/schema/meta_schema_20240725.json"],
        cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "metadata is verified with no error" in result.stdout + result.stderr


def test_version_is_in_changelog_and_packages_are_pinned_like_pyproject():
    meta = json.loads((ROOT / "configs/metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'\nversion = "{meta["version"]}"\n' in pyproject
    assert bundle.__version__ == meta["version"], "the version each MLflow run is tagged with"
    for package, version in meta["required_packages_version"].items():
        assert f'"{package}=={version}"' in pyproject, f"{package} pinned differently from pyproject.toml"
    assert f'monai[' in pyproject and meta["monai_version"] in pyproject
    assert f'"torch=={meta["pytorch_version"]}"' in pyproject


def test_evaluate_config_has_the_run_id():
    config = json.loads((ROOT / "configs/evaluate.json").read_text())
    assert "evaluate" in config

"""The quick study (configs/quick.json) through the real command, as the end-to-end tests run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_command(tmp: Path, *overrides: str, models: Path | None = None) -> list[str]:
    """`python -m monai.bundle run evaluate` with configs/quick.json, everything written under ``tmp`` (the
    checkpoints under ``models`` when given)."""
    return [
        sys.executable, "-m", "monai.bundle", "run", "evaluate",
        "--config_file", "['configs/evaluate.json','configs/quick.json']",
        "--output_dir", str(tmp / "eval"), "--dataset_dir", str(tmp / "data"),
        "--ckpt_dir", str(models or tmp / "models"), *overrides,
    ]


def run_quick(tmp: Path, *overrides: str, models: Path | None = None) -> str:
    """The quick study's stdout and stderr together, after checking it succeeded."""
    result = subprocess.run(quick_command(tmp, *overrides, models=models), cwd=ROOT, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return result.stdout + result.stderr

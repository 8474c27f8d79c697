"""The warm interpreter (tests/warm_python.py) runs a command as a cold ``python`` does: the same argv, path,
``__main__``, folder, environment, output, exit status and traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from warm_python import run_python

PROBE = """
import json, os, sys
print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "name": __name__, "cwd": os.getcwd(),
                  "probe": os.environ.get("PROBE"), "spec": getattr(__spec__, "name", None),
                  "file": globals().get("__file__"), "main": sorted(vars(sys.modules["__main__"]))}))
print("to stderr", file=sys.stderr)
if sys.argv[1] == "fail":
    raise ValueError("the probe failed as asked")
raise SystemExit(int(sys.argv[1]))
"""


@pytest.mark.parametrize("ending", ["0", "3", "fail"])
@pytest.mark.parametrize("how", ["-m", "script", "relative script", "-c"])
def test_a_warm_run_is_a_cold_run(tmp_path, monkeypatch, how, ending):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "probe.py").write_text(PROBE)
    (tmp_path / "probe.py").write_text(PROBE)
    monkeypatch.setenv("PROBE", "set by the test after the warm interpreter started")
    start = {"-m": ["-m", "probe"], "script": [str(tmp_path / "probe.py")], "relative script": ["scripts/probe.py"],
             "-c": ["-c", PROBE]}[how]
    command = [sys.executable, *start, ending]
    cold = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    warm = run_python(command, cwd=tmp_path, timeout=60)
    assert (warm.returncode, warm.stdout) == (cold.returncode, cold.stdout)
    assert warm.returncode == {"0": 0, "3": 3, "fail": 1}[ending] and '"probe": "set by the test' in warm.stdout
    assert warm.stderr.splitlines()[0] == "to stderr" and warm.stderr.splitlines()[-1] == cold.stderr.splitlines()[-1]


def test_each_warm_run_draws_its_own_random_numbers(tmp_path):
    draw = [sys.executable, "-c", "import random, numpy, torch; print(random.random(), numpy.random.rand(), "
            "torch.rand(1).item())"]
    first, second = (run_python(draw, cwd=tmp_path, timeout=60).stdout.split() for _ in range(2))
    assert len(first) == 3 and all(a != b for a, b in zip(first, second))


def test_a_command_past_its_timeout_is_stopped_and_the_next_runs(tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        run_python([sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path, timeout=1)
    assert run_python([sys.executable, "-c", "print('next')"], cwd=tmp_path, timeout=60).stdout == "next\n"

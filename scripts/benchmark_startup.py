"""A command's fixed costs on this machine: importing ``bundle`` (torch, MONAI and the packages MONAI imports) and
the interpreter's exit, with the imported objects frozen (``bundle.console.freeze_imported_objects``, what every
command does since 0.18.0) against unfrozen (``gc.unfreeze()`` after the import: Python's shutdown collections
then walk every object of those modules, as before 0.18.0). The two are run alternately, each in a new interpreter.

    python scripts/benchmark_startup.py --repeats 5 --json eval/benchmark_startup.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the child prints when its import ended, then leaves __main__ at once: what follows is the interpreter's exit
CHILD = ("import time, gc; start = time.time(); import bundle; {unfreeze}"
         "print(start, time.time(), gc.get_freeze_count(), flush=True)")
VARIANTS = {"frozen": "", "unfrozen": "gc.unfreeze(); "}


def cpu_model() -> str:
    """The CPU's model name, family and model, and whether it has AVX-512 (``/proc/cpuinfo``): the times depend on
    them (this project's 2-core machines of one name differ 2-3x)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    first = {key.strip(): value.strip() for key, value in  # the first processor's block: up to the first blank line
             (line.split(":", 1) for line in itertools.takewhile(str.strip, lines) if ":" in line)}
    if "model name" not in first:  # an ARM kernel names no model: the architecture at least
        return f"{platform.machine() or 'unknown'} (no model name in /proc/cpuinfo)"
    avx512 = "with" if "avx512f" in first.get("flags", "").split() else "without"
    return (f"{first['model name']} (family {first.get('cpu family', '?')}, model {first.get('model', '?')}), "
            f"{avx512} AVX-512")


def run_once(variant: str) -> dict[str, float]:
    """One new interpreter: seconds from its launch to the import's start, of the import, and of its exit; the
    objects frozen when it printed."""
    launched = time.time()
    child = subprocess.run([sys.executable, "-c", CHILD.format(unfreeze=VARIANTS[variant])], cwd=ROOT,
                           capture_output=True, text=True)
    ended = time.time()
    if child.returncode:
        raise SystemExit(f"the {variant} interpreter failed (exit {child.returncode}):\n{child.stderr[-3000:]}")
    start, imported, frozen = child.stdout.split()[-3:]  # its last line: whatever the imports printed comes before
    return {"launch_s": float(start) - launched, "import_s": float(imported) - float(start),
            "exit_s": ended - float(imported), "frozen_objects": int(frozen)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="interpreters per variant, alternating")
    parser.add_argument("--json", type=Path, default=None, help="written after every interpreter")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    record = {"cpu": cpu_model(), "repeats": args.repeats, "runs": runs}
    for i in range(args.repeats):
        for variant in VARIANTS:
            runs[variant].append(run_once(variant))
            print(f"{variant:<9} {i + 1}/{args.repeats}: " + ", ".join(f"{k} {v:.2f}" if k.endswith("_s") else
                                                                       f"{k} {v}" for k, v in runs[variant][-1].items()),
                  flush=True)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(record, indent=1))
    medians = {v: {k: statistics.median(r[k] for r in rs) for k in ("import_s", "exit_s")} for v, rs in runs.items()}
    record["medians"] = medians
    record["exit_ratio_unfrozen_to_frozen"] = medians["unfrozen"]["exit_s"] / medians["frozen"]["exit_s"]
    print(f"\n{record['cpu']}, median of {args.repeats} interpreters each")
    print(f"{'variant':<10}{'import':>9}{'exit':>9}")
    for variant, m in medians.items():
        print(f"{variant:<10}{m['import_s']:>8.2f}s{m['exit_s']:>8.2f}s")
    print(f"exit: unfrozen / frozen {record['exit_ratio_unfrozen_to_frozen']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()

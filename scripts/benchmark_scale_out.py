"""Speed-up of the study sharded over N torchrun processes against one process, on this machine.

The quick study (configs/quick.json) with more images, so that every criterion has at least N batches to
share: trained once (not timed), then run from an empty map cache as one process (every core's threads, as a
user runs it) and as N ``torchrun`` processes of one thread each (torchrun's default). Prints each run's wall
time and each criterion's time (MLflow ``time/<criterion>_s``) with the ratios, the verdicts that differ between the two
runs (one process of several threads against processes of one: floats differ in their last bits), and writes JSON.

    python scripts/benchmark_scale_out.py --processes 2 --json eval/benchmark_scale_out.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["configs/evaluate.json", "configs/quick.json"]


def study(work: Path, name: str, launcher: list[str], extra_configs: list[str], overrides: list[str]) -> float:
    """One study run in ``work/name`` (from an empty map cache) on ``work``'s data and models; its wall seconds."""
    shutil.rmtree(work / name, ignore_errors=True)
    command = [*launcher, "-m", "monai.bundle", "run", "evaluate", "--config_file", repr(CONFIGS + extra_configs),
               "--output_dir", str(work / name), "--dataset_dir", str(work / "data"), "--ckpt_dir",
               str(work / "models"), "--run_name", name, *overrides]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{name} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return time.perf_counter() - start


def criterion_seconds(work: Path, name: str) -> dict[str, float]:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / name / 'mlruns.db'}")
    run = client.search_runs([e.experiment_id for e in client.search_experiments()],
                             filter_string=f"attributes.run_name = '{name}'")[0]
    return {k[len("time/"):-len("_s")]: v for k, v in run.data.metrics.items() if k.startswith("time/")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--images", type=int, default=8, help="images per criterion (batches of 4)")
    parser.add_argument("--work", type=Path, default=ROOT / "eval" / "benchmark_scale_out")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    overrides = ["--saliency#n_images", str(max(8, args.images))] + [
        x for n in ("sensitivity", "agreement", "faithfulness", "psc")
        for x in (f"--saliency#{n}_images", str(args.images))]
    args.work.mkdir(parents=True, exist_ok=True)
    study(args.work, "train", [sys.executable], [], overrides)  # data and every model, not timed
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.processes}"]
    wall = {"one": study(args.work, "one", [sys.executable], [], overrides),
            "sharded": study(args.work, "sharded", torchrun, ["configs/multi_gpu_evaluate.json"], overrides)}
    seconds = {name: criterion_seconds(args.work, name) for name in wall}
    one, sharded = (pd.read_csv(args.work / name / f"{name}_verdicts.csv") for name in wall)
    both = one.merge(sharded, on=["criterion", "method"], suffixes=("_one", "_sharded"))
    changed = [f"{r.criterion} {r.method}: {r.verdict_one} -> {r.verdict_sharded}"
               for r in both.itertuples() if r.verdict_one != r.verdict_sharded]
    rows = [{"what": c, "one_s": seconds["one"][c], "sharded_s": seconds["sharded"][c],
             "speedup": seconds["one"][c] / max(seconds["sharded"][c], 1e-9)} for c in seconds["one"]]
    rows.append({"what": "whole run (wall)", "one_s": wall["one"], "sharded_s": wall["sharded"],
                 "speedup": wall["one"] / wall["sharded"]})
    table = pd.DataFrame(rows)
    print(f"{args.processes} torchrun processes (1 thread each) against 1 process, {args.images} images per "
          f"criterion; verdicts that differ (the thread counts differ, so floats differ in their last bits): "
          f"{'; '.join(changed) or 'none'}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"processes": args.processes, "images": args.images,
                                         "verdicts_changed": changed, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

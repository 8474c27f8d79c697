"""Log a study's runs to an MLflow tracking server after the fact: what a study folder's local store holds and the
server has not received yet (the server was down, or the study ran offline), exactly as a live run sends it.

    python scripts/log_to_mlflow.py eval --tracking-uri http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bundle.mirror import mirror_runs, reachable
from bundle.tracking import sqlite_uri


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_folder", help="the study's output_dir (it holds mlruns.db)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="the tracking server (default: $MLFLOW_TRACKING_URI)")
    args = parser.parse_args()
    folder = Path(args.study_folder)
    if not (folder / "mlruns.db").is_file():
        print(f"error: {folder / 'mlruns.db'} does not exist: give the study's output_dir", file=sys.stderr)
        return 2
    if not args.tracking_uri:
        print("error: no tracking server: pass --tracking-uri or set MLFLOW_TRACKING_URI", file=sys.stderr)
        return 2
    problem = reachable(args.tracking_uri)
    if problem:
        print(f"error: MLflow server {args.tracking_uri} unreachable ({problem}); nothing was logged", file=sys.stderr)
        return 1
    copied = mirror_runs(sqlite_uri(folder), args.tracking_uri)
    print(f"logged {len(copied)} run(s) from {folder} to {args.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

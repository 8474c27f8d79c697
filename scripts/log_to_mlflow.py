"""Log a study's runs to an MLflow tracking server after the fact: what a study folder's local store holds and the
server has not received yet (the server was down, or the study ran offline), exactly as a live run sends it. With
``--from``, the runs of another store: the fallback store a study wrote beside its results when its own store
failed at the end (the study's last line gives the command).

    python scripts/log_to_mlflow.py eval --tracking-uri http://127.0.0.1:5000
    python scripts/log_to_mlflow.py eval --from sqlite:///eval/<run>_mlruns.db --tracking-uri sqlite:///eval/mlruns.db
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bundle.mirror import mirror_runs, reachable


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_folder", help="the study's output_dir (it holds mlruns.db)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="the tracking server (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--from", dest="source", help="the store to copy from (default: the folder's mlruns.db)")
    args = parser.parse_args()
    folder = Path(args.study_folder)
    source = args.source or f"sqlite:///{folder.resolve() / 'mlruns.db'}"
    if source.startswith("sqlite:///") and not Path(source.removeprefix("sqlite:///")).is_file():
        print(f"error: {source.removeprefix('sqlite:///')} does not exist: give the study's output_dir (or --from)",
              file=sys.stderr)
        return 2
    if not args.tracking_uri:
        print("error: no tracking server: pass --tracking-uri or set MLFLOW_TRACKING_URI", file=sys.stderr)
        return 2
    problem = reachable(args.tracking_uri)
    if problem:
        print(f"error: MLflow server {args.tracking_uri} unreachable ({problem}); nothing was logged", file=sys.stderr)
        return 1
    copied = mirror_runs(source, args.tracking_uri)
    print(f"logged {len(copied)} run(s) from {folder} to {args.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Prepare MURA v1.1 localisation for the bundle: the consensus mask of three readers' VGG Image Annotator exports.

    python scripts/prepare_mura.py /path/to/mura --annotations reader1.csv reader2.csv reader3.csv

Draws every reader's rectangles and polygons, keeps the pixels at least two readers marked, and writes them as
``masks/XR_<REGION>/patient<ID>/study<N>_<label>/image<K>.png`` into the folder holding ``MURA-v1.1``; names every
row it could not use. Then:

    python -m monai.bundle run evaluate --config_file configs/evaluate.json --dataset_name mura --dataset_dir /path/to/mura
"""

from __future__ import annotations

import argparse
import sys

from bundle.data.mura import prepare_mura
from bundle.data.screening import print_preparation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset_dir", help="the folder holding MURA-v1.1 (or MURA-v1.1 itself)")
    parser.add_argument("--annotations", nargs="+", required=True, help="the readers' VIA CSV exports")
    args = parser.parse_args()
    written, issues = prepare_mura(args.dataset_dir, args.annotations)
    print_preparation(written, "consensus mask(s)", args.dataset_dir, issues)
    return 0


if __name__ == "__main__":
    sys.exit(main())

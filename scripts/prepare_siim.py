"""Prepare a SIIM-ACR Pneumothorax folder for the bundle: decode every mask once and write a patient-level split.

    python scripts/prepare_siim.py /path/to/siim          # holds train-rle.csv and the nested DICOMs

Writes ``masks/<ImageId>.png`` (the instances of an image OR-ed) and ``split.csv`` into that folder, and names
every row it could not use (an RLE that does not fit its image, an ImageId without a DICOM). Then:

    python -m monai.bundle run evaluate --config_file configs/evaluate.json --dataset_name siim --dataset_dir /path/to/siim
"""

from __future__ import annotations

import argparse
import sys

from bundle.data.screening import print_preparation
from bundle.data.siim import prepare_siim


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset_dir", help="the SIIM-ACR folder (train-rle.csv and the DICOMs under it)")
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args()
    written, issues = prepare_siim(args.dataset_dir, args.split_seed)
    print_preparation(written, "mask(s) and split.csv", args.dataset_dir, issues)
    return 0


if __name__ == "__main__":
    sys.exit(main())

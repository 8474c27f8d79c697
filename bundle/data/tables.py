"""Reading the tables of a dataset folder: CSVs with required columns, and seeded patient-level splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def dataset_folder(dataset_dir: str | Path, split: str | None = None) -> Path:
    """``dataset_dir`` as a path, after checking it exists and ``split`` is one of :data:`SPLITS` (or None)."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder does not exist (set dataset_dir)")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return root


def read_csv(path: Path, required: tuple[str, ...], **options) -> pd.DataFrame:
    """The CSV at ``path`` with its header's spaces stripped; an error naming the file when it is missing, unreadable or
    lacks a ``required`` column."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected file is missing")
    try:
        table = pd.read_csv(path, **({"dtype": {"patientId": str}} | options))
    except Exception as e:
        raise ValueError(f"{path}: not a readable CSV file ({e})") from e
    table.columns = [c.strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")
    return table


def seeded_split(patient_ids: list[str], seed: int, fractions=(0.75, 0.125, 0.125)) -> dict[str, str]:
    """Each patient's split, drawn with a seeded permutation in the given proportions (no patient in two splits)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(patient_ids))
    bounds = np.cumsum(np.asarray(fractions) / sum(fractions) * len(patient_ids)).round().astype(int)
    return {patient_ids[i]: SPLITS[int(np.searchsorted(bounds, rank, side="right"))] for rank, i in enumerate(order)}


def number(value) -> float | None:
    """A CSV cell as a float (NaN for an empty cell), or None when it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def file_stem(path: str | Path, suffixes: tuple[str, ...]) -> str:
    """A file's name without the longest of ``suffixes`` it ends with, in any case (``a.nii.gz`` -> ``a``)."""
    name = Path(path).name
    return next((name[: -len(s)] for s in sorted(suffixes, key=len, reverse=True) if name.lower().endswith(s)), name)

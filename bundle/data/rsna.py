"""Reader for the RSNA Pneumonia Detection layout (also written by the synthetic generator).

Turns a dataset folder into MONAI data dicts: ``image`` (DICOM path), ``label``
(0/1), ``boxes`` (list of x, y, w, h in original pixels), ``mask`` (PNG path when
the folder has lesion masks, else absent), ``reader_mask`` (a second reader's outline,
when the folder has one), ``patient_id`` and ``split``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from bundle.data.dicom import check_dicom
from bundle.data.synthetic_dataset import IMAGES_DIR, LABELS_CSV, MASKS_DIR, READER_MASKS_DIR, SPLIT_CSV, SPLITS

logger = logging.getLogger(__name__)

LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected file is missing")
    try:
        table = pd.read_csv(path, dtype={"patientId": str})
    except Exception as e:
        raise ValueError(f"{path}: not a readable CSV file ({e})") from e
    table.columns = [c.strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")
    return table


def _seeded_split(patient_ids: list[str], seed: int, fractions=(0.75, 0.125, 0.125)) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(patient_ids))
    bounds = np.cumsum(np.asarray(fractions) / sum(fractions) * len(patient_ids)).round().astype(int)
    return {patient_ids[i]: SPLITS[int(np.searchsorted(bounds, rank, side="right"))] for rank, i in enumerate(order)}


def load_rsna_datalist(
    dataset_dir: str | Path,
    split: str | None = None,
    labels: int | None = None,
    check_files: bool = True,
    split_seed: int = 0,
    limit: int | None = None,
) -> list[dict]:
    """Read an RSNA-layout folder into a list of MONAI data dicts.

    ``split`` keeps one of train/val/test (from ``split.csv``, else a seeded split
    by patient), ``labels`` keeps one class, ``limit`` the first N. With
    ``check_files`` every DICOM is screened first: missing or corrupt files are
    reported by name and skipped, so one bad file does not stop a run.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder does not exist")
    table = _read_csv(root / LABELS_CSV, LABEL_COLUMNS)
    boxes: dict[str, list[list[float]]] = defaultdict(list)
    target: dict[str, int] = {}
    for row in table.itertuples(index=False):
        pid = str(row.patientId)
        target[pid] = max(target.get(pid, 0), int(row.Target))
        if int(row.Target) == 1 and not pd.isna(row.x):
            boxes[pid].append([float(row.x), float(row.y), float(row.width), float(row.height)])
    pids = list(target)
    if (root / SPLIT_CSV).is_file():
        split_table = _read_csv(root / SPLIT_CSV, ("patientId", "split"))
        split_of = dict(zip(split_table.patientId.astype(str), split_table.split.astype(str)))
    else:
        split_of = _seeded_split(pids, split_seed)
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")

    items, skipped = [], []
    for pid in pids:
        if split is not None and split_of.get(pid) != split:
            continue
        if labels is not None and target[pid] != labels:
            continue
        image = root / IMAGES_DIR / f"{pid}.dcm"
        problem = check_dicom(image) if check_files else None
        if problem:
            skipped.append(f"{image}: {problem}")
            continue
        item = {"image": str(image), "label": target[pid], "boxes": boxes.get(pid, []),
                "patient_id": pid, "split": split_of.get(pid, "")}
        mask = root / MASKS_DIR / f"{pid}.png"
        if mask.is_file():
            item["mask"] = str(mask)
        reader_mask = root / READER_MASKS_DIR / f"{pid}.png"
        if reader_mask.is_file():
            item["reader_mask"] = str(reader_mask)
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    if skipped:
        logger.warning("skipped %d unusable image(s):\n  %s", len(skipped), "\n  ".join(skipped))
    if not items:
        raise ValueError(f"{root}: no usable images for split={split!r}, labels={labels!r}")
    return items

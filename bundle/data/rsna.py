"""Reader for the RSNA Pneumonia Detection layout (also written by the synthetic generator).

Turns a dataset folder into MONAI data dicts: ``image`` (DICOM path), ``label``
(0/1), ``boxes`` (list of x, y, w, h in original pixels), ``mask`` (PNG path when
the folder has lesion masks, else absent), ``reader_mask`` (a second reader's outline,
when the folder has one), ``image_id`` and ``split``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from bundle.data.dicom import inspect_dicom
from bundle.data.screening import ItemIssue, ItemList, collect, report
from bundle.data.tables import dataset_folder, number, read_csv, seeded_split
from bundle.data.synthetic_dataset import IMAGES_DIR, LABELS_CSV, MASKS_DIR, READER_MASKS_DIR, SPLIT_CSV, SPLITS

LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")


def _label_table(path: Path) -> tuple[list[str], dict[str, int], dict[str, list[list[float]]], dict[str, ItemIssue]]:
    """The patients in the labels CSV's order, each one's label and boxes, and the patients with a malformed row
    (a Target that is not 0 or 1, a box coordinate that is not a number or is missing on a positive row)."""
    table = read_csv(path, LABEL_COLUMNS)
    target: dict[str, int] = {}
    boxes: dict[str, list[list[float]]] = defaultdict(list)
    bad: dict[str, ItemIssue] = {}
    for line, row in enumerate(table.itertuples(index=False), start=2):  # line 1 is the header
        pid = str(row.patientId)
        where = f"{path} line {line} (patientId {pid})"
        label = number(row.Target)
        if label not in (0.0, 1.0):
            bad.setdefault(pid, ItemIssue(where, "label_value", f"Target {row.Target!r} is not 0 or 1"))
            continue
        target[pid] = max(target.get(pid, 0), int(label))
        if label == 1.0:
            raw = (row.x, row.y, row.width, row.height)
            box = [number(v) for v in raw]
            if any(v is None for v in box):
                bad.setdefault(pid, ItemIssue(where, "label_value", f"box coordinate in {list(raw)} is not a number"))
            elif not np.isfinite(box).all():
                bad.setdefault(pid, ItemIssue(where, "box_nan", f"positive row with a missing box coordinate {raw}"))
            else:
                boxes[pid].append(box)
    return list(dict.fromkeys(table.patientId.astype(str))), target, boxes, bad


def load_rsna_datalist(
    dataset_dir: str | Path,
    split: str | None = None,
    labels: int | None = None,
    check_files: bool = True,
    split_seed: int = 0,
    limit: int | None = None,
) -> ItemList:
    """Read an RSNA-layout folder into a list of MONAI data dicts.

    ``split`` keeps one of train/val/test (from ``split.csv``, else a seeded split
    by patient), ``labels`` keeps one class, ``limit`` the first N usable ones. With
    ``check_files`` every selected item is screened where it enters (its DICOM decoded,
    its boxes against the image, its masks' size): a bad item is reported on one
    line naming the file or CSV row and skipped (a colour image or a box past the edge is
    repaired and reported), so one bad file does not stop a run; the returned
    :class:`~bundle.data.screening.ItemList` carries what was skipped or repaired.
    """
    root = dataset_folder(dataset_dir, split)
    pids, target, boxes, bad = _label_table(root / LABELS_CSV)
    if (root / SPLIT_CSV).is_file():
        split_table = read_csv(root / SPLIT_CSV, ("patientId", "split"))
        split_of = dict(zip(split_table.patientId.astype(str), split_table.split.astype(str)))
    else:
        split_of = seeded_split(pids, split_seed)

    issues: list[ItemIssue] = []

    def candidates():
        for pid in pids:
            if split is not None and split_of.get(pid) not in SPLITS:  # a hand-edited split table: said in every split
                found = f"split {split_of[pid]!r} is not one of {SPLITS}" if pid in split_of else "no row"
                report(ItemIssue(f"{root / SPLIT_CSV} (patientId {pid})", "split_value", found), issues)
                continue
            if split is not None and split_of.get(pid) != split:
                continue
            if pid in bad:  # its label is unknown, so it is reported whatever ``labels`` asks for
                report(bad[pid], issues)
                continue
            if labels is not None and target[pid] != labels:
                continue
            item = {"image": str(root / IMAGES_DIR / f"{pid}.dcm"), "label": target[pid],
                    "boxes": boxes.get(pid, []), "image_id": pid, "split": split_of.get(pid, "")}
            for key, folder in (("mask", MASKS_DIR), ("reader_mask", READER_MASKS_DIR)):
                if (root / folder / f"{pid}.png").is_file():
                    item[key] = str(root / folder / f"{pid}.png")
            yield item

    return collect(root, candidates(), issues, inspect_dicom if check_files else None, limit,
                   f"split={split!r}, labels={labels!r}")

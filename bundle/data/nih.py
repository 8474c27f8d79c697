"""Reader for NIH ChestX-ray14: ``Data_Entry_2017.csv`` (labels), ``BBox_List_2017.csv`` (boxes), PNG images.

One finding at a time is the target class (``label`` 1 when the image's ``Finding Labels`` name it). The traps
of the release (DATASETS.md): the boxes file's header ``Bbox [x,y,w,h]`` splits into four columns
(``Bbox [x``, ``y``, ``w``, ``h]``) followed by unnamed empty ones; it spells ``Infiltrate`` where the labels
say ``Infiltration``; the images sit in ``images_001/images/`` ... ``images_012/images/``; some PNGs are RGBA.
Splits are by patient: ``test_list.txt`` is the test split when present (the release's official split), the
other patients are split into train and val with a seed; without the lists, train/val/test by patient.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from bundle.data.png import inspect_png
from bundle.data.screening import ItemIssue, ItemList, collect, report
from bundle.data.tables import dataset_folder, number, read_csv, seeded_split

DATA_ENTRY_CSV = "Data_Entry_2017.csv"
BBOX_CSV = "BBox_List_2017.csv"
TEST_LIST = "test_list.txt"  # the official test split; the other images are train_val_list.txt
FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
            "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax")
BOXED_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                  "Pneumothorax")  # the eight the boxes file outlines: the ones a study can localise
BBOX_SPELLING = {"Infiltrate": "Infiltration"}  # the boxes file's name -> the labels file's


def _boxes(path: Path) -> tuple[dict[tuple[str, str], list[list[float]]], dict[str, ItemIssue]]:
    """Boxes by (image, finding) and the images with a malformed box row (by CSV line)."""
    boxes: dict[tuple[str, str], list[list[float]]] = defaultdict(list)
    bad: dict[str, ItemIssue] = {}
    if not path.is_file():
        return boxes, bad
    table = read_csv(path, ("Image Index", "Finding Label"), dtype=str, keep_default_na=False)
    columns = list(table.columns)
    coordinates = columns[columns.index("Finding Label") + 1:][:4]  # "Bbox [x", "y", "w", "h]"
    if len(coordinates) < 4:
        raise ValueError(f"{path}: expected four box columns after 'Finding Label'; found {columns}")
    at = [columns.index(c) for c in ("Image Index", "Finding Label", *coordinates)]
    for line, row in enumerate(table.itertuples(index=False), start=2):
        name, finding, *raw = (str(row[i]).strip() for i in at)
        box = [number(v) for v in raw]
        if any(v is None or not np.isfinite(v) for v in box):
            bad.setdefault(name, ItemIssue(f"{path} line {line} (Image Index {name})", "label_value",
                                           f"box {raw} is not four numbers"))
            continue
        boxes[(name, BBOX_SPELLING.get(finding, finding))].append(box)
    return boxes, bad


def _splits(root: Path, patient_of: dict[str, str], seed: int) -> dict[str, str]:
    """Each image's split, by patient: the release's test list when present, else seeded."""
    patients = sorted(set(patient_of.values()))
    if not (root / TEST_LIST).is_file():
        by_patient = seeded_split(patients, seed)
        return {image: by_patient[p] for image, p in patient_of.items()}
    test = {line.strip() for line in (root / TEST_LIST).read_text().splitlines() if line.strip()}
    test_patients = {patient_of[i] for i in test if i in patient_of}
    rest = [p for p in patients if p not in test_patients]
    by_patient = {**seeded_split(rest, seed, fractions=(0.875, 0.125, 0.0)), **dict.fromkeys(test_patients, "test")}
    return {image: by_patient[p] for image, p in patient_of.items()}


def load_nih_datalist(
    dataset_dir: str | Path,
    split: str | None = None,
    labels: int | None = None,
    finding: str = "Pneumonia",
    check_files: bool = True,
    split_seed: int = 0,
    limit: int | None = None,
) -> ItemList:
    """Read an NIH ChestX-ray14 folder into MONAI data dicts for one ``finding``: ``image`` (PNG path), ``label``,
    ``boxes`` (x, y, w, h in pixels of the PNG), ``image_id`` (the image index: a patient has several images),
    ``patient`` and ``split``.

    ``labels=1`` keeps the positives that have a box for the finding (the localisation ground truth; most NIH
    positives have none and cannot be scored). Every item is screened where it enters, as the RSNA reader does.
    """
    root = dataset_folder(dataset_dir, split)
    if finding not in FINDINGS:
        raise ValueError(f"unknown NIH finding {finding!r} (the dataset's finding option); choose one of {FINDINGS}")
    entries = read_csv(root / DATA_ENTRY_CSV, ("Image Index", "Finding Labels", "Patient ID"), dtype=str,
                       keep_default_na=False)
    boxes, bad = _boxes(root / BBOX_CSV)
    files = {p.name: p for p in sorted(root.rglob("*.png"))}  # images_0NN/images/<Image Index>
    names = [str(n).strip() for n in entries["Image Index"]]
    patient_of = dict(zip(names, (str(p).strip() for p in entries["Patient ID"])))
    split_of = _splits(root, patient_of, split_seed)
    issues: list[ItemIssue] = []

    def candidates():
        for line, (name, findings) in enumerate(zip(names, entries["Finding Labels"]), start=2):
            if split is not None and split_of[name] != split:
                continue
            if name in bad:
                report(bad[name], issues)
                continue
            found = [f.strip() for f in str(findings).split("|")]
            unknown = [f for f in found if f not in FINDINGS + ("No Finding",)]
            if unknown:
                report(ItemIssue(f"{root / DATA_ENTRY_CSV} line {line} (Image Index {name})", "label_value",
                                 f"unknown finding(s) {unknown}"), issues)
                continue
            label = int(finding in found)
            if labels is not None and (label != labels or (labels == 1 and (name, finding) not in boxes)):
                continue
            if name not in files:
                report(ItemIssue(str(root / name), "unreadable_image",
                                 "image file not found under the dataset folder"), issues)
                continue
            yield {"image": str(files[name]), "label": label, "boxes": [list(b) for b in boxes.get((name, finding), [])],
                   "image_id": name, "patient": patient_of[name], "split": split_of[name], "finding": finding}

    return collect(root, candidates(), issues, inspect_png if check_files else None, limit,
                   f"finding={finding!r}, split={split!r}, labels={labels!r}")

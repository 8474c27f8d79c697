"""Reader for CheXlocalize (Saporta et al. 2022): CheXpert validation and test radiographs (JPEG) with radiologist
segmentations of ten findings.

Layout of the release (its README): ``CheXpert/{val,test}/<patient>/<study>/<view>.jpg``,
``CheXpert/{val,test}_labels.csv`` (CheXpert's header: ``Path``, then one column per finding, 0 or 1) and
``CheXlocalize/gt_segmentations_{val,test}.json`` (``{cxr_id: {task: COCO RLE {"size": [H, W], "counts"}}}``).
The traps (DATASETS.md): the cxr_id is the image path flattened (``patient64541_study1_view1_frontal``); the
labels call ``Lung Opacity`` what the segmentations call ``Airspace Opacity``; a negative finding has an all-zero
mask. The repository's sample layout (``images/<cxr_id>.jpg`` beside the JSON, no labels CSV) reads too: the label
is then whether the radiologists' mask is non-empty.

Splits: the release has no training images, so ``test`` is its test set and ``train`` / ``val`` are its validation
patients split 4:1 with a seed — a stand-in for CheXpert's own training set, which this reader does not read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bundle.data.masks import coco_rle_counts
from bundle.data.png import inspect_png
from bundle.data.screening import ItemIssue, ItemList, collect, report
from bundle.data.tables import dataset_folder, number, read_csv, seeded_split

FINDINGS = ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Airspace Opacity", "Edema",
            "Consolidation", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Support Devices")
LABEL_COLUMN = {"Airspace Opacity": "Lung Opacity"}  # the segmentations' task name -> CheXpert's label column
RELEASES = ("val", "test")  # the release's two sets; our train and val come from its val set
SEGMENTATIONS = "gt_segmentations_{}.json"
LABELS_CSV = "{}_labels.csv"
CXR_ID = re.compile(r"^(patient\d+)_(study\d+)_(view\d+_\w+)$")


def cxr_id(path: str | Path) -> str:
    """The CheXlocalize id of an image path (``.../patient64541/study1/view1_frontal.jpg``), or of a sample file
    already named by its id."""
    parts = Path(str(path).strip()).with_suffix("").parts
    return parts[-1] if CXR_ID.match(parts[-1]) else "_".join(parts[-3:])


def _first(root: Path, *names: str) -> Path | None:
    """The first of ``names`` (relative to ``root``) that is a file."""
    return next((root / n for n in names if (root / n).is_file()), None)


def _expected_image(root: Path, release: str, image_id: str) -> Path:
    """Where the release (or the sample layout) keeps the image of ``image_id``."""
    if not (root / "CheXpert").is_dir():
        return root / "images" / f"{image_id}.jpg"
    match = CXR_ID.match(image_id)
    return root / "CheXpert" / release / (Path(*match.groups()) if match else Path(image_id)).with_suffix(".jpg")


def _segmentations(root: Path, release: str) -> tuple[Path | None, dict]:
    """The release's ground-truth segmentation file (in ``CheXlocalize/`` or beside the images) and its content."""
    path = _first(root, f"CheXlocalize/{SEGMENTATIONS.format(release)}", SEGMENTATIONS.format(release))
    if path is None:
        return None, {}
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e})") from e
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected {{cxr_id: {{task: COCO RLE}}}}, found a {type(content).__name__}")
    return path, content


def _labels(root: Path, release: str, finding: str, issues: list[ItemIssue]) -> dict[str, int | None] | None:
    """Each image's 0/1 label for ``finding`` from the release's labels CSV (None where the cell is not 0 or 1,
    reported), or None when the folder has no labels CSV (the sample layout)."""
    path = _first(root, f"CheXpert/{LABELS_CSV.format(release)}", LABELS_CSV.format(release))
    if path is None:
        return None
    column = LABEL_COLUMN.get(finding, finding)
    table = read_csv(path, ("Path", column), dtype=str, keep_default_na=False)
    labels: dict[str, int | None] = {}
    for line, (image, value) in enumerate(zip(table["Path"], table[column]), start=2):
        label = number(value)
        labels[cxr_id(image)] = int(label) if label in (0.0, 1.0) else None
        if labels[cxr_id(image)] is None:
            issues.append(ItemIssue(f"{path} line {line} ({image})", "label_value",
                                    f"{column} is {value!r}: expected 0 or 1"))
    return labels


def load_chexlocalize_datalist(
    dataset_dir: str | Path,
    split: str | None = None,
    labels: int | None = None,
    finding: str = "Airspace Opacity",
    check_files: bool = True,
    split_seed: int = 0,
    limit: int | None = None,
) -> ItemList:
    """Read a CheXlocalize folder into MONAI data dicts for one ``finding``: ``image`` (JPEG path), ``label``,
    ``mask`` (the radiologists' segmentation as COCO RLE, decoded by :class:`GroundTruthMaskd`), ``boxes`` (none),
    ``image_id`` (the cxr_id), ``patient``, ``split`` and ``finding``; screened like the other readers (a
    positive whose segmentation is empty cannot be scored and is skipped)."""
    root = dataset_folder(dataset_dir, split)
    if finding not in FINDINGS:
        raise ValueError(f"unknown CheXlocalize finding {finding!r} (the dataset's finding option); "
                         f"choose one of {FINDINGS}")
    found = {release: _segmentations(root, release) for release in RELEASES}
    if not any(path for path, _ in found.values()):
        raise FileNotFoundError(f"{root}: no {SEGMENTATIONS.format('val')} or {SEGMENTATIONS.format('test')} "
                                "(in CheXlocalize/ or the folder itself): not a CheXlocalize folder")
    images = {cxr_id(p): p for p in sorted(root.rglob("*.jpg"))}
    issues: list[ItemIssue] = []
    label_issues: list[ItemIssue] = []
    releases = [r for r in RELEASES if found[r][0]]
    label_of = {r: _labels(root, r, finding, label_issues) for r in releases}
    patients = sorted({m.group(1) for _, content in found.values() for i in content if (m := CXR_ID.match(i))})
    train_or_val = seeded_split(patients, split_seed, fractions=(0.8, 0.2, 0.0))

    def candidates():
        for issue in label_issues:
            report(issue, issues)
        for release in releases:
            path, content = found[release]
            for image_id, tasks in content.items():
                match = CXR_ID.match(image_id)
                patient = match.group(1) if match else image_id
                item_split = "test" if release == "test" else train_or_val.get(patient, "train")
                if split is not None and item_split != split:
                    continue
                where = f"{path} ({image_id}, {finding})"
                rle = tasks.get(finding) if isinstance(tasks, dict) else None
                try:
                    has_lesion = sum(coco_rle_counts(rle)[1::2]) > 0
                except ValueError as e:
                    report(ItemIssue(where, "mask_unusable", f"segmentation unusable: {e}"), issues)
                    continue
                release_labels = label_of[release]
                label = int(has_lesion) if release_labels is None else release_labels.get(image_id, -1)
                if label is None:  # a bad label cell, reported above
                    continue
                if label == -1:
                    report(ItemIssue(where, "label_value", "image not in the labels CSV"), issues)
                    continue
                if labels is not None and label != labels:
                    continue
                if label and not has_lesion:
                    report(ItemIssue(where, "mask_unusable", "positive for the finding but its segmentation is "
                                     "empty"), issues)
                    continue
                if image_id not in images:
                    report(ItemIssue(str(_expected_image(root, release, image_id)), "unreadable_image",
                                     "image file not found under the dataset folder"), issues)
                    continue
                yield {"image": str(images[image_id]), "label": label, "mask": rle, "boxes": [],
                       "image_id": image_id, "patient": patient, "split": item_split, "finding": finding}

    return collect(root, candidates(), issues, inspect_png if check_files else None, limit,
                   f"finding={finding!r}, split={split!r}, labels={labels!r}")


"""Reader for SIIM-ACR Pneumothorax: ``train-rle.csv`` (run-length encoded masks), DICOMs nested by study/series.

The traps (DATASETS.md): the CSV's second header is `` EncodedPixels`` with a leading space; ``-1`` means no
pneumothorax; several rows of one image are its instances; the RLE is the Kaggle convention, start offsets
relative to the end of the previous run and the pixels counted column by column, so a decoded 1024 x 1024 mask
is transposed. :func:`prepare_siim` decodes every mask once to ``masks/<ImageId>.png`` and writes ``split.csv``
by patient (the DICOM ``PatientID``); :func:`load_siim_datalist` then reads the folder like the RSNA one.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from bundle.data.dicom import inspect_dicom
from bundle.data.screening import ItemIssue, ItemList, collect, report
from bundle.data.tables import dataset_folder, read_csv, seeded_split

RLE_CSV = "train-rle.csv"
MASKS_DIR = "masks"
SPLIT_CSV = "split.csv"
NO_FINDING = "-1"


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """The bool mask (rows, columns) of one Kaggle SIIM run-length encoding: pairs of (start offset relative to the
    end of the previous run, run length), counted column by column. A run past the image is an error."""
    values = [int(v) for v in rle.split()]
    if len(values) % 2:
        raise ValueError(f"odd number of values ({len(values)}): expected start/length pairs")
    rows, columns = shape
    flat = np.zeros(rows * columns, dtype=bool)
    position = 0
    for start, length in zip(values[0::2], values[1::2]):
        position += start
        if start < 0 or length < 0 or position + length > flat.size:
            raise ValueError(f"a run ends at pixel {position + length}, past the {columns} x {rows} image")
        flat[position:position + length] = True
        position += length
    return flat.reshape(columns, rows).T


def rle_encode(mask: np.ndarray) -> str:
    """The Kaggle SIIM run-length encoding of a bool mask (rows, columns): the inverse of :func:`rle_decode`."""
    flat = np.concatenate([[False], mask.T.ravel(), [False]])
    edges = np.flatnonzero(flat[1:] != flat[:-1])
    starts, ends = edges[0::2], edges[1::2]
    relative = starts - np.concatenate([[0], ends[:-1]])
    return " ".join(f"{s} {e - b}" for s, b, e in zip(relative, starts, ends))


def _dicoms(root: Path) -> dict[str, Path]:
    """Every DICOM under ``root`` (``<study>/<series>/<ImageId>.dcm``) by ImageId."""
    return {p.stem: p for p in sorted(root.rglob("*.dcm"))}


def prepare_siim(dataset_dir: str | Path, split_seed: int = 0) -> tuple[int, list[ItemIssue]]:
    """Decode every positive image's instances (OR-ed) to ``masks/<ImageId>.png`` and write ``split.csv``
    (ImageId, patientId, split; by patient); returns how many masks were written and the rows that could not
    be used (an RLE that does not fit its image, an image that is missing or unreadable)."""
    root = Path(dataset_dir)
    table = read_csv(root / RLE_CSV, ("ImageId", "EncodedPixels"), dtype=str, keep_default_na=False)
    files, issues, patient_of = _dicoms(root), [], {}
    runs: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for line, (image_id, rle) in enumerate(zip(table.ImageId, table.EncodedPixels), start=2):
        runs[image_id.strip()].append((line, rle.strip()))
    (root / MASKS_DIR).mkdir(exist_ok=True)
    written = 0
    for image_id, rows in runs.items():
        if image_id not in files:
            issues.append(ItemIssue(f"{root / RLE_CSV} line {rows[0][0]} (ImageId {image_id})", "unreadable_image",
                                    "no DICOM of this ImageId under the dataset folder"))
            continue
        header = pydicom.dcmread(files[image_id], stop_before_pixels=True)
        patient_of[image_id] = str(header.get("PatientID", image_id))
        encoded = [(line, rle) for line, rle in rows if rle != NO_FINDING]
        if not encoded:
            continue
        shape, mask = (int(header.Rows), int(header.Columns)), None
        for line, rle in encoded:  # the instances of one image, OR-ed
            try:
                mask = rle_decode(rle, shape) | (False if mask is None else mask)
            except ValueError as e:
                issues.append(ItemIssue(f"{root / RLE_CSV} line {line} (ImageId {image_id})", "label_value",
                                        f"EncodedPixels do not fit the {shape[1]} x {shape[0]} image: {e}"))
                break
        else:
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / MASKS_DIR / f"{image_id}.png")
            written += 1
    by_patient = seeded_split(sorted(set(patient_of.values())), split_seed)
    lines = ["ImageId,patientId,split"] + [f"{i},{p},{by_patient[p]}" for i, p in patient_of.items()]
    (root / SPLIT_CSV).write_text("\n".join(lines) + "\n")
    return written, issues


def load_siim_datalist(
    dataset_dir: str | Path,
    split: str | None = None,
    labels: int | None = None,
    check_files: bool = True,
    limit: int | None = None,
) -> ItemList:
    """Read a prepared SIIM-ACR folder (:func:`prepare_siim`) into MONAI data dicts: ``image`` (DICOM), ``label``
    (1: pneumothorax), ``mask`` (the decoded PNG, positives), ``boxes`` (none), ``image_id`` (the ImageId),
    ``patient`` and ``split``; screened like the RSNA reader."""
    root = dataset_folder(dataset_dir, split)
    if not (root / SPLIT_CSV).is_file():
        raise FileNotFoundError(f"{root / SPLIT_CSV}: not prepared: run python scripts/prepare_siim.py {root}")
    table = read_csv(root / RLE_CSV, ("ImageId", "EncodedPixels"), dtype=str, keep_default_na=False)
    splits = read_csv(root / SPLIT_CSV, ("ImageId", "patientId", "split"), dtype=str)
    split_of = dict(zip(splits.ImageId, splits.split))
    patient_of = dict(zip(splits.ImageId, splits.patientId))
    label_of: dict[str, int] = {}
    for image_id, rle in zip(table.ImageId, table.EncodedPixels):
        label_of[image_id.strip()] = max(label_of.get(image_id.strip(), 0), int(rle.strip() != NO_FINDING))
    files, issues = _dicoms(root), []

    def candidates():
        for image_id, label in label_of.items():
            if split is not None and split_of.get(image_id) != split or labels is not None and label != labels:
                continue
            mask = root / MASKS_DIR / f"{image_id}.png"
            if image_id not in files or (label and not mask.is_file()):
                why = "no DICOM of this ImageId" if image_id not in files else "no decoded mask"
                report(ItemIssue(f"{root / RLE_CSV} (ImageId {image_id})", "unreadable_image" if image_id not in files
                                 else "mask_unusable", f"{why} (prepare_siim.py said why)"), issues)
                continue
            yield {"image": str(files[image_id]), "label": label, "boxes": [], "image_id": image_id,
                   "patient": patient_of.get(image_id, image_id), "split": split_of.get(image_id, ""),
                   **({"mask": str(mask)} if label else {})}

    return collect(root, candidates(), issues, inspect_dicom if check_files else None, limit,
                   f"split={split!r}, labels={labels!r}")

"""A small CheXlocalize folder in the release's exact on-disk layout (its README), from synthetic radiographs.

``CheXpert/{val,test}/<patient>/study1/view1_frontal.jpg`` (8-bit greyscale JPEG), ``CheXpert/{val,test}_labels.csv``
with CheXpert's header (``Lung Opacity`` where the segmentations say ``Airspace Opacity``; the validation CSV's
``Path`` starts ``CheXpert-v1.0/valid/``, the test one's ``test/``), and ``CheXlocalize/gt_segmentations_*.json``
with every image's ten tasks as COCO RLE written by pycocotools (the reference encoder), all-zero for negatives.
The synthetic lesion is the ``Airspace Opacity`` finding; ``Cardiomegaly`` is a second finding on a seeded
half of the images, independent of the lesion, outlined as a central rectangle (where a heart would be).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as coco

from bundle.data.chexlocalize import FINDINGS
from bundle.data.synthetic import SyntheticConfig, render

CHEXPERT_COLUMNS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                    "Pleural Other", "Fracture", "Support Devices")


def encode(mask: np.ndarray) -> dict:
    """A bool mask as cheXlocalize stores it: pycocotools' RLE with the counts as a str."""
    rle = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def write_chexlocalize_folder(root: Path, n_patients: tuple[int, int] = (10, 4), size: int = 96,
                              seed: int = 0) -> dict:
    """Write the folder (``n_patients`` in the val and test sets, one or two studies each); return
    ``{cxr_id: (release, patient, labels by finding, masks by finding)}``."""
    rng = np.random.default_rng(seed)
    truth = {}
    first = 64541
    for release, count, prefix in (("val", n_patients[0], "CheXpert-v1.0/valid"), ("test", n_patients[1], "test")):
        rows = ["Path," + ("Sex,Age,Frontal/Lateral,AP/PA," if release == "val" else "") + ",".join(CHEXPERT_COLUMNS)]
        segmentations = {}
        for p in range(count):
            patient = f"patient{first}"
            first += 1
            for study in range(1, 2 + int(rng.random() < 0.3)):
                lesion = bool(rng.random() < 0.6)
                sample = render(first * 10 + study, lesion, SyntheticConfig(size=size))
                relative = Path(patient) / f"study{study}" / "view1_frontal.jpg"
                folder = root / "CheXpert" / release / relative.parent
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.round(sample.image * 255).astype(np.uint8), "L").save(folder / relative.name,
                                                                                       quality=95)
                cid = f"{patient}_study{study}_view1_frontal"
                heart = np.zeros_like(sample.mask)
                if rng.random() < 0.5:
                    heart[int(0.45 * size):int(0.75 * size), int(0.35 * size):int(0.65 * size)] = True
                masks = {f: np.zeros_like(sample.mask) for f in FINDINGS}
                masks["Airspace Opacity"], masks["Cardiomegaly"] = sample.mask, heart
                labels = {f: int(masks[f].any()) for f in FINDINGS}
                segmentations[cid] = {f: encode(masks[f]) for f in FINDINGS}
                cells = {c: float(labels.get("Airspace Opacity" if c == "Lung Opacity" else c, 0))
                         for c in CHEXPERT_COLUMNS}
                cells["No Finding"] = float(not lesion)
                rows.append(",".join([f"{prefix}/{relative.as_posix()}"]
                                     + (["Male", "60", "Frontal", "PA"] if release == "val" else [])
                                     + [f"{cells[c]:.1f}" for c in CHEXPERT_COLUMNS]))
                truth[cid] = (release, patient, labels, masks)
        (root / "CheXpert" / f"{release}_labels.csv").write_text("\n".join(rows) + "\n")
        (root / "CheXlocalize").mkdir(parents=True, exist_ok=True)
        (root / "CheXlocalize" / f"gt_segmentations_{release}.json").write_text(json.dumps(segmentations))
    return truth

"""A small SIIM-ACR Pneumothorax folder in the competition's exact on-disk format (DATASETS.md), from synthetic
radiographs: ``train-rle.csv`` with its `` EncodedPixels`` header (leading space), ``-1`` for no finding, one row
per instance in the Kaggle run-length convention (relative offsets, column by column), and the DICOMs nested as
``dicom-images-train/<study>/<series>/<ImageId>.dcm``. Images are 96 x 128 (not square) so a transposed mask shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from bundle.data.dicom import write_radiograph
from bundle.data.siim import rle_encode
from bundle.data.synthetic import SyntheticConfig, render


def write_siim_folder(root: Path, n_patients: int = 10, images_per_patient: int = 2, seed: int = 0) -> dict:
    """Write the folder; return ``{ImageId: (patient, mask)}`` (mask None for a negative)."""
    rng = np.random.default_rng(seed)
    rows = ["ImageId, EncodedPixels"]
    truth = {}
    for p in range(n_patients):
        patient = f"patient-{p:03d}"
        for k in range(images_per_patient):
            image_id = generate_uid(entropy_srcs=[f"siim-{seed}-{p}-{k}"])
            positive = bool(rng.random() < 0.6)
            sample = render(seed * 1000 + p * 10 + k, positive, SyntheticConfig(size=128))
            image, mask = sample.image[16:112], sample.mask[16:112]  # 96 rows x 128 columns
            folder = root / "dicom-images-train" / generate_uid(entropy_srcs=[image_id, "study"]) / generate_uid(
                entropy_srcs=[image_id, "series"])
            folder.mkdir(parents=True)
            write_radiograph(folder / f"{image_id}.dcm", image, patient)
            if positive and mask.any():
                top, bottom = mask.copy(), mask.copy()  # two instances, as the competition lists them
                cut = int(np.flatnonzero(mask.any(axis=1)).mean())
                top[cut:], bottom[:cut] = False, False
                rows += [f"{image_id}, {rle_encode(part)}" for part in (top, bottom) if part.any()]
                truth[image_id] = (patient, mask)
            else:
                rows.append(f"{image_id}, -1")
                truth[image_id] = (patient, None)
    root.mkdir(parents=True, exist_ok=True)
    (root / "train-rle.csv").write_text("\n".join(rows) + "\n")
    return truth

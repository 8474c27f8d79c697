"""A small NIH ChestX-ray14 folder in the release's exact on-disk format (DATASETS.md), from synthetic radiographs.

``Data_Entry_2017.csv`` with the release's header (and its trailing empty column), ``BBox_List_2017.csv`` whose
header ``Bbox [x,y,w,h]`` splits into four columns followed by three unnamed empty ones and which spells
``Infiltrate``, 8-bit PNGs under ``images_001/images/`` and ``images_002/images/`` (one of them RGBA, as in the
release), ``test_list.txt`` and ``train_val_list.txt``. Positives carry their finding and the renderer's lesion box.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bundle.data.synthetic import SyntheticConfig, render

ENTRY_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"


def write_nih_folder(root: Path, n_patients: int = 12, images_per_patient: int = 3, size: int = 128,
                     seed: int = 0) -> dict:
    """Write the folder; return what a reader must find: ``{image name: (patient, findings, boxes by finding)}``
    and which images are RGBA."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    entries, boxes, truth, test, train_val, rgba = [ENTRY_HEADER], [BBOX_HEADER], {}, [], [], []
    for p in range(n_patients):
        patient = f"{p + 1:05d}"
        for k in range(images_per_patient):
            name = f"{patient}_{k:03d}.png"
            kind = rng.choice(["none", "pneumonia", "infiltration", "both"])
            sample = render(seed * 10_000 + p * 10 + k, kind != "none", SyntheticConfig(size=size))
            findings = {"none": ["No Finding"], "pneumonia": ["Pneumonia"], "infiltration": ["Infiltration"],
                        "both": ["Infiltration", "Pneumonia"]}[kind]
            folder = root / f"images_{1 + (p % 2):03d}" / "images"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.round(sample.image * 255).astype(np.uint8)
            if p == 1 and k == 0:  # the release has some RGBA PNGs
                Image.fromarray(np.dstack([pixels] * 3 + [np.full_like(pixels, 255)]), "RGBA").save(folder / name)
                rgba.append(name)
            else:
                Image.fromarray(pixels, "L").save(folder / name)
            entries.append(f"{name},{'|'.join(findings)},{k},{patient},{40 + p:03d}Y,M,PA,{size},{size},0.143,0.143,")
            by_finding = {}
            for finding in findings[:1] if kind == "both" else findings:  # only some positives have boxes
                if finding == "No Finding":
                    continue
                x, y, w, h = sample.boxes[0]
                spelled = "Infiltrate" if finding == "Infiltration" else finding
                boxes.append(f"{name},{spelled},{x:.6f},{y:.6f},{w:.6f},{h:.6f},,,")
                by_finding[finding] = [[float(x), float(y), float(w), float(h)]]
            truth[name] = (patient, findings, by_finding)
            (test if p >= n_patients - 3 else train_val).append(name)
    (root / "Data_Entry_2017.csv").write_text("\n".join(entries) + "\n")
    (root / "BBox_List_2017.csv").write_text("\n".join(boxes) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    return {"images": truth, "rgba": rgba, "test": test}

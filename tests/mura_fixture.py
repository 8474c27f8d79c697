"""A small MURA v1.1 folder in the release's exact layout (DATASETS.md), from synthetic musculoskeletal radiographs,
with three readers' VGG Image Annotator CSV exports of the abnormal images (a rectangle, a polygon, and a third
reader who marks elsewhere) — enough to check the 2-of-3 consensus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from bundle.data.synthetic import SyntheticConfig, render

VIA_HEADER = "filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes"


def _via_row(path: str, shape: dict) -> str:
    cell = json.dumps(shape).replace('"', '""')
    return f'{path},1234,"{{}}",1,0,"{cell}","{{}}"'


def write_mura_folder(root: Path, n_patients: int = 8, seed: int = 0) -> dict:
    """Write ``root/MURA-v1.1`` and the readers' CSVs ``root/reader{1,2,3}.csv``; return ``{path: (patient,
    label, reader shapes)}`` with paths as the image lists give them."""
    truth, lists = {}, {"train": [], "valid": []}
    readers = {1: [VIA_HEADER], 2: [VIA_HEADER], 3: [VIA_HEADER]}
    for p in range(n_patients):
        part = "valid" if p >= n_patients - 2 else "train"
        patient = f"patient{p + 1:05d}"
        for study, positive in ((1, p % 2 == 0), (2, p % 2 == 1)):
            folder = f"MURA-v1.1/{part}/XR_WRIST/{patient}/study{study}_{'positive' if positive else 'negative'}"
            for k in (1, 2):
                path = f"{folder}/image{k}.png"
                sample = render(seed * 1000 + p * 10 + study * 2 + k, positive, SyntheticConfig(variant="msk"))
                (root / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.round(sample.image * 255).astype(np.uint8)).save(root / path)
                lists[part].append(path)
                shapes = {}
                if positive and k == 1 and sample.boxes:  # the readers outline one image per abnormal study
                    x, y, w, h = (int(v) for v in sample.boxes[0])
                    shapes = {1: {"name": "rect", "x": x, "y": y, "width": w, "height": h},
                              2: {"name": "polygon", "all_points_x": [x, x + w, x + w, x],
                                  "all_points_y": [y, y, y + h + 3, y + h + 3]},
                              3: {"name": "rect", "x": max(x - 5, 0), "y": y, "width": 4, "height": h}}
                    for reader, shape in shapes.items():
                        readers[reader].append(_via_row(path, shape))
                truth[path] = (patient, int(positive), shapes)
    for part, paths in lists.items():
        (root / f"{part}_image_paths.csv").write_text("\n".join(paths) + "\n")
    for reader, rows in readers.items():
        (root / f"reader{reader}.csv").write_text("\n".join(rows) + "\n")
    return truth

"""Reader for MURA v1.1 (musculoskeletal radiographs) and the readers' localisation exports of the 2024 study.

Layout (DATASETS.md): ``MURA-v1.1/{train,valid}/XR_<REGION>/patient<ID>/study<N>_{positive,negative}/image<K>.png``,
``{train,valid}_image_paths.csv`` with no header (one path a line, from the folder holding ``MURA-v1.1``). The
label is the study folder's suffix. ``valid`` is the test split; the ``train`` patients are split 7:1 into train
and val with a seed. Localisation comes from VGG Image Annotator CSV exports, one per reader
(``filename, ..., region_shape_attributes`` as JSON rectangles or polygons): :func:`prepare_mura` draws each
reader's regions and keeps the pixels at least two of the three readers marked (the consensus mask) as
``masks/<region>/<patient>/<study>/<image>.png`` under the dataset folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bundle.data.png import inspect_png
from bundle.data.screening import ItemIssue, ItemList, collect, report
from bundle.data.tables import dataset_folder, seeded_split

ROOT_DIR = "MURA-v1.1"
PATHS_CSV = {"train": "train_image_paths.csv", "valid": "valid_image_paths.csv"}
MASKS_DIR = "masks"
VIA_COLUMNS = ("filename", "region_shape_attributes")
CONSENSUS = 2  # of the three readers


def image_key(path: str | Path) -> str:
    """``XR_<REGION>/patient<ID>/study<N>_<label>/image<K>.png``: an image's identity whatever folder holds MURA."""
    return "/".join(Path(str(path).strip()).parts[-4:])


def _container(dataset_dir: Path) -> Path:
    """The folder holding ``MURA-v1.1`` (``dataset_dir`` may be either)."""
    return dataset_dir.parent if dataset_dir.name == ROOT_DIR else dataset_dir


def _region_mask(shape: dict, size: tuple[int, int]) -> np.ndarray:
    """One VIA region (``rect`` or ``polygon``, pixels) drawn on a (rows, columns) grid."""
    from skimage.draw import polygon

    mask = np.zeros(size, dtype=bool)
    if shape.get("name") == "rect":
        x, y, w, h = (int(round(float(shape[k]))) for k in ("x", "y", "width", "height"))
        mask[max(y, 0):max(y + h, 0), max(x, 0):max(x + w, 0)] = True
    elif shape.get("name") == "polygon":
        rows, columns = polygon(shape["all_points_y"], shape["all_points_x"], shape=size)
        mask[rows, columns] = True
    else:
        raise ValueError(f"region shape {shape.get('name')!r}: expected rect or polygon")
    return mask


def prepare_mura(dataset_dir: str | Path, annotations: list[str | Path]) -> tuple[int, list[ItemIssue]]:
    """Write the consensus mask (pixels marked by at least two readers) of every image the reader CSVs
    ``annotations`` outline; returns how many masks were written and the rows that could not be used."""
    root = _container(Path(dataset_dir))
    images = {image_key(p): p for p in (root / ROOT_DIR).rglob("*.png")}
    votes: dict[str, np.ndarray] = {}
    issues: list[ItemIssue] = []
    for csv in map(Path, annotations):
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
        missing = [c for c in VIA_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"{csv}: missing column(s) {missing}; found {list(table.columns)} (a VIA CSV export?)")
        marked: dict[str, np.ndarray] = {}
        for line, (name, shape) in enumerate(zip(table.filename, table.region_shape_attributes), start=2):
            key, where = image_key(name), f"{csv} line {line} ({name})"
            if key not in images:
                issues.append(ItemIssue(where, "unreadable_image", "no such image under the dataset folder"))
                continue
            if key not in marked:
                with Image.open(images[key]) as image:
                    marked[key] = np.zeros((image.size[1], image.size[0]), dtype=bool)
            try:
                marked[key] |= _region_mask(json.loads(shape), marked[key].shape) if shape.strip("{} ") else False
            except (ValueError, KeyError, TypeError) as e:
                issues.append(ItemIssue(where, "label_value", f"region {shape!r} cannot be drawn ({e})"))
        for key, mask in marked.items():
            votes[key] = votes.get(key, 0) + mask.astype(np.uint8)
    for key, count in votes.items():
        out = root / MASKS_DIR / key
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(((count >= CONSENSUS) * 255).astype(np.uint8)).save(out)
    return len(votes), issues


def load_mura_datalist(
    dataset_dir: str | Path,
    split: str | None = None,
    labels: int | None = None,
    region: str | None = None,
    check_files: bool = True,
    split_seed: int = 0,
    limit: int | None = None,
) -> ItemList:
    """Read MURA v1.1 into MONAI data dicts: ``image`` (PNG), ``label`` (1: abnormal study), ``mask`` (the readers'
    consensus, where :func:`prepare_mura` wrote one), ``boxes`` (none), ``image_id`` (the image key),
    ``patient``, ``study`` and ``split``; ``region`` keeps one body part (e.g. ``XR_WRIST``). ``labels=1`` keeps
    the abnormal images that have a consensus mask (the localisation ground truth). Screened like the others."""
    root = _container(Path(dataset_dir))
    if not (root / ROOT_DIR).is_dir():
        raise FileNotFoundError(f"{root / ROOT_DIR}: MURA folder does not exist (set dataset_dir to the folder "
                                "holding it)")
    dataset_folder(dataset_dir, split)
    paths: dict[str, list[str]] = {}
    for part, name in PATHS_CSV.items():
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root / name}: expected file is missing (the release's image list)")
        paths[part] = [line.strip() for line in (root / name).read_text().splitlines() if line.strip()]
    train_patients = sorted({image_key(p).split("/")[1] for p in paths["train"]})
    train_split = seeded_split(train_patients, split_seed, fractions=(0.875, 0.125, 0.0))
    issues: list[ItemIssue] = []

    def candidates():
        for part, listed in paths.items():
            for line, path in enumerate(listed, start=1):
                key = image_key(path)
                parts = key.split("/")
                if len(parts) != 4 or not parts[2].endswith(("_positive", "_negative")):
                    report(ItemIssue(f"{root / PATHS_CSV[part]} line {line}", "label_value",
                                     f"{path!r} is not MURA-v1.1/<part>/XR_<REGION>/patient<ID>/study<N>_<label>/"
                                     "image<K>.png"), issues)
                    continue
                body, patient, study, _ = parts
                item_split = "test" if part == "valid" else train_split[patient]
                label = int(study.endswith("_positive"))
                mask = root / MASKS_DIR / key
                if (split is not None and item_split != split or region is not None and body != region
                        or labels is not None and (label != labels or labels == 1 and not mask.is_file())):
                    continue
                yield {"image": str(root / path), "label": label, "boxes": [], "image_id": key,
                       "patient": patient, "study": f"{body}/{patient}/{study}", "split": item_split,
                       **({"mask": str(mask)} if mask.is_file() else {})}

    return collect(root, candidates(), issues, inspect_png if check_files else None, limit,
                   f"split={split!r}, labels={labels!r}, region={region!r}")

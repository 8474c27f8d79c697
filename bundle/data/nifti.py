"""Reader for NIfTI volume datasets described by a Decathlon-style ``dataset.json`` (MONAI's
``load_decathlon_datalist`` format), and the synthetic brain volumes (``synthetic_brain``) written that way.

Each ``training`` entry has ``image`` (a volume) and ``label``: in the Decathlon the label volume (a segmentation), here
also possibly the class itself (0 or 1). A ``class`` key, when present, is the class and ``label`` (a volume) or
``mask`` the lesion mask; without one, the class is whether the label volume marks any voxel. Paths are relative to
the folder of ``dataset.json``. Splits are by patient (``patient`` key, else the file name) with a seed, 6:1:1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bundle.data.screening import ImageCheck, ItemIssue, ItemList, collect, report
from bundle.data.tables import dataset_folder, file_stem, seeded_split

DATASET_JSON = "dataset.json"
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _grid(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A NIfTI shape as a grid: a trailing single frame dropped."""
    shape = tuple(int(s) for s in shape)
    return shape[:3] if len(shape) == 4 and shape[3] == 1 else shape


def volume_shape(path: str | Path) -> tuple[int, ...]:
    """The 3-D grid of a NIfTI file, from its header."""
    import nibabel as nib

    return _grid(nib.load(str(path)).shape)


def inspect_nifti(path: str | Path) -> ImageCheck:
    """Screen ``path`` as one volume: readable and complete (decoded here), one 3-D grid, finite values."""
    import nibabel as nib

    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as e:
        return ImageCheck(f"not a readable NIfTI file ({type(e).__name__}: {e})")
    shape = _grid(data.shape)  # the file is read once
    if len(shape) != 3:
        return ImageCheck(f"data of shape {tuple(data.shape)}: one 3-D volume per file expected", reason="image_shape")
    if not np.isfinite(data).all():
        return ImageCheck("the volume holds NaN or infinite values", reason="image_shape")
    return ImageCheck(shape=shape)


def _class_and_mask(entry: dict, root: Path) -> tuple[int, str | None]:
    """An entry's class and lesion-mask path (see the module docstring); a ValueError saying what is wrong."""
    label, mask = entry.get("label"), entry.get("mask")
    if isinstance(label, str):
        mask = mask or label
    if mask is not None and not (root / mask).is_file():
        raise ValueError(f"mask volume {root / mask} is missing")
    if "class" in entry or isinstance(label, (int, float)) and not isinstance(label, bool):
        value = entry.get("class", label)
        if value not in (0, 1):
            raise ValueError(f"class {value!r}: expected 0 or 1")
        return int(value), mask
    if mask is None:
        raise ValueError("no class and no label volume")
    import nibabel as nib

    return int(np.asanyarray(nib.load(str(root / mask)).dataobj).any()), mask


def load_nifti_datalist(
    dataset_dir: str | Path,
    split: str | None = None,
    labels: int | None = None,
    check_files: bool = True,
    split_seed: int = 0,
    limit: int | None = None,
) -> ItemList:
    """Read a folder with ``dataset.json`` into MONAI data dicts: ``image`` (NIfTI path), ``label`` (class), ``mask``
    (the lesion mask volume, where there is one), ``boxes`` (none), ``image_id`` (the file name without
    extension), ``patient`` and ``split``; screened like the 2-D readers (volumes decoded, masks of the volume's
    grid)."""
    root = dataset_folder(dataset_dir, split)
    path = root / DATASET_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected file is missing (a Decathlon-style dataset.json)")
    try:
        entries = json.loads(path.read_text())["training"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a dataset.json with a 'training' list ({type(e).__name__}: {e})") from e
    patients = [str(e.get("patient", file_stem(e.get("image", ""), NIFTI_SUFFIXES))) if isinstance(e, dict) else ""
                for e in entries]
    split_of = seeded_split(sorted(set(patients)), split_seed)
    issues: list[ItemIssue] = []

    def candidates():
        for index, (entry, patient) in enumerate(zip(entries, patients)):
            if split is not None and split_of[patient] != split:
                continue
            where = f"{path} training[{index}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
                report(ItemIssue(where, "label_value", "entry without an 'image' path"), issues)
                continue
            try:
                label, mask = _class_and_mask(entry, root)
            except ValueError as e:
                report(ItemIssue(f"{where} ({entry['image']})", "label_value", str(e)), issues)
                continue
            if labels is not None and label != labels:
                continue
            yield {"image": str(root / entry["image"]), "label": label, "boxes": [],
                   "image_id": file_stem(entry["image"], NIFTI_SUFFIXES), "patient": patient,
                   "split": split_of[patient],
                   **({"mask": str(root / mask)} if mask else {})}

    return collect(root, candidates(), issues, inspect_nifti if check_files else None, limit,
                   f"split={split!r}, labels={labels!r}")

"""Dataset readers, the synthetic radiograph generator, and ground-truth mask helpers."""

from __future__ import annotations

from pathlib import Path

from bundle.data.dicom import RadiographReader, inspect_dicom, write_radiograph
from bundle.data.labels import permute_labels, seeded_subset
from bundle.data.masks import boxes_to_mask
from bundle.data.rsna import load_rsna_datalist
from bundle.data.screening import ItemIssue, ItemList
from bundle.data.synthetic import SyntheticConfig, render
from bundle.data.synthetic_dataset import ensure_synthetic_dataset, write_synthetic_dataset
from bundle.data.transforms import GroundTruthMaskd

DATASETS = ("synthetic", "rsna")


def prepare_dataset(name: str, dataset_dir: str, synthetic: dict | None = None) -> Path:
    """Make sure ``dataset_dir`` holds dataset ``name``: generate the synthetic one if missing, check a real one."""
    if name == "synthetic":
        return ensure_synthetic_dataset(dataset_dir, **(synthetic or {}))
    if name == "rsna":
        if not Path(dataset_dir).is_dir():
            raise FileNotFoundError(f"{dataset_dir}: RSNA dataset folder does not exist (set dataset_dir)")
        return Path(dataset_dir)
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")


__all__ = [
    "DATASETS", "GroundTruthMaskd", "ItemIssue", "ItemList", "RadiographReader", "SyntheticConfig", "boxes_to_mask", "inspect_dicom",
    "ensure_synthetic_dataset", "load_rsna_datalist", "permute_labels", "prepare_dataset", "render", "seeded_subset",
    "write_radiograph", "write_synthetic_dataset",
]

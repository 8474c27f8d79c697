"""Dataset readers, the synthetic radiograph generator, and ground-truth mask helpers."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from bundle.console import duration
from bundle.data import chexlocalize, nih
from bundle.data.chexlocalize import load_chexlocalize_datalist
from bundle.data.dicom import RadiographReader, inspect_dicom, write_radiograph
from bundle.data.labels import permute_labels, seeded_subset
from bundle.data.masks import boxes_to_mask
from bundle.data.mura import load_mura_datalist, prepare_mura
from bundle.data.nifti import inspect_nifti, load_nifti_datalist
from bundle.data.nih import load_nih_datalist
from bundle.data.png import RadiographPNGReader
from bundle.data.rsna import load_rsna_datalist
from bundle.data.screening import ItemIssue, ItemList
from bundle.data.siim import load_siim_datalist, prepare_siim
from bundle.data.synthetic import SyntheticConfig, render
from bundle.data.synthetic_dataset import ensure_synthetic_dataset, write_synthetic_dataset
from bundle.data.synthetic_volume import ensure_volume_dataset, render_volume, write_volume_dataset
from bundle.data.tables import dataset_folder
from bundle.data.transforms import GroundTruthMaskd
from bundle.distributed import main_process_first

logger = logging.getLogger(__name__)

# dataset name -> the function that reads its datalist (an image reader, in MONAI's sense, reads one file)
DATALISTS = {"synthetic": load_rsna_datalist, "rsna": load_rsna_datalist, "nih": load_nih_datalist,
             "siim": load_siim_datalist, "mura": load_mura_datalist, "chexlocalize": load_chexlocalize_datalist,
             "nifti": load_nifti_datalist, "synthetic_brain": load_nifti_datalist}
SYNTHETIC = {"synthetic": ensure_synthetic_dataset, "synthetic_brain": ensure_volume_dataset}  # generated when missing
DATASETS = tuple(DATALISTS)
FINDINGS = {"nih": nih.BOXED_FINDINGS, "chexlocalize": chexlocalize.FINDINGS}  # multi-label: localisable findings


def _reader(name: str):
    try:
        return DATALISTS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r} (dataset_name); choose one of {DATASETS}") from None


def prepare_dataset(name: str, dataset_dir: str, synthetic: dict | None = None) -> Path:
    """Make sure ``dataset_dir`` holds dataset ``name``: generate a synthetic one if missing, check a real one.
    Under ``torchrun`` rank 0 writes it first; the other ranks then find it written.

    Args:
        name: the dataset (``dataset_name``): one of :data:`DATASETS`; ``synthetic`` and ``synthetic_brain`` are
            generated when missing, the others must already be there.
        dataset_dir: the folder that holds (or receives) the dataset.
        synthetic: keyword settings of the generator (e.g. ``n_images``, ``seed``); ignored for real datasets.
    """
    _reader(name)
    start = time.perf_counter()
    with main_process_first("preparing the data"):
        folder = SYNTHETIC[name](dataset_dir, **(synthetic or {})) if name in SYNTHETIC else dataset_folder(dataset_dir)
    logger.info("data: %s dataset in %s: %s", name, folder, duration(time.perf_counter() - start))
    return folder


def load_dataset(name: str, dataset_dir: str | Path, split: str | None = None, labels: int | None = None,
                 limit: int | None = None, options: dict | None = None) -> ItemList:
    """The screened datalist of dataset ``name`` (``dataset_name`` in the configs) in ``dataset_dir``: one split,
    one class, the first ``limit`` usable items; ``options`` are the reader's own (e.g. ``finding`` for ``nih``).

    Args:
        name: the dataset, one of :data:`DATASETS`; it picks the datalist reader (:data:`DATALISTS`).
        dataset_dir: the folder holding the dataset.
        split: ``train``, ``val`` or ``test`` (every split when ``None``).
        labels: keep only items of this class (e.g. 1 for the positives; every class when ``None``).
        limit: keep the first N usable items (all when ``None``).
        options: the reader's own keyword settings (``dataset_options`` in the configs; none when ``None``).
    """
    return _reader(name)(dataset_dir, split=split, labels=labels, limit=limit, **(options or {}))


__all__ = [
    "DATALISTS", "DATASETS", "FINDINGS", "boxes_to_mask", "ensure_synthetic_dataset", "ensure_volume_dataset",
    "GroundTruthMaskd", "inspect_dicom", "inspect_nifti", "ItemIssue", "ItemList", "load_chexlocalize_datalist",
    "load_dataset", "load_mura_datalist", "load_nifti_datalist", "load_nih_datalist", "load_rsna_datalist",
    "load_siim_datalist", "permute_labels", "prepare_dataset", "prepare_mura", "prepare_siim", "RadiographPNGReader",
    "RadiographReader", "render", "render_volume", "seeded_subset", "SyntheticConfig", "write_radiograph",
    "write_synthetic_dataset", "write_volume_dataset"
]

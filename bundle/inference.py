"""Inference on a folder of images with no ground truth (``configs/inference.json``): each image's class
probabilities (MONAI's ``ClassificationSaver``) and the maps of the configured saliency methods, saved as NIfTI on the
image's own grid and affine (MONAI's ``SaveImage``) with a PNG overlay per image."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.transforms import Resize, SaveImage

from bundle.data.dicom import inspect_dicom
from bundle.data.nifti import inspect_nifti, is_nifti
from bundle.data.png import inspect_png
from bundle.data.screening import ImageCheck, ItemList, collect
from bundle.data.tables import file_stem
from bundle.report.figures import saliency_gallery
from bundle.trust.normalization import normalize_maps

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".dcm", ".png", ".jpg", ".jpeg", ".nii", ".nii.gz")


def _inspect(path: str) -> ImageCheck:
    """Screen one file with its format's check (decoded in full, one image or volume)."""
    name = path.lower()
    return inspect_dicom(path) if name.endswith(".dcm") else inspect_nifti(path) if is_nifti(name) else inspect_png(path)


def image_files(folder: str | Path) -> ItemList:
    """Every DICOM, PNG, JPEG and NIfTI file under ``folder`` (sorted) that can be read, as MONAI data dicts
    ``{"image": path}``; a file that cannot is named in a warning and skipped, and a folder with none usable is an
    error naming it.

    Args:
        folder: the folder searched, with its subfolders, for image files by suffix (``dataset_dir`` in the configs).
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder of images does not exist (set dataset_dir)")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise ValueError(f"{root}: no DICOM, PNG, JPEG or NIfTI files (suffixes {', '.join(IMAGE_SUFFIXES)})")
    return collect(root, ({"image": str(p), "boxes": []} for p in files), [], _inspect, None, "every image file")


class SaliencyMapSaver:
    """Ignite handler for an inference evaluator: after each iteration, the configured methods' maps of the batch
    (target class ``target``), each resized to its image's original grid and saved as NIfTI with the image's affine
    (``<output_dir>/<image>_<method>.nii.gz``), and one PNG per image with every map over the image
    (``<image>_maps.png``; a volume shows its middle slice).

    Args:
        methods: saliency methods by name (``bundle.saliency.get_method``).
        output_dir: where the files go.
        target: the class whose evidence the maps show.

    Each image's own grid is the ``spatial_shape`` its reader recorded, and resizing a map back to it restores the
    image's affine as MONAI's ``Resize`` tracks it, so no file is read twice.
    """

    def __init__(self, methods: Mapping[str, object], output_dir: str, target: int = 1) -> None:
        self.methods, self.output_dir, self.target = dict(methods), Path(output_dir), target
        self.savers = {name: SaveImage(output_dir, output_postfix=name, separate_folder=False, print_log=False)
                       for name in self.methods}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        items = engine.state.batch  # decollated by the evaluator: one dict per image
        images = torch.stack([item["image"].as_tensor() for item in items]).to(engine.state.device)
        paths = [str(item["image"].meta["filename_or_obj"]) for item in items]
        maps = {name: method(engine.network, images, self.target).detach().cpu()
                for name, method in self.methods.items()}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for i, path in enumerate(paths):
            meta = items[i]["image"].meta  # the resized image's: its affine is the model's grid's
            spatial = tuple(int(s) for s in meta["spatial_shape"])  # the grid the reader gave
            mode = "bilinear" if len(spatial) == 2 else "trilinear"
            for name, batch_maps in maps.items():  # resizing back to the reader's grid restores its affine too
                resized = Resize(spatial, mode=mode)(MetaTensor(batch_maps[i][None].float(), meta=deepcopy(meta)))
                self.savers[name](resized)  # the map's own copy of the metadata: MetaTensor keeps the dict it is given
            shown = {n: normalize_maps(m[i:i + 1], "pair", getattr(self.methods[n], "signed", True))[0].numpy()
                     for n, m in maps.items()}  # as the study's gallery shows them
            grey = images[i:i + 1, 0].cpu().numpy()
            saliency_gallery(grey, np.zeros_like(grey), shown, [file_stem(path, IMAGE_SUFFIXES)],
                             self.output_dir / f"{file_stem(path, IMAGE_SUFFIXES)}_maps.png")
        logger.info("saliency maps of %d image(s) written to %s", len(paths), self.output_dir)

"""Synthetic brain-MRI-like volumes with an implanted lesion whose mask is the lesion itself: the 3-D default dataset.

A T1-weighted-looking head: scalp (bright), skull (dark), brain with correlated 3-D texture, two lateral ventricles
(dark CSF); per-sample shape jitter. Positives get an enhancing lesion (a textured, irregular blob brighter than the
brain, inside it); its mask is the blob's own support. The noise and the anatomy depend on the seed only, so the
lesion-free twin of a positive (same seed, ``lesion=False``) differs from it exactly on the lesion. Written as NIfTI
volumes with a Decathlon-style ``dataset.json`` (:func:`write_volume_dataset`), read by ``bundle.data.nifti``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

SPACING_MM = 1.5  # isotropic voxel size written to the NIfTI affine
MANIFEST = "dataset.json"


@dataclass(frozen=True)
class VolumeSample:
    image: np.ndarray  # float32 (D, H, W) in [0, 1]
    mask: np.ndarray  # bool (D, H, W): the lesion's support
    knobs: dict  # lesion radius (fraction of the volume) and contrast; empty for a negative


def _texture(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Correlated 3-D noise, zero mean and unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal((size,) * 3), sigma)
    return (field - field.mean()) / (field.std() + 1e-12)


def render_volume(seed: int, lesion: bool, size: int = 32, contrast: tuple[float, float] = (0.25, 0.45),
                  radius: tuple[float, float] = (0.10, 0.18), noise: float = 0.03) -> VolumeSample:
    """Render volume ``seed`` (``size`` voxels a side); ``lesion=False`` gives its lesion-free twin."""
    anatomy_rng, lesion_rng, noise_rng = (np.random.default_rng([seed, k]) for k in range(3))
    axis = np.linspace(-1.0, 1.0, size)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    radii = np.array([0.80, 0.72, 0.88]) * anatomy_rng.uniform(0.95, 1.05, 3)
    head = np.sqrt((z / radii[0]) ** 2 + (y / radii[1]) ** 2 + (x / radii[2]) ** 2)
    brain = head < 0.86
    image = np.where(head < 1.0, 0.85, 0.0)  # scalp
    image = np.where(head < 0.93, 0.2, image)  # skull
    image = np.where(brain, 0.55 + 0.06 * _texture(anatomy_rng, size, 1.5), image)
    for side in (-1, 1):  # lateral ventricles
        centre = np.array([0.05, 0.0, 0.16 * side]) + anatomy_rng.uniform(-0.03, 0.03, 3)
        shape = np.array([0.30, 0.12, 0.07]) * anatomy_rng.uniform(0.9, 1.1, 3)
        ventricle = (((z - centre[0]) / shape[0]) ** 2 + ((y - centre[1]) / shape[1]) ** 2
                     + ((x - centre[2]) / shape[2]) ** 2) < 1
        image = np.where(ventricle, 0.15, image)
    mask = np.zeros_like(brain)
    knobs: dict = {}
    if lesion:
        r = lesion_rng.uniform(*radius) * 2  # in the [-1, 1] grid
        direction = lesion_rng.normal(size=3)
        centre = direction / np.linalg.norm(direction) * lesion_rng.uniform(0.2, 0.55) * radii
        distance = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) / r
        mask = (distance + 0.25 * _texture(lesion_rng, size, 1.0) < 1.0) & brain
        strength = lesion_rng.uniform(*contrast)
        image = image + strength * mask * (1 - 0.5 * distance.clip(0, 1))
        knobs = {"radius": round(r / 2, 4), "contrast": round(float(strength), 4)}
    image = image + noise * noise_rng.standard_normal(image.shape)
    return VolumeSample(image.clip(0, 1).astype(np.float32), mask, knobs)


def _manifest(n_images: int, seed: int, size: int) -> dict:
    return {"name": "SyntheticBrain", "description": "synthetic brain-MRI-like volumes with implanted lesions",
            "tensorImageSize": "3D", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "lesion"},
            "generator": {"n_images": n_images, "seed": seed, "size": size}}


def write_volume_dataset(out_dir: str | Path, n_images: int = 160, seed: int = 0, size: int = 32) -> Path:
    """Write ``n_images`` volumes (every other one with a lesion) as ``imagesTr/brain_NNNN.nii.gz``, their lesion
    masks as ``labelsTr/brain_NNNN.nii.gz`` (all zero for negatives) and ``dataset.json`` listing each with its
    ``class``; the affine has :data:`SPACING_MM` voxels."""
    import nibabel as nib

    out = Path(out_dir)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = np.diag([SPACING_MM] * 3 + [1.0])
    training = []
    for i in range(n_images):
        lesion = i % 2 == 1
        sample = render_volume(seed * 100_000 + i, lesion, size)
        name = f"brain_{i:04d}.nii.gz"
        nib.save(nib.Nifti1Image(sample.image, affine), out / "imagesTr" / name)
        nib.save(nib.Nifti1Image(sample.mask.astype(np.uint8), affine), out / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}", "class": int(lesion),
                         "seed": seed * 100_000 + i})
    manifest = {**_manifest(n_images, seed, size), "numTraining": n_images, "training": training, "test": []}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return out


def ensure_volume_dataset(out_dir: str | Path, n_images: int = 160, seed: int = 0, size: int = 32,
                          variant: str = "brain") -> Path:
    """Generate the volume dataset unless ``out_dir`` holds one made with the same settings (another is an error)."""
    if variant != "brain":
        raise ValueError(f"the 3-D synthetic variant is 'brain', got {variant!r}")
    out = Path(out_dir)
    if (out / MANIFEST).is_file():
        found = json.loads((out / MANIFEST).read_text()).get("generator")
        if found != _manifest(n_images, seed, size)["generator"]:
            raise ValueError(f"{out / MANIFEST}: this dataset folder was generated with other settings ({found}); "
                             "delete the folder or point dataset_dir elsewhere")
        logger.debug("synthetic volume dataset found at %s", out)
        return out
    logger.info("generating %d synthetic volumes in %s", n_images, out)
    return write_volume_dataset(out, n_images, seed, size)


TWINS_DIR = "lesion_free_twins"


def write_volume_twins(dataset_dir: str | Path, image_ids: list[str], image_key: str = "image",
                       id_key: str = "image_id") -> list[dict]:
    """The lesion-free twin of each synthetic volume (same anatomy and noise, no lesion) as NIfTI under
    ``<dataset_dir>/lesion_free_twins`` (existing files reused): data dicts ``{image_key, id_key}`` in order."""
    import nibabel as nib

    root = Path(dataset_dir)
    manifest = json.loads((root / MANIFEST).read_text()) if (root / MANIFEST).is_file() else {}
    if "generator" not in manifest:
        raise FileNotFoundError(f"{root / MANIFEST}: lesion-free twins need a synthetic volume dataset made by this "
                                "bundle")
    seeds = {Path(e["image"]).name.split(".")[0]: e["seed"] for e in manifest["training"]}
    out = root / TWINS_DIR
    out.mkdir(exist_ok=True)
    items = []
    for pid in image_ids:
        if pid not in seeds:
            raise ValueError(f"{root / MANIFEST}: no volume {pid!r} in this synthetic dataset")
        path = out / f"{pid}.nii.gz"
        if not path.is_file():
            twin = render_volume(seeds[pid], False, manifest["generator"]["size"])
            nib.save(nib.Nifti1Image(twin.image, np.diag([SPACING_MM] * 3 + [1.0])), path)
        items.append({image_key: str(path), id_key: pid})
    return items

"""Write the synthetic radiographs to disk in the RSNA Pneumonia layout.

The default study reads them back through the same reader as real RSNA data, so
every run exercises the real-data path: DICOM images, ``stage_2_train_labels.csv``
and ``stage_2_detailed_class_info.csv``, plus what RSNA lacks and the metrics need:
``masks/<patientId>.png`` (lesion masks), ``split.csv`` and ``knobs.csv``
(difficulty knobs per image).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from bundle.data.dicom import write_radiograph
from bundle.data.synthetic import CHEST, SyntheticConfig, render
from bundle.data.tables import SPLITS
from bundle.progress import progress

logger = logging.getLogger(__name__)

IMAGES_DIR = "stage_2_train_images"
LABELS_CSV = "stage_2_train_labels.csv"
CLASS_INFO_CSV = "stage_2_detailed_class_info.csv"
MASKS_DIR = "masks"
READER_MASKS_DIR = "masks_reader2"  # a second reader's outlines (the agreement criteria's reference)
SPLIT_CSV = "split.csv"
KNOBS_CSV = "knobs.csv"
MANIFEST = "dataset.json"


def _split_names(n_images: int, fractions: tuple[float, float, float], rng: np.random.Generator) -> list[str]:
    counts = np.floor(np.asarray(fractions) / sum(fractions) * n_images).astype(int)
    counts[0] += n_images - counts.sum()
    names = np.repeat(np.asarray(SPLITS), counts)
    return list(rng.permutation(names))


def write_synthetic_dataset(
    out_dir: str | Path,
    n_images: int = 1400,
    seed: int = 0,
    positive_fraction: float = 0.5,
    split_fractions: tuple[float, float, float] = (0.75, 0.125, 0.125),
    config: SyntheticConfig | None = None,
    **config_overrides,
) -> Path:
    """Generate ``n_images`` radiographs into ``out_dir`` (RSNA layout); return the folder.

    Deterministic for a given ``seed`` and configuration. The manifest is written
    last, so a folder without it is an interrupted run and is regenerated.
    """
    cfg = replace(config or SyntheticConfig(), **config_overrides)
    out = Path(out_dir)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (out / MASKS_DIR).mkdir(exist_ok=True)
    (out / READER_MASKS_DIR).mkdir(exist_ok=True)
    rng = np.random.default_rng([seed, 99])
    splits = _split_names(n_images, split_fractions, rng)
    labels = rng.uniform(size=n_images) < positive_fraction
    monochrome1 = rng.uniform(size=n_images) < cfg.monochrome1_prob
    shortcut = (rng.uniform(size=n_images) < cfg.shortcut_prob) & labels & (np.asarray(splits) == "train")
    body_part = "CHEST" if cfg.variant == CHEST else "LEG"

    label_rows, class_rows, split_rows, knob_rows = [], [], [], []
    for i in progress(range(n_images), f"synthetic {cfg.variant} radiographs", unit="img"):
        pid = f"{cfg.variant}-{seed}-{i:05d}"
        sample = render(seed * 1_000_003 + i, bool(labels[i]), cfg, shortcut=bool(shortcut[i]))
        write_radiograph(out / IMAGES_DIR / f"{pid}.dcm", sample.image, pid, bool(monochrome1[i]), body_part)
        Image.fromarray(sample.mask.astype(np.uint8) * 255).save(out / MASKS_DIR / f"{pid}.png")
        Image.fromarray(sample.reader_mask.astype(np.uint8) * 255).save(out / READER_MASKS_DIR / f"{pid}.png")
        if labels[i]:
            label_rows += [[pid, x, y, w, h, 1] for (x, y, w, h) in sample.boxes]
        else:
            label_rows.append([pid, "", "", "", "", 0])
        class_rows.append([pid, "Lung Opacity" if labels[i] else "Normal"])
        split_rows.append([pid, splits[i]])
        knob_rows.append({"patientId": pid, "split": splits[i], "Target": int(labels[i]),
                          "monochrome1": bool(monochrome1[i]), **sample.knobs})

    _write_csv(out / LABELS_CSV, ["patientId", "x", "y", "width", "height", "Target"], label_rows)
    _write_csv(out / CLASS_INFO_CSV, ["patientId", "class"], class_rows)
    _write_csv(out / SPLIT_CSV, ["patientId", "split"], split_rows)
    with open(out / KNOBS_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(knob_rows[0]))
        writer.writeheader()
        writer.writerows(knob_rows)
    manifest = _manifest(n_images, seed, positive_fraction, split_fractions, cfg)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out


def _manifest(n_images: int, seed: int, positive_fraction: float, split_fractions, cfg: SyntheticConfig) -> dict:
    return {"generator": "bundle.data.synthetic", "annotations": [MASKS_DIR, READER_MASKS_DIR],
            "n_images": n_images, "seed": seed,
            "positive_fraction": positive_fraction, "split_fractions": list(split_fractions),
            "config": cfg.to_dict()}


def ensure_synthetic_dataset(
    out_dir: str | Path,
    n_images: int = 1400,
    seed: int = 0,
    positive_fraction: float = 0.5,
    split_fractions: tuple[float, float, float] = (0.75, 0.125, 0.125),
    **config_overrides,
) -> Path:
    """Generate the dataset unless ``out_dir`` already holds a complete one with the same settings.

    A complete folder made with other settings is an error rather than silently reused.
    """
    out = Path(out_dir)
    cfg = replace(SyntheticConfig(), **config_overrides)
    wanted = json.loads(json.dumps(_manifest(n_images, seed, positive_fraction, split_fractions, cfg)))
    if (out / MANIFEST).exists():
        found = json.loads((out / MANIFEST).read_text())
        if {**found, "annotations": wanted["annotations"]} == wanted and found != wanted:
            logger.warning("%s: made by an older generator without %s; regenerating it", out, READER_MASKS_DIR)
            return write_synthetic_dataset(out, n_images, seed, positive_fraction, split_fractions, cfg)
        if found != wanted:
            raise ValueError(
                f"{out / MANIFEST}: this dataset folder was generated with other settings "
                f"({found}); delete the folder or point dataset_dir elsewhere"
            )
        logger.debug("synthetic dataset found at %s", out)
        return out
    logger.info("generating synthetic dataset in %s", out)
    return write_synthetic_dataset(out, n_images, seed, positive_fraction, split_fractions, cfg)


TWINS_DIR = "lesion_free_twins"


def write_lesion_free_twins(dataset_dir: str | Path, image_ids: list[str], image_key: str = "image",
                            id_key: str = "image_id") -> list[dict]:
    """The lesion-free twin of each synthetic image: same background, noise and window, no lesion.

    Written as DICOMs (same photometric interpretation as the original) under
    ``<dataset_dir>/lesion_free_twins``, so they go through the same reader and
    transforms; existing files are reused. Returns data dicts ``{image_key, id_key}``
    in the order of ``image_ids``.
    """
    root = Path(dataset_dir)
    if not (root / MANIFEST).is_file():
        raise FileNotFoundError(f"{root / MANIFEST}: lesion-free twins need a synthetic dataset made by this bundle")
    manifest = json.loads((root / MANIFEST).read_text())
    cfg = SyntheticConfig(**manifest["config"])
    with open(root / KNOBS_CSV, newline="") as f:
        knobs = {row["patientId"]: row for row in csv.DictReader(f)}
    out = root / TWINS_DIR
    out.mkdir(exist_ok=True)
    items = []
    for pid in image_ids:
        if pid not in knobs:
            raise ValueError(f"{root / KNOBS_CSV}: no image {pid!r} in this synthetic dataset")
        path = out / f"{pid}.dcm"
        if not path.is_file():
            index = int(pid.rsplit("-", 1)[1])
            sample = render(manifest["seed"] * 1_000_003 + index, False, cfg, shortcut=knobs[pid]["shortcut"] == "True")
            body_part = "CHEST" if cfg.variant == CHEST else "LEG"
            write_radiograph(path, sample.image, pid, knobs[pid]["monochrome1"] == "True", body_part)
        items.append({image_key: str(path), id_key: pid})
    return items


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)

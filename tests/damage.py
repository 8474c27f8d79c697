"""Damage a copy of an RSNA-layout folder the ways real radiology folders are damaged, one fault per patient, and
say what the bundle must print for each (the contract in docs/bad_input.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from bundle.data.synthetic_dataset import IMAGES_DIR, LABELS_CSV, MASKS_DIR, READER_MASKS_DIR, SPLIT_CSV


# fault -> (reason key, words of the warning line after the file or row, action)
FAULTS = {
    "truncated": ("unreadable_image", "pixel data truncated", "skipped"),
    "undecodable": ("unreadable_image", "pixel data cannot be decoded as JPEG Baseline", "skipped"),
    "multiframe": ("image_shape", "2 frames: one radiograph per file expected", "skipped"),
    "colour": ("colour_image", "colour (RGB) image read as one channel (luminance)", "repaired"),
    "target": ("label_value", "Target 'yes' is not 0 or 1", "skipped"),
    "coordinate": ("label_value", "is not a number", "skipped"),
    "nan_box": ("box_nan", "positive row with a missing box coordinate", "skipped"),
    "box_outside": ("box_outside", "lies outside the", "skipped"),
    "box_size": ("box_size", "has a non-positive width or height", "skipped"),
    "box_clipped": ("box_clipped", "runs past the edge", "repaired (clipped to the image)"),
    "mask_size": ("mask_unusable", "is 7 x 5, its image", "skipped"),
}


def damaged_copy(source: Path, target: Path, faults: list[str], split: str | None = None) -> dict[str, dict]:
    """Copy ``source`` to ``target`` and give each fault to its own positive patient (of ``split``) that has one
    box and a mask; returns, per fault, the patient, where the warning names it and the expected reason/action."""
    shutil.copytree(source, target)
    table = pd.read_csv(target / LABELS_CSV, dtype=str, keep_default_na=False)  # cells as written
    splits = pd.read_csv(target / SPLIT_CSV, dtype={"patientId": str}).set_index("patientId").split
    single = table.patientId.value_counts().eq(1)
    candidates = [p for p in table.patientId[table.Target == "1"]
                  if single[p] and (split is None or splits[p] == split) and (target / MASKS_DIR / f"{p}.png").is_file()]
    if len(candidates) < len(faults):
        raise ValueError(f"{source}: {len(candidates)} positive patients to damage, {len(faults)} faults")
    out = {}
    for fault, pid in zip(faults, candidates):
        image = target / IMAGES_DIR / f"{pid}.dcm"
        row = int(table.index[table.patientId == pid][0])
        reason, words, action = FAULTS[fault]
        where = str(image)
        if fault == "truncated":
            image.write_bytes(image.read_bytes()[:-500])
        elif fault == "undecodable":  # claims JPEG, holds raw pixels
            ds = pydicom.dcmread(image)
            ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
            ds.PixelData = encapsulate([ds.PixelData])
            ds.save_as(image, enforce_file_format=True)
        elif fault == "multiframe":
            ds = pydicom.dcmread(image)
            ds.NumberOfFrames = 2
            ds.PixelData = ds.PixelData * 2
            ds.save_as(image, enforce_file_format=True)
        elif fault == "colour":  # a secondary capture saved in colour: grey in all three channels
            ds = pydicom.dcmread(image)
            grey = (ds.pixel_array.astype(np.float64) / ds.pixel_array.max() * 255).round().astype(np.uint8)
            ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
            ds.PixelData = np.repeat(grey[..., None], 3, axis=2).tobytes()
            ds.save_as(image, enforce_file_format=True)
        elif fault == "mask_size":
            Image.fromarray(np.zeros((5, 7), np.uint8)).save(target / MASKS_DIR / f"{pid}.png")
        else:
            where = f"{target / LABELS_CSV} line {row + 2} (patientId {pid})"
            if fault == "target":
                table.loc[row, "Target"] = "yes"
            elif fault == "coordinate":
                table.loc[row, "x"] = "abc"
            elif fault == "nan_box":
                table.loc[row, "x"] = ""
            else:
                where = str(image)
                size = pydicom.dcmread(image, stop_before_pixels=True).Columns
                table.loc[row, ["x", "y", "width", "height"]] = [str(v) for v in {
                    "box_outside": [size + 10, 5, 8, 8], "box_size": [5, 5, 0, 8],
                    "box_clipped": [size - 4, 5, 8, 8]}[fault]]
        out[fault] = {"image_id": pid, "where": where, "reason": reason, "line": f"{where}: ", "words": words,
                      "action": action}
    table.to_csv(target / LABELS_CSV, index=False)
    return out


def rename_patient(root: Path, old: str, new: str) -> None:
    """Give patient ``old`` the id ``new`` everywhere: both CSVs, the file names and the DICOM's patient tags."""
    for name in (LABELS_CSV, SPLIT_CSV):
        table = pd.read_csv(root / name, dtype=str, keep_default_na=False)
        table.loc[table.patientId == old, "patientId"] = new
        table.to_csv(root / name, index=False)
    for folder in (IMAGES_DIR, MASKS_DIR, READER_MASKS_DIR):
        for path in (root / folder).glob(f"{old}.*"):
            path.rename(path.with_name(new + path.suffix))
    image = root / IMAGES_DIR / f"{new}.dcm"
    ds = pydicom.dcmread(image)
    ds.PatientID, ds.PatientName = new[:64], new[:64]
    ds.save_as(image, enforce_file_format=True)

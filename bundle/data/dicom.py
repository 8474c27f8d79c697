"""Radiograph DICOM writing, screening, and a MONAI reader that honours the photometric interpretation."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pydicom
from monai.data import PydicomReader
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from bundle.data.screening import ImageCheck

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
BITS_STORED = 12


def write_radiograph(
    path: str | Path,
    image: np.ndarray,
    patient_id: str,
    monochrome1: bool = False,
    body_part: str = "CHEST",
    pixel_spacing_mm: float = 0.5,
) -> None:
    """Write a [0, 1] display image (bright = dense) as a 12-bit CR DICOM.

    MONOCHROME1 files store inverted values, as many real CR/DX exports do, so the
    reader must honour the tag. Window and rescale tags are set as a viewer expects.
    """
    stored = np.round(np.clip(image, 0.0, 1.0) * (2**BITS_STORED - 1)).astype(np.uint16)
    if monochrome1:
        stored = (2**BITS_STORED - 1) - stored
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    ds.Modality = "CR"
    ds.BodyPartExamined = body_part
    ds.ViewPosition = "PA" if body_part == "CHEST" else "AP"
    ds.StudyDate = datetime.date(2026, 1, 1).strftime("%Y%m%d")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = BITS_STORED
    ds.HighBit = BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.RescaleSlope = 1
    ds.RescaleIntercept = 0
    ds.RescaleType = "US"
    ds.WindowCenter = 2 ** (BITS_STORED - 1)
    ds.WindowWidth = 2**BITS_STORED
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601, the weights of a colour-to-greyscale conversion


def inspect_dicom(path: str | Path) -> ImageCheck:
    """Screen ``path`` as one single-frame radiograph: readable, pixel data present, complete and decodable, one
    frame, one or three samples per pixel. The pixel data is decoded here, when screened, so no reader or cache
    worker meets a file it cannot decode."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # pydicom raises many types for damaged files
        return ImageCheck(f"not a readable DICOM file ({type(e).__name__}: {e})")
    if "PixelData" not in ds:
        return ImageCheck("DICOM file has no pixel data")
    try:
        rows, columns, samples = int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1))
        expected = rows * columns * samples * int(ds.BitsAllocated) // 8
    except (AttributeError, TypeError, ValueError) as e:
        return ImageCheck(f"DICOM file lacks image geometry tags ({e})")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        return ImageCheck(f"{frames} frames: one radiograph per file expected", reason="image_shape")
    if samples not in (1, 3):
        return ImageCheck(f"{samples} samples per pixel: expected 1 (greyscale) or 3 (colour)", reason="image_shape")
    is_compressed = ds.file_meta.TransferSyntaxUID.is_compressed if "TransferSyntaxUID" in ds.file_meta else False
    if not is_compressed and len(ds.PixelData) < expected:
        return ImageCheck(f"pixel data truncated: {len(ds.PixelData)} bytes, expected {expected}")
    try:
        pixels = ds.pixel_array
    except Exception as e:
        syntax = ds.file_meta.get("TransferSyntaxUID", "?")
        return ImageCheck(f"pixel data cannot be decoded as {getattr(syntax, 'name', syntax)} "
                          f"({type(e).__name__}: {e})")
    if pixels.shape[:2] != (rows, columns):
        return ImageCheck(f"pixel data of shape {pixels.shape} does not match Rows x Columns {rows} x {columns}",
                          reason="image_shape")
    repair = None
    if samples == 3:
        repair = f"colour ({ds.get('PhotometricInterpretation', '?')}) image read as one channel (luminance)"
    return ImageCheck(shape=(rows, columns), repair=repair)


class RadiographReader(PydicomReader):
    """MONAI's PydicomReader, rows-by-columns, with MONOCHROME1 images inverted.

    MONAI's reader ignores PhotometricInterpretation, so a MONOCHROME1 radiograph
    would reach the network with bone dark; negating it gives MONOCHROME2 order,
    and the intensity scaling that follows makes the offset irrelevant.
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("swap_ij", False)
        super().__init__(**kwargs)

    def read(self, data, **kwargs):
        try:
            return super().read(data, **kwargs)
        except Exception as e:
            raise ValueError(f"{data}: not a readable DICOM file ({type(e).__name__}: {e})") from e

    def _get_array_data(self, img, filename):
        try:
            data = super()._get_array_data(img, filename)
        except Exception as e:
            raise ValueError(f"{filename}: cannot decode DICOM pixel data ({type(e).__name__}: {e})") from e
        if int(getattr(img, "SamplesPerPixel", 1)) == 3 and data.ndim == 3 and data.shape[-1] == 3:
            data = data.astype(np.float32) @ np.asarray(LUMINANCE, dtype=np.float32)  # as inspect_dicom reports
        if getattr(img, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
            data = -data.astype(np.float32)
        return data

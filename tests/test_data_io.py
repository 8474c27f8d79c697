"""Dataset writing in the RSNA layout, the RSNA reader, DICOM reading and ground-truth masks."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityd

from bundle.data import GroundTruthMaskd, RadiographReader, ensure_synthetic_dataset, load_rsna_datalist
from bundle.data.synthetic import SyntheticConfig, render
from bundle.data.synthetic_dataset import write_synthetic_dataset


def _load(item: dict, source: str = "mask") -> dict:
    return Compose([
        LoadImaged("image", reader=RadiographReader(), image_only=True),
        EnsureChannelFirstd("image", channel_dim="no_channel"),
        ScaleIntensityd("image"),
        GroundTruthMaskd(source=source),
    ])(item)


def test_dataset_layout_and_dicom_tags(small_dataset):
    labels = pd.read_csv(small_dataset / "stage_2_train_labels.csv")
    assert list(labels.columns) == ["patientId", "x", "y", "width", "height", "Target"]
    assert labels.loc[labels.Target == 0, ["x", "y", "width", "height"]].isna().all().all()
    assert labels.loc[labels.Target == 1, ["x", "y", "width", "height"]].notna().all().all()
    classes = pd.read_csv(small_dataset / "stage_2_detailed_class_info.csv")
    assert set(classes["class"]) <= {"Lung Opacity", "Normal"}
    knobs = pd.read_csv(small_dataset / "knobs.csv")
    assert {"lesion_contrast", "cnr", "lesion_area_frac", "split"} <= set(knobs.columns)
    photometric = set()
    for pid in knobs.patientId:
        ds = pydicom.dcmread(small_dataset / "stage_2_train_images" / f"{pid}.dcm")
        assert ds.BitsStored == 12 and ds.Modality == "CR" and ds.PatientID == pid
        assert "WindowCenter" in ds and "RescaleSlope" in ds
        photometric.add(ds.PhotometricInterpretation)
        assert (small_dataset / "masks" / f"{pid}.png").is_file()
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}
    assert json.loads((small_dataset / "dataset.json").read_text())["n_images"] == 24


def test_generation_is_deterministic(tmp_path, small_dataset):
    again = write_synthetic_dataset(tmp_path / "again", n_images=24, seed=3, monochrome1_prob=0.5)
    for name in ("stage_2_train_labels.csv", "split.csv", "knobs.csv"):
        assert (again / name).read_text() == (small_dataset / name).read_text()
    pid = pd.read_csv(again / "split.csv").patientId[0]
    a = pydicom.dcmread(again / "stage_2_train_images" / f"{pid}.dcm").pixel_array
    b = pydicom.dcmread(small_dataset / "stage_2_train_images" / f"{pid}.dcm").pixel_array
    np.testing.assert_array_equal(a, b)


def test_reader_returns_labels_boxes_masks_and_splits(small_dataset):
    items = load_rsna_datalist(small_dataset)
    labels = pd.read_csv(small_dataset / "stage_2_train_labels.csv")
    assert len(items) == 24
    for item in items:
        rows = labels[labels.patientId == item["image_id"]]
        assert item["label"] == int(rows.Target.max())
        assert len(item["boxes"]) == (len(rows) if item["label"] else 0)
        assert item["mask"].endswith(f"{item['image_id']}.png")
    splits = {s: load_rsna_datalist(small_dataset, split=s) for s in ("train", "val", "test")}
    assert sum(len(v) for v in splits.values()) == 24
    positives = load_rsna_datalist(small_dataset, labels=1)
    assert positives and all(i["label"] == 1 for i in positives)
    assert len(load_rsna_datalist(small_dataset, limit=5)) == 5


def test_monochrome1_is_read_as_monochrome2(tmp_path):
    """The same image written as MONOCHROME1 and MONOCHROME2 reads back identically after scaling."""
    from bundle.data.dicom import write_radiograph

    image = render(4, True).image
    write_radiograph(tmp_path / "m1.dcm", image, "m1", monochrome1=True)
    write_radiograph(tmp_path / "m2.dcm", image, "m2", monochrome1=False)
    load = Compose([LoadImaged("image", reader=RadiographReader(), image_only=True), ScaleIntensityd("image")])
    a = load({"image": str(tmp_path / "m1.dcm")})["image"]
    b = load({"image": str(tmp_path / "m2.dcm")})["image"]
    torch.testing.assert_close(a, b)
    assert tuple(a.shape) == image.shape  # rows x columns, not transposed
    np.testing.assert_allclose(b.numpy(), (image - image.min()) / (image.max() - image.min()), atol=1e-3)


def test_real_monochrome1_radiograph_has_bright_mediastinum():
    """pydicom-data's RG1_UNCR.dcm is a real MONOCHROME1 PA chest: read it, bone and mediastinum must be bright."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCR.dcm")
    assert path is not None, "pydicom-data is not installed (pip install -e '.[test]')"
    assert pydicom.dcmread(path, stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
    img = LoadImaged("image", reader=RadiographReader(), image_only=True)({"image": path})["image"].numpy()
    h, w = img.shape
    mediastinum = img[int(0.3 * h) : int(0.6 * h), int(0.46 * w) : int(0.54 * w)].mean()
    lung = img[int(0.3 * h) : int(0.5 * h), int(0.2 * w) : int(0.3 * w)].mean()
    assert mediastinum > lung


def test_ground_truth_mask_aligns_with_the_lesion(small_dataset):
    item = load_rsna_datalist(small_dataset, labels=1)[0]
    seed_index = int(item["image_id"].rsplit("-", 1)[1])
    manifest = json.loads((small_dataset / "dataset.json").read_text())
    sample = render(3 * 1_000_003 + seed_index, True, SyntheticConfig(**manifest["config"]))
    out = _load(dict(item))
    assert tuple(out["mask"].shape) == (1, *sample.mask.shape)
    np.testing.assert_array_equal(out["mask"][0].numpy() > 0, sample.mask)
    assert "boxes" not in out
    box_mask = _load(dict(item), source="boxes")["mask"][0].numpy() > 0
    assert box_mask[sample.mask].all(), "the boxes must cover the lesion"
    expected_area = sum((w + 1) * (h + 1) for _, _, w, h in item["boxes"])
    assert box_mask.sum() <= expected_area


def test_a_missing_mask_file_falls_back_to_boxes_visibly(small_dataset, caplog):
    item = load_rsna_datalist(small_dataset, labels=1)[0]
    assert _load(dict(item))["mask_source"] == "mask"
    without_mask = {k: v for k, v in item.items() if k != "mask"}
    with caplog.at_level(logging.WARNING, logger="bundle.data.transforms"):
        out = _load(without_mask)
    assert out["mask_source"] == "boxes"
    np.testing.assert_array_equal(out["mask"], _load(dict(item), source="boxes")["mask"])
    assert f"{item['image_id']}: no lesion mask file" in caplog.text


def test_missing_folder_and_bad_csv_are_named(tmp_path, small_dataset):
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        load_rsna_datalist(tmp_path / "does_not_exist")
    broken = tmp_path / "broken"
    shutil.copytree(small_dataset, broken)
    (broken / "stage_2_train_labels.csv").write_text("patientId,Target\nabc,0\n")
    with pytest.raises(ValueError, match=r"stage_2_train_labels.csv: missing column\(s\) \['x', 'y', 'width', 'height'\]"):
        load_rsna_datalist(broken)


def test_leading_space_header_is_accepted(tmp_path, small_dataset):
    spaced = tmp_path / "spaced"
    shutil.copytree(small_dataset, spaced)
    csv = spaced / "stage_2_train_labels.csv"
    csv.write_text(csv.read_text().replace("patientId,x,", "patientId, x,", 1))
    assert len(load_rsna_datalist(spaced)) == 24


def test_corrupt_dicom_is_reported_and_skipped(tmp_path, small_dataset, caplog):
    damaged = tmp_path / "damaged"
    shutil.copytree(small_dataset, damaged)
    pid = pd.read_csv(damaged / "split.csv").patientId[0]
    bad = damaged / "stage_2_train_images" / f"{pid}.dcm"
    bad.write_bytes(bad.read_bytes()[:2000])
    with caplog.at_level(logging.WARNING):
        items = load_rsna_datalist(damaged)
    assert len(items) == 23 and pid not in {i["image_id"] for i in items}
    assert str(bad) in caplog.text and "truncated" in caplog.text
    with pytest.raises(ValueError, match=f"{pid}.dcm"):
        LoadImaged("image", reader=RadiographReader())({"image": str(bad)})


def test_existing_dataset_with_other_settings_is_an_error(small_dataset):
    with pytest.raises(ValueError, match="other settings"):
        ensure_synthetic_dataset(small_dataset, n_images=25, seed=3)


def test_second_reader_masks_are_written_read_and_loaded(small_dataset):
    item = load_rsna_datalist(small_dataset, labels=1)[0]
    assert item["reader_mask"].endswith(f"masks_reader2/{item['image_id']}.png")
    seed_index = int(item["image_id"].rsplit("-", 1)[1])
    manifest = json.loads((small_dataset / "dataset.json").read_text())
    sample = render(3 * 1_000_003 + seed_index, True, SyntheticConfig(**manifest["config"]))
    reader = GroundTruthMaskd(mask_key="reader_mask", allow_missing=True)
    out = reader(_load(dict(item)))
    np.testing.assert_array_equal(out["reader_mask"][0].numpy() > 0, sample.reader_mask)
    assert out["mask_source"] == "mask"
    without = {k: v for k, v in item.items() if k != "reader_mask"}
    assert "reader_mask" not in reader(_load(without))  # data without a second reader passes unchanged


def test_a_dataset_from_the_generator_without_second_readers_is_regenerated(tmp_path, caplog):
    out = write_synthetic_dataset(tmp_path / "old", n_images=6, seed=1)
    manifest = json.loads((out / "dataset.json").read_text())
    del manifest["annotations"]
    (out / "dataset.json").write_text(json.dumps(manifest))
    shutil.rmtree(out / "masks_reader2")
    with caplog.at_level(logging.WARNING):
        ensure_synthetic_dataset(out, n_images=6, seed=1)
    assert "regenerating" in caplog.text and len(list((out / "masks_reader2").glob("*.png"))) == 6


def test_label_permutation_keeps_images_and_class_balance_and_is_seeded(small_dataset):
    from bundle.data import permute_labels

    items = load_rsna_datalist(small_dataset)
    permuted = permute_labels(items, seed=0)
    assert [i["image"] for i in permuted] == [i["image"] for i in items]
    assert sorted(i["label"] for i in permuted) == sorted(i["label"] for i in items)
    assert [i["label"] for i in permuted] != [i["label"] for i in items]
    assert permute_labels(items, seed=0) == permuted and permute_labels(items, seed=1) != permuted
    assert permute_labels(items, seed=0, enabled=False) is items

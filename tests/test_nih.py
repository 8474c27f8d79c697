"""The NIH ChestX-ray14 reader on a folder in the release's exact format (tests/nih_fixture.py)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monai.bundle import ConfigParser
from monai.transforms import Compose
from PIL import Image

from nih_fixture import write_nih_folder
from warm_python import run_python

from bundle.data import GroundTruthMaskd, load_dataset, load_nih_datalist
from bundle.errors import last_line

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def nih(tmp_path_factory):
    root = tmp_path_factory.mktemp("nih") / "ChestX-ray14"
    return root, write_nih_folder(root)


def test_labels_boxes_and_the_infiltrate_spelling(nih):
    root, truth = nih
    for finding in ("Pneumonia", "Infiltration"):
        items = load_nih_datalist(root, finding=finding)
        assert [i["image_id"] for i in items] == list(truth["images"])  # every image, in the table's order
        for item in items:
            patient, findings, boxes = truth["images"][item["image_id"]]
            assert item["label"] == int(finding in findings) and item["patient"] == patient
            assert item["boxes"] == boxes.get(finding, [])
    infiltration = load_nih_datalist(root, finding="Infiltration")
    assert any(i["boxes"] for i in infiltration), "the boxes file's 'Infiltrate' is the labels' 'Infiltration'"


def test_positives_for_localisation_are_the_boxed_ones(nih):
    root, truth = nih
    positives = load_nih_datalist(root, labels=1, finding="Pneumonia")
    expected = [n for n, (_, findings, boxes) in truth["images"].items() if "Pneumonia" in boxes]
    assert [i["image_id"] for i in positives] == expected
    unboxed = [n for n, (_, findings, boxes) in truth["images"].items()
               if "Pneumonia" in findings and not boxes.get("Pneumonia")]
    assert unboxed, "the fixture has positives without a box, as the release does"


def test_splits_are_by_patient_and_follow_the_official_test_list(nih):
    root, truth = nih
    splits = {s: load_nih_datalist(root, split=s) for s in ("train", "val", "test")}
    patients = {s: {i["patient"] for i in items} for s, items in splits.items()}
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"])
    assert not (patients["val"] & patients["test"])
    assert sorted(i["image_id"] for i in splits["test"]) == sorted(truth["test"])
    assert sum(len(v) for v in splits.values()) == len(truth["images"])
    again = load_nih_datalist(root, split="val")
    assert [i["image_id"] for i in again] == [i["image_id"] for i in splits["val"]]  # deterministic


def test_pngs_are_read_rows_by_columns_and_rgba_as_one_channel(nih, caplog):
    root, truth = nih
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "evaluate.json"))
    parser.update({"bundle_root": str(ROOT), "image_size": 128})
    load = Compose(parser.get_parsed_content("image_preprocessing")
                   + [GroundTruthMaskd(source="boxes")])
    with caplog.at_level(logging.WARNING):
        items = load_nih_datalist(root, finding="Pneumonia")
    rgba = next(i for i in items if i["image_id"] == truth["rgba"][0])
    assert f"{rgba['image']}: colour (RGBA) image read as one channel (luminance); repaired" in caplog.text
    assert items.counts("repaired") == {"colour_image": 1}
    boxed = [i for i in items if i["boxes"]][:4]
    for item in [rgba, *boxed]:
        out = load(dict(item))
        pixels = np.asarray(Image.open(item["image"]).convert("L"), dtype=np.float32)
        expected = (pixels - pixels.min()) / (pixels.max() - pixels.min())
        np.testing.assert_allclose(out["image"][0].numpy(), expected, atol=1e-6)  # not transposed
        if item["boxes"]:
            x, y, w, h = (int(v) for v in item["boxes"][0])
            assert out["mask"][0, y + h // 2, x + w // 2] == 1 and out["mask"][0].sum() > 0


def test_bad_files_and_rows_are_named_and_skipped(tmp_path, caplog):
    root = tmp_path / "nih"
    truth = write_nih_folder(root, n_patients=4)
    names = list(truth["images"])
    next(root.rglob(names[0])).unlink()
    next(root.rglob(names[1])).write_bytes(b"not a png")
    bbox = root / "BBox_List_2017.csv"
    lines = bbox.read_text().splitlines()
    row = next(i for i, line in enumerate(lines[1:], start=1) if line.split(",")[0] not in names[:2])
    victim = lines[row].split(",")[0]
    lines[row] = ",".join(lines[row].split(",")[:2] + ["abc"] + lines[row].split(",")[3:])
    bbox.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        items = load_nih_datalist(root, finding="Pneumonia")
    assert f"{root / names[0]}: image file not found under the dataset folder; skipped" in caplog.text
    assert f"{next(root.rglob(names[1]))}: not a readable image file (" in caplog.text
    assert f"{bbox} line {row + 1} (Image Index {victim}): box ['abc'," in caplog.text
    assert {names[0], names[1], victim}.isdisjoint(i["image_id"] for i in items)
    assert items.counts("skipped") == {"unreadable_image": 2, "label_value": 1}


def test_a_wrong_header_or_finding_is_named(tmp_path):
    root = tmp_path / "nih"
    write_nih_folder(root, n_patients=2)
    with pytest.raises(ValueError) as caught:
        load_nih_datalist(root, finding="Pneumonitis")
    assert "unknown NIH finding 'Pneumonitis' (the dataset's finding option)" in last_line(caught.value)
    entries = root / "Data_Entry_2017.csv"
    entries.write_text(entries.read_text().replace("Patient ID", "PatientID", 1))
    with pytest.raises(ValueError) as caught:
        load_dataset("nih", root)
    assert last_line(caught.value).startswith(f"error: {entries}: missing column(s) ['Patient ID']; found [")


def test_the_configs_read_nih_by_name(nih):
    root, truth = nih
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "evaluate.json"))
    parser.update({"bundle_root": str(ROOT), "dataset_name": "nih", "dataset_dir": str(root),
                   "dataset_options": {"finding": "Infiltration"}})
    items = parser.get_parsed_content("test#datalist")
    assert [i["image_id"] for i in items] == [i["image_id"] for i in load_nih_datalist(
        root, split="test", labels=1, finding="Infiltration", limit=parser.get_parsed_content("saliency#n_images"))]
    for name in ("evaluate.json", "train.json"):  # models trained on NIH, or for one finding, never meet the others
        config = ConfigParser()
        config.read_config(str(ROOT / "configs" / name))
        config.update({"bundle_root": str(ROOT)})
        assert config.get_parsed_content("ckpt_dir") == str(ROOT / "models")
        config.update({"dataset_name": "nih"})
        assert config.get_parsed_content("ckpt_dir") == str(ROOT / "models" / "nih" / "pneumonia")  # the default
        config.update({"dataset_options": {"finding": "Infiltration"}})
        assert config.get_parsed_content("ckpt_dir") == str(ROOT / "models" / "nih" / "infiltration")
        config.update({"dataset_name": "siim"})  # one target: no finding folder
        assert config.get_parsed_content("ckpt_dir") == str(ROOT / "models" / "siim")


@pytest.mark.slow  # 31 s: the default suite is at its 15-minute budget; the NIH reader's rules are tested above
def test_the_study_runs_on_an_nih_folder_through_the_real_command(tmp_path):
    """`python -m monai.bundle run evaluate --dataset_name nih`: trains on the PNGs, scores the boxed positives."""
    root = tmp_path / "nih"
    write_nih_folder(root, n_patients=24)
    command = [sys.executable, "-m", "monai.bundle", "run", "evaluate",
               "--config_file", "['configs/evaluate.json','configs/quick.json']", "--dataset_name", "nih",
               "--dataset_dir", str(root), "--output_dir", str(tmp_path / "eval"), "--ckpt_dir", str(tmp_path / "models"),
               "--saliency#ground_truth", "boxes", "--study#criteria", "$dict(localization=@criteria#localization)",
               "--study#methods", "$dict(grad=@methods#grad, gradcam=@methods#gradcam)"]
    result = run_python(command, cwd=ROOT, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    wanted = [i["image_id"] for i in load_nih_datalist(root, split="test", labels=1, limit=8)]
    assert f"densenet121_seed0 on nih, Pneumonia (test split, {len(wanted)} positive images)" in result.stdout
    records = pd.read_csv(next((tmp_path / "eval").glob("*_records.csv")))
    assert sorted(set(records.image_id)) == sorted(wanted)
    oracle = records[(records.metric == "hit") & (records.method == "oracle")]
    assert len(oracle) == len(wanted) and (oracle.value == 1).all()  # every box became its image's ground truth

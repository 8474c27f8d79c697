"""The CheXlocalize reader on the real sample (two CheXpert radiographs, radiologist segmentations) and on a
folder in the release's layout (tests/chexlocalize_fixture.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monai.bundle import ConfigParser
from monai.transforms import Compose, Resize
from PIL import Image, ImageDraw
from pycocotools import mask as coco

from chexlocalize_fixture import encode, write_chexlocalize_folder
from warm_python import run_python

from bundle.data import GroundTruthMaskd, load_chexlocalize_datalist, load_dataset
from bundle.data.chexlocalize import FINDINGS
from bundle.data.masks import coco_rle_counts, coco_rle_decode
from bundle.errors import last_line
from bundle.findings import checkpoint_folders, finding_slug, findings_of

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "chexlocalize_sample"


def _preprocessing(image_size: int, source: str = "mask") -> Compose:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "evaluate.json"))
    parser.update({"bundle_root": str(ROOT), "image_size": image_size})
    return Compose(parser.get_parsed_content("image_preprocessing") + [GroundTruthMaskd(source=source)])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("chexlocalize")
    return root, write_chexlocalize_folder(root)


def test_coco_rle_decoding_equals_pycocotools():
    """Random masks of every density and odd sizes, encoded by pycocotools (long runs use the multi-character and
    the relative-to-two-back forms), decode to the same pixels."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        height, width = (int(v) for v in rng.integers(1, 60, 2))
        mask = rng.random((height, width)) < rng.random()
        if rng.random() < 0.3:
            mask[:] = False
        rle = encode(mask)
        np.testing.assert_array_equal(coco_rle_decode(rle), coco.decode(rle).astype(bool))
    counts = coco_rle_counts(encode(np.eye(4, dtype=bool)))
    assert counts == [0, 1, 4, 1, 4, 1, 4, 1]  # column by column, zeros first


@pytest.mark.parametrize("counts, problem", [
    ("", "its runs cover 0 pixels, not the 5 x 4 = 20 of its size"),
    ("0", "its runs cover 0 pixels, not the 5 x 4 = 20 of its size"),
    ("92204", "its runs cover 21 pixels, not the 5 x 4 = 20"),
    ("9~", "character '~' cannot occur"),
    ("9j", "cut short"),
])
def test_a_malformed_rle_is_an_error_not_garbage(counts, problem):
    """pycocotools decodes these from uninitialised memory; ours says what is wrong."""
    with pytest.raises(ValueError, match=problem.replace("(", r"\(")):
        coco_rle_decode({"size": [4, 5], "counts": counts})


def test_the_real_sample_loads_with_the_radiologists_masks():
    """Both CheXpert radiographs, every finding: the label is the sample's CheXpert label (its maps' ``gt``), and the
    mask at full size is the radiologists' polygons drawn as cheXlocalize draws them."""
    polygons = json.loads((SAMPLE / "gt_annotations_val.json").read_text())
    load = _preprocessing(image_size=256)
    positives = 0
    for finding in FINDINGS:
        items = load_dataset("chexlocalize", SAMPLE, options={"finding": finding})
        assert [i["image_id"] for i in items] == ["patient64541_study1_view1_frontal",
                                                    "patient64542_study1_view1_frontal"]
        for item in items:
            with np.load(SAMPLE / "maps" / f"{item['image_id']}_{finding}.npz", allow_pickle=False) as z:
                assert item["label"] == int(z["gt"]), (item["image_id"], finding)
                width, height = (int(v) for v in z["cxr_dims"])
            drawn = Image.new("1", (width, height))
            for polygon in polygons[item["image_id"]].get(finding, []):
                ImageDraw.Draw(drawn).polygon([tuple(p) for p in polygon], outline=1, fill=1)
            np.testing.assert_array_equal(coco_rle_decode(item["mask"]), np.array(drawn, dtype=bool))
            assert item["finding"] == finding and item["patient"] == item["image_id"][:12]
            positives += item["label"]
    assert positives == 4
    item = load_chexlocalize_datalist(SAMPLE, finding="Support Devices", labels=1)[0]
    out = load(dict(item))
    assert tuple(out["image"].meta["spatial_shape"]) == (2022, 2021)  # rows x columns, as the JSON's [H, W]
    full = coco_rle_decode(item["mask"]).astype(np.float32)[None]
    np.testing.assert_array_equal(out["mask"].numpy(), (np.asarray(Resize((256, 256), mode="nearest")(full)) > 0))
    assert out["mask"].sum() > 0 and out["mask_source"] == "mask"
    boxed = _preprocessing(image_size=256, source="boxes")(dict(item, boxes=[[1400, 100, 600, 300]]))["mask"][0]
    rows, columns = np.flatnonzero(boxed.sum(1)), np.flatnonzero(boxed.sum(0))  # x 1400-2000 of 2021, y 100-400 of 2022
    assert (rows[0], rows[-1], columns[0], columns[-1]) == (12, 50, 177, 253)


def test_labels_masks_and_the_lung_opacity_column(folder):
    root, truth = folder
    for finding in ("Airspace Opacity", "Cardiomegaly", "Edema"):
        items = load_chexlocalize_datalist(root, finding=finding)
        assert sorted(i["image_id"] for i in items) == sorted(truth)
        for item in items:
            release, patient, labels, masks = truth[item["image_id"]]
            assert item["label"] == labels[finding] and item["patient"] == patient
            np.testing.assert_array_equal(coco_rle_decode(item["mask"]), masks[finding])
            assert (item["split"] == "test") == (release == "test")
    assert any(i["label"] for i in load_chexlocalize_datalist(root, finding="Airspace Opacity")), \
        "the CSV's 'Lung Opacity' column labels the segmentations' 'Airspace Opacity'"


def test_splits_are_by_patient_and_the_release_test_set_is_test(folder):
    root, truth = folder
    splits = {s: load_chexlocalize_datalist(root, split=s) for s in ("train", "val", "test")}
    patients = {s: {i["patient"] for i in items} for s, items in splits.items()}
    assert not (patients["train"] & patients["val"]) and not ((patients["train"] | patients["val"]) & patients["test"])
    assert sorted(i["image_id"] for i in splits["test"]) == sorted(c for c, t in truth.items() if t[0] == "test")
    assert sum(len(v) for v in splits.values()) == len(truth) and splits["val"]
    again = load_chexlocalize_datalist(root, split="val")
    assert [i["image_id"] for i in again] == [i["image_id"] for i in splits["val"]]  # deterministic


def test_the_mask_reaches_the_image_grid(folder):
    root, truth = folder
    load = _preprocessing(image_size=64)
    for item in load_chexlocalize_datalist(root, labels=1)[:3]:
        out = load(dict(item))
        expected = np.asarray(Resize((64, 64), mode="nearest")(truth[item["image_id"]][3]["Airspace Opacity"]
                                                               [None].astype(np.float32))) > 0
        np.testing.assert_array_equal(out["mask"].numpy(), expected)


def test_bad_rows_masks_and_files_are_named_and_skipped(tmp_path, caplog):
    root = tmp_path / "chexlocalize"
    truth = write_chexlocalize_folder(root, n_patients=(12, 0))
    finding = "Airspace Opacity"
    ids = [c for c, t in truth.items() if t[2][finding]]
    segmentations = root / "CheXlocalize" / "gt_segmentations_val.json"
    content = json.loads(segmentations.read_text())
    content[ids[0]][finding] = encode(np.ones((50, 96), dtype=bool))  # does not fit its 96 x 96 image
    content[ids[1]][finding]["counts"] = content[ids[1]][finding]["counts"][:-2]  # cut short
    content[ids[2]][finding] = encode(np.zeros((96, 96), dtype=bool))  # a positive without a segmentation
    segmentations.write_text(json.dumps(content))
    labels = root / "CheXpert" / "val_labels.csv"
    table = pd.read_csv(labels, dtype=str)
    bad_row = int(np.flatnonzero(table.Path.str.contains(ids[3].split("_")[0] + "/" + ids[3].split("_")[1]))[0])
    table.loc[bad_row, "Lung Opacity"] = "-1.0"  # CheXpert's 'uncertain': not a label the study can use
    table.to_csv(labels, index=False)
    missing_id = next(c for c in truth if c not in ids[:4])
    missing = root / "CheXpert" / "val" / Path(*missing_id.split("_", 2)).with_suffix(".jpg")
    missing.unlink()
    with caplog.at_level(logging.WARNING):
        items = load_chexlocalize_datalist(root, finding=finding)
    where = f"{segmentations} ({{}}, {finding})"
    first = root / "CheXpert" / "val" / Path(*ids[0].split("_", 2)).with_suffix(".jpg")
    assert f"{first}: lesion mask (RLE) is 96 x 50, its image 96 x 96; skipped" in caplog.text
    assert f"{where.format(ids[1])}: segmentation unusable: " in caplog.text
    assert f"{where.format(ids[2])}: positive for the finding but its segmentation is empty; skipped" in caplog.text
    assert f"{labels} line {bad_row + 2} (CheXpert-v1.0/valid/" in caplog.text
    assert "Lung Opacity is '-1.0': expected 0 or 1; skipped" in caplog.text
    assert f"{missing}: image file not found under the dataset folder; skipped" in caplog.text
    assert {*ids[:4], missing_id}.isdisjoint(i["image_id"] for i in items)
    assert len(items) == len(truth) - len({*ids[:4], missing_id})
    assert items.counts("skipped") == {"mask_unusable": 3, "label_value": 1, "unreadable_image": 1}


def test_a_wrong_folder_header_or_finding_is_named(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        load_dataset("chexlocalize", tmp_path)
    assert last_line(caught.value) == (f"error: {tmp_path}: no gt_segmentations_val.json or gt_segmentations_test.json"
                                       " (in CheXlocalize/ or the folder itself): not a CheXlocalize folder")
    root = tmp_path / "chexlocalize"
    write_chexlocalize_folder(root, n_patients=(2, 1))
    with pytest.raises(ValueError) as caught:
        load_dataset("chexlocalize", root, options={"finding": "Lung Opacity"})
    assert "unknown CheXlocalize finding 'Lung Opacity' (the dataset's finding option)" in last_line(caught.value)
    labels = root / "CheXpert" / "test_labels.csv"
    labels.write_text(labels.read_text().replace("Lung Opacity", "Opacity", 1))
    with pytest.raises(ValueError) as caught:
        load_dataset("chexlocalize", root)
    assert last_line(caught.value).startswith(f"error: {labels}: missing column(s) ['Lung Opacity']; found [")


def test_findings_are_checked_against_the_dataset():
    assert findings_of("chexlocalize", None) == list(FINDINGS)
    assert findings_of("nih", []) == ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
                                      "Pneumonia", "Pneumothorax"]  # the eight the boxes file outlines
    with pytest.raises(ValueError, match=r"findings \['Lung Opacity'\] are not localisable findings of 'chexlocalize'"):
        findings_of("chexlocalize", ["Cardiomegaly", "Lung Opacity"])
    with pytest.raises(ValueError, match="dataset 'rsna' has one target"):
        findings_of("rsna", ["Pneumonia"])
    assert finding_slug("Enlarged Cardiomediastinum") == "enlarged_cardiomediastinum"


def _run(tmp_path: Path, root: Path, workflow: str, output: str, *extra: str) -> str:
    command = [sys.executable, "-m", "monai.bundle", "run", workflow,
               "--config_file", "['configs/evaluate.json','configs/quick.json']", "--dataset_name", "chexlocalize",
               "--dataset_dir", str(root), "--output_dir", str(tmp_path / output),
               "--ckpt_dir", f"$bundle.findings.checkpoint_dir('{tmp_path / 'models'}', @dataset_name, @dataset_options)",
               "--study#criteria", "$dict(localization=@criteria#localization)",
               "--study#methods", "$dict(grad=@methods#grad, gradcam=@methods#gradcam)", *extra]
    result = run_python(command, cwd=ROOT, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result.stdout


@pytest.mark.slow  # 57 s: the default suite is at its 15-minute budget
def test_the_study_runs_per_finding_through_the_real_command(tmp_path):
    """`run per_finding --findings [...]`: one study per finding (its own model, positives and masks; records equal to
    `run evaluate --dataset_options#finding`), one table and one MLflow run whose keys carry the finding."""
    import mlflow

    root = tmp_path / "chexlocalize"
    write_chexlocalize_folder(root, n_patients=(24, 8), size=128)
    findings = ["Airspace Opacity", "Cardiomegaly"]
    stdout = _run(tmp_path, root, "per_finding", "eval", "--findings", str(findings))
    assert "localization (auprc) per finding" in stdout
    assert re.search(r"source\s+Airspace Opacity\s+Cardiomegaly", stdout)
    assert re.search(r"\ngradcam\s+\d\.\d{3} (PASS|FAIL|INCONCLUSIVE)\s+\d\.\d{3} (PASS|FAIL|INCONCLUSIVE)\n", stdout)
    digests = set()
    for finding in findings:
        wanted = [i["image_id"] for i in load_chexlocalize_datalist(root, split="test", labels=1, limit=8,
                                                                      finding=finding)]
        assert f"densenet121_seed0 on chexlocalize, {finding} (test split, {len(wanted)} positive images)" in stdout
        records = pd.read_csv(next((tmp_path / "eval").glob(f"*_{finding_slug(finding)}_records.csv")))
        assert sorted(set(records.image_id)) == sorted(wanted)
        oracle = records[(records.metric == "hit") & (records.method == "oracle")]
        assert len(oracle) == len(wanted) and (oracle.value == 1).all()  # each finding scored on its own masks
        digests.add(hashlib.sha256((tmp_path / "models" / "chexlocalize" / finding_slug(finding) / "densenet121_seed0.pt")
                                   .read_bytes()).hexdigest())
    assert len(digests) == 2, "a model per finding, trained on its labels"
    verdicts = pd.read_csv(next((tmp_path / "eval").glob("*_findings.csv")))
    assert sorted(set(zip(verdicts.finding, verdicts.method))) == [(f, m) for f in findings for m in ("grad", "gradcam")]

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'eval' / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name("saliency_trust_chexlocalize").experiment_id])
    parent = next(r for r in runs if "findings" in r.data.tags)
    studies = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["finding"] for r in studies) == findings
    summary = pd.read_csv(next((tmp_path / "eval").glob("*_findings_summary.csv")))
    for finding in findings:
        row = summary[(summary.finding == finding) & (summary.method == "gradcam") & (summary.metric == "auprc")]
        assert parent.data.metrics[f"{finding}/localization/auprc/gradcam"] == pytest.approx(row["mean"].item())
        assert parent.data.tags[f"verdict/{finding}/localization/gradcam"] in ("PASS", "FAIL", "INCONCLUSIVE")

    single = _run(tmp_path, root, "evaluate", "single", "--dataset_options#finding", "Cardiomegaly")
    assert "densenet121_seed0 on chexlocalize, Cardiomegaly (test split" in single and "train_" not in single
    alone = pd.read_csv(next((tmp_path / "single").glob("*_records.csv")))
    per_finding = pd.read_csv(next((tmp_path / "eval").glob("*_cardiomegaly_records.csv")))
    pd.testing.assert_frame_equal(alone, per_finding)  # same model (already trained), same numbers


def test_findings_sharing_one_checkpoint_folder_are_refused():
    """An explicit ckpt_dir that does not depend on the finding would reuse the first finding's model for the others:
    refused before any study, naming both findings; the default gives each finding its folder."""
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "evaluate.json"))
    parser.update({"bundle_root": "/b", "dataset_name": "chexlocalize"})
    assert checkpoint_folders(parser.get(), ["Cardiomegaly", "Lung Lesion"]) == {
        "Cardiomegaly": "/b/models/chexlocalize/cardiomegaly", "Lung Lesion": "/b/models/chexlocalize/lung_lesion"}
    parser.update({"ckpt_dir": "/elsewhere"})
    with pytest.raises(ValueError, match="ckpt_dir /elsewhere is the same for 'Cardiomegaly' and 'Edema': leave"):
        checkpoint_folders(parser.get(), ["Cardiomegaly", "Edema"])

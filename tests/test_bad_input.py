"""Bad input where data enters (reader rules, one warning line per item, counts) and the global faults that stop a
run before any work with the cause on the last line."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from monai.transforms import LoadImaged

from damage import FAULTS, damaged_copy, rename_patient
from warm_python import run_python

from bundle.data import RadiographReader, load_rsna_datalist
from bundle.data.screening import check_box
from bundle.data.synthetic_dataset import write_synthetic_dataset
from bundle.errors import last_line
from bundle.networks import build_network, load_checkpoint
from bundle.saliency.cache import MapCache
from bundle.tracking import usable_folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """60 synthetic radiographs (RSNA layout), half MONOCHROME1: enough single-box positives for every fault."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "chest", n_images=60, seed=5,
                                   monochrome1_prob=0.5)


def test_each_bad_item_is_skipped_or_repaired_on_one_line_and_counted(tmp_path, dataset, caplog):
    faults = list(FAULTS)
    damaged = damaged_copy(dataset, tmp_path / "damaged", faults)
    clean = load_rsna_datalist(dataset, labels=1)
    with caplog.at_level(logging.WARNING):
        items = load_rsna_datalist(tmp_path / "damaged", labels=1)
    lines = [r.getMessage() for r in caplog.records]
    for fault, expect in damaged.items():
        line = next((x for x in lines if x.startswith(expect["line"])), None)
        assert line is not None, (fault, lines)
        assert expect["words"] in line and line.endswith(f"; {expect['action']}"), (fault, line)
    skipped = {d["image_id"] for d in damaged.values() if d["action"] == "skipped"}
    assert [i["image_id"] for i in items] == [i["image_id"] for i in clean if i["image_id"] not in skipped]
    assert items.counts("skipped") == {"unreadable_image": 2, "image_shape": 1, "label_value": 2, "box_nan": 1,
                                       "box_outside": 1, "box_size": 1, "mask_unusable": 1}
    assert items.counts("repaired") == {"colour_image": 1, "box_clipped": 1}
    clipped = next(i for i in items if i["image_id"] == damaged["box_clipped"]["image_id"])
    columns = int(LoadImaged("image", reader=RadiographReader(), image_only=True)(clipped)["image"].shape[1])
    assert clipped["boxes"] == [[columns - 4.0, 5.0, 4.0, 8.0]]
    colour = next(i for i in items if i["image_id"] == damaged["colour"]["image_id"])
    image = LoadImaged("image", reader=RadiographReader(), image_only=True)(colour)["image"]
    original = LoadImaged("image", reader=RadiographReader(), image_only=True)(
        next(i for i in clean if i["image_id"] == colour["image_id"]))["image"]
    assert image.shape == original.shape  # one channel, the same grid
    corr = np.corrcoef(image.numpy().ravel(), original.numpy().ravel())[0, 1]
    assert abs(corr) > 0.999  # the same picture in 8 bits (a MONOCHROME1 original, read inverted, correlates -1)


def test_a_patient_the_split_table_lost_is_named_in_every_split(tmp_path, dataset, caplog):
    edited = tmp_path / "edited"
    shutil.copytree(dataset, edited)
    table = pd.read_csv(edited / "split.csv", dtype=str)
    lost, renamed = table.patientId[0], table.patientId[1]
    table.loc[1, "split"] = "validation"
    table.iloc[1:].to_csv(edited / "split.csv", index=False)
    for split in ("train", "test"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            items = load_rsna_datalist(edited, split=split)
        assert {lost, renamed}.isdisjoint(i["image_id"] for i in items)
        assert items.counts("skipped") == {"split_value": 2}
        assert f"{edited / 'split.csv'} (patientId {lost}): no row; skipped" in caplog.text
        assert (f"{edited / 'split.csv'} (patientId {renamed}): split 'validation' is not one of ('train', 'val', "
                "'test'); skipped") in caplog.text


def test_no_usable_image_names_the_folder_and_the_skips(tmp_path, dataset):
    damaged = damaged_copy(dataset, tmp_path / "damaged", ["truncated"], split="test")
    survivors = load_rsna_datalist(tmp_path / "damaged", split="test", labels=1)
    for item in survivors:  # leave nothing usable among the test positives
        open(item["image"], "wb").close()
    with pytest.raises(ValueError) as caught:
        load_rsna_datalist(tmp_path / "damaged", split="test", labels=1)
    assert last_line(caught.value) == (
        f"error: {tmp_path / 'damaged'}: no usable images for split='test', labels=1 "
        f"({len(survivors) + len(damaged)} skipped, reasons in the warnings above): check dataset_dir")


@pytest.mark.parametrize("box, shape, expected", [
    ([2.0, 3.0, 4.0, 5.0], (10, 10), (None, [2.0, 3.0, 4.0, 5.0])),
    ([8.0, 3.0, 4.0, 5.0], (10, 10), ("box_clipped", [8.0, 3.0, 2.0, 5.0])),
    ([-2.0, -1.0, 4.0, 5.0], (10, 12), ("box_clipped", [0.0, 0.0, 2.0, 4.0])),
    ([10.0, 3.0, 4.0, 5.0], (8, 10), ("box_outside", None)),  # starts at the right edge: x = columns
    ([2.0, 8.0, 4.0, 5.0], (8, 10), ("box_outside", None)),  # starts at the bottom edge: y = rows
    ([2.0, 3.0, 0.0, 5.0], (10, 10), ("box_size", None)),
    ([2.0, 3.0, 4.0, -1.0], (10, 10), ("box_size", None)),
    ([float("nan"), 3.0, 4.0, 5.0], (10, 10), ("box_nan", None)),
])
def test_box_rules(box, shape, expected):
    reason, fixed, _ = check_box(box, shape)
    assert (reason, fixed) == expected


def test_a_damaged_checkpoint_is_named_with_what_to_do(tmp_path):
    good = tmp_path / "densenet121_seed0.pt"
    torch.save(build_network("densenet121").state_dict(), good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # a full disk stopped the write
    with pytest.raises(ValueError) as caught:
        load_checkpoint(build_network("densenet121"), str(cut))
    assert last_line(caught.value).startswith(f"error: {cut} cannot be read as a checkpoint (cut short, or not a "
                                              "torch checkpoint; torch says: ")
    assert last_line(caught.value).endswith("): delete it to retrain, or point ckpt_dir elsewhere")
    with pytest.raises(ValueError) as caught:
        load_checkpoint(build_network("inception_v3"), str(good))
    assert last_line(caught.value).startswith(f"error: {good} does not hold Inception3 weights (")


def test_an_output_folder_that_cannot_be_written_is_named(tmp_path):
    blocker = tmp_path / "eval"
    blocker.write_text("a file where the results folder should be")
    with pytest.raises(ValueError) as caught:
        usable_folder(blocker)
    assert last_line(caught.value) == (f"error: {blocker}: cannot write results here (File exists): set output_dir "
                                       "to a folder you can write to")


# --- through the real command: `python -m monai.bundle run evaluate` with configs/quick.json ---------------------

ROOT = Path(__file__).resolve().parents[1]
STUDY_FAULTS = ["truncated", "colour", "target", "box_outside", "mask_size"]
EXPRESSION_ID = "$__import__('pathlib').Path('PWNED').touch() or '@x'"  # data that looks like config code


def evaluate(tmp: Path, dataset: Path, models: Path, *overrides: str) -> subprocess.CompletedProcess:
    """The quick study of ``dataset`` as an RSNA folder, only localisation of grad and Grad-CAM (one model)."""
    command = [sys.executable, "-m", "monai.bundle", "run", "evaluate",
               "--config_file", "['configs/evaluate.json','configs/quick.json']", "--dataset_name", "rsna",
               "--dataset_dir", str(dataset), "--output_dir", str(tmp / "eval"), "--ckpt_dir", str(models),
               "--study#criteria", "$dict(localization=@criteria#localization)",
               "--study#methods", "$dict(grad=@methods#grad, gradcam=@methods#gradcam)", *overrides]
    return run_python(command, cwd=ROOT, timeout=900)


@pytest.fixture(scope="module")
def damaged_study(tmp_path_factory, quick_run):
    """The quick data with five test positives damaged, studied with the quick study's model (trained on the same
    192 images, undamaged: the damage is in the test split, which no training reads)."""
    tmp = tmp_path_factory.mktemp("damaged_study")
    (tmp / "models").mkdir()
    shutil.copy(quick_run[0] / "models" / "densenet121_seed0.pt", tmp / "models" / "densenet121_seed0.pt")
    clean = write_synthetic_dataset(tmp / "clean", n_images=192, seed=0)
    faults = damaged_copy(clean, tmp / "damaged", STUDY_FAULTS, split="test")
    good = [i["image_id"] for i in load_rsna_datalist(tmp / "damaged", split="test", labels=1, limit=2)]
    rename_patient(tmp / "damaged", good[1], EXPRESSION_ID)
    return tmp, faults, evaluate(tmp, tmp / "damaged", tmp / "models")


def test_a_study_on_damaged_data_names_each_bad_file_and_scores_every_good_image(damaged_study):
    tmp, faults, result = damaged_study
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (result.stdout + result.stderr).splitlines()  # MONAI's logging.conf logs to stdout
    for fault, expect in faults.items():
        found = [x for x in lines if expect["line"] in x and expect["words"] in x]
        assert found and found[0].endswith(f"; {expect['action']}"), (fault, found)
    wanted = [i["image_id"] for i in load_rsna_datalist(tmp / "damaged", split="test", labels=1, limit=8)]
    assert not {f["image_id"] for f in faults.values() if f["action"] == "skipped"} & set(wanted)
    records = pd.read_csv(next((tmp / "eval").glob("*_records.csv")))
    assert sorted(set(records.image_id)) == sorted(wanted)  # every good image has its records
    assert faults["colour"]["image_id"] in wanted  # repaired, not lost
    assert EXPRESSION_ID in wanted  # an id, a file name and DICOM tags that look like code are only data
    assert not list(ROOT.glob("PWNED")) and not list(tmp.rglob("PWNED"))
    assert ("Data: 4 study image(s) skipped (box_outside 1, label_value 1, mask_unusable 1, unreadable_image 1); "
            "1 study image(s) repaired (colour_image 1), each named in the run's warnings") in result.stdout
    client = mlflow.MlflowClient(f"sqlite:///{tmp / 'eval' / 'mlruns.db'}")
    run = client.search_runs([client.get_experiment_by_name("saliency_trust_rsna").experiment_id],
                             filter_string="attributes.run_name LIKE 'evaluate%'")[0]
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("data/")} == {
        "data/skipped": 4, "data/skipped/box_outside": 1, "data/skipped/label_value": 1,
        "data/skipped/mask_unusable": 1, "data/skipped/unreadable_image": 1, "data/repaired": 1,
        "data/repaired/colour_image": 1}


def test_a_damaged_checkpoint_stops_the_study_before_any_training(damaged_study):
    tmp, _, _ = damaged_study
    models = tmp / "models_damaged"
    models.mkdir()
    trained = (tmp / "models" / "densenet121_seed0.pt").read_bytes()
    (models / "inception_v3_seed0.pt").write_bytes(trained[: len(trained) // 2])  # a full disk cut the write short
    result = evaluate(tmp, tmp / "damaged", models, "--study#criteria", "@criteria")  # needs all four models
    assert result.returncode != 0
    assert result.stderr.rstrip().splitlines()[-1] == (
        f"error: {models / 'inception_v3_seed0.pt'} cannot be read as a checkpoint (cut short, or not a torch "
        "checkpoint; torch says: PytorchStreamReader failed reading zip archive: failed finding central directory): "
        "delete it to retrain, or point ckpt_dir elsewhere")
    assert sorted(p.name for p in models.iterdir()) == ["inception_v3_seed0.pt"]  # nothing was trained


@pytest.mark.parametrize("workflow", ["train", "evaluate"])
def test_a_damaged_store_stops_the_run_before_any_data_or_model_work(tmp_path, workflow):
    """`train` and `evaluate` keep the same contract: the cause on the last line, before the data are generated."""
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "mlruns.db").write_bytes(b"this is not a database" * 100)
    run = ["run"] if workflow == "train" else ["run", "evaluate"]
    result = run_python([sys.executable, "-m", "monai.bundle", *run, "--config_file", f"configs/{workflow}.json",
                         "--output_dir", str(tmp_path / "eval"), "--dataset_dir", str(tmp_path / "data"),
                         "--ckpt_dir", str(tmp_path / "models")], cwd=ROOT, timeout=300)
    assert result.returncode != 0
    assert result.stderr.rstrip().splitlines()[-1] == (
        f"error: {tmp_path / 'eval' / 'mlruns.db'}: not a usable MLflow store ((sqlite3.DatabaseError) file is not a "
        "database): move it away, or set local_tracking_uri to another store")
    assert not (tmp_path / "data").exists() and not (tmp_path / "models").exists()


def test_image_ids_never_place_a_cached_map_outside_the_cache(tmp_path):
    ids = ["../../escaped", "a/b", "a_b", "/abs/path", "$__import__('os')"]
    cache = MapCache(tmp_path / "out" / "cache")
    description = MapCache.describe("m", "digest", "grad", 1)
    maps = torch.arange(len(ids), dtype=torch.float32)[:, None, None].expand(-1, 2, 2)
    cache.save(description, ids, maps)
    written = [p for p in tmp_path.rglob("*.npy")]
    assert len(written) == len(ids) and all((tmp_path / "out" / "cache") in p.parents for p in written)
    loaded = cache.load(MapCache.key(description), ids)
    assert [float(m[0, 0]) for m in loaded] == list(range(len(ids)))  # 'a/b' and 'a_b' stay apart


def test_colour_images_become_the_bt601_luminance(tmp_path):
    """Distinct channels, so a wrong weight or a single channel taken as grey would show (the damaged-data
    fixture's colour capture is grey in all three)."""
    import pydicom
    from monai.transforms import LoadImage
    from PIL import Image

    from bundle.data import RadiographPNGReader, write_radiograph

    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3)).astype(np.uint8)
    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    write_radiograph(tmp_path / "c.dcm", np.zeros((24, 32)), "c")
    ds = pydicom.dcmread(tmp_path / "c.dcm")
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelData = 8, 8, 7, rgb.tobytes()
    ds.save_as(tmp_path / "c.dcm", enforce_file_format=True)
    dicom = LoadImage(reader=RadiographReader(), image_only=True)(str(tmp_path / "c.dcm"))
    np.testing.assert_allclose(dicom.numpy(), expected, atol=1e-4)
    Image.fromarray(rgb, "RGB").save(tmp_path / "c.png")
    png = LoadImage(reader=RadiographPNGReader(), image_only=True)(str(tmp_path / "c.png"))
    np.testing.assert_allclose(png.numpy(), expected, atol=1.0)  # PIL's L rounds to whole grey levels

"""The SIIM-ACR reader: the Kaggle run-length convention, preparation, patient-level splits, bad rows."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigParser
from PIL import Image

from siim_fixture import write_siim_folder
from warm_python import run_python

from bundle.data import load_dataset, load_siim_datalist, prepare_siim
from bundle.data.siim import rle_decode, rle_encode
from bundle.errors import last_line

ROOT = Path(__file__).resolve().parents[1]


def kaggle_rle2mask(rle: str, width: int, height: int) -> np.ndarray:
    """The competition's own decoder (mask_functions.py of the SIIM-ACR starter code), used as `rle2mask(...).T`."""
    mask = np.zeros(width * height)
    array = np.asarray([int(x) for x in rle.split()])
    starts, lengths = array[0::2], array[1::2]
    current_position = 0
    for index, start in enumerate(starts):
        current_position += start
        mask[current_position:current_position + lengths[index]] = 255
        current_position += lengths[index]
    return mask.reshape(width, height)


def test_rle_follows_the_competition_decoder_and_round_trips():
    rng = np.random.default_rng(0)
    mask = np.zeros((6, 9), dtype=bool)  # rows x columns, not square: a transposition would show
    mask[1:3, 2:7] = True
    mask[4, 0] = mask[5, 8] = True
    rle = rle_encode(mask)
    np.testing.assert_array_equal(rle_decode(rle, mask.shape), kaggle_rle2mask(rle, 9, 6).T > 0)
    np.testing.assert_array_equal(rle_decode(rle, mask.shape), mask)
    # by hand, column by column: (4, 1) in column 0, then (13, 2), (19, 2) ... (37, 2), then pixel 53, as offsets
    # from the end of the previous run
    assert rle == "4 1 8 2 4 2 4 2 4 2 4 2 14 1"
    for _ in range(20):
        random = rng.random((7, 5)) < 0.3
        np.testing.assert_array_equal(rle_decode(rle_encode(random), random.shape), random)
    with pytest.raises(ValueError, match="past the 9 x 6 image"):
        rle_decode("50 10", (6, 9))


@pytest.fixture(scope="module")
def siim(tmp_path_factory):
    root = tmp_path_factory.mktemp("siim") / "siim"
    truth = write_siim_folder(root)
    written, issues = prepare_siim(root)
    return root, truth, written, issues


def test_prepared_masks_equal_the_instances_or_ed(siim):
    root, truth, written, issues = siim
    assert not issues and written == sum(m is not None for _, m in truth.values())
    items = load_siim_datalist(root)
    assert [i["image_id"] for i in items] == list(truth)
    for item in items:
        patient, mask = truth[item["image_id"]]
        assert item["label"] == int(mask is not None) and item["patient"] == patient and item["boxes"] == []
        if mask is not None:
            np.testing.assert_array_equal(np.asarray(Image.open(item["mask"])) > 0, mask)
        else:
            assert "mask" not in item


def test_splits_are_by_patient(siim):
    root, truth, _, _ = siim
    splits = {s: load_siim_datalist(root, split=s) for s in ("train", "val", "test")}
    patients = {s: {i["patient"] for i in items} for s, items in splits.items()}
    assert all(not (patients[a] & patients[b]) for a, b in (("train", "val"), ("train", "test"), ("val", "test")))
    assert sum(len(v) for v in splits.values()) == len(truth)


def test_an_rle_that_does_not_fit_and_an_unprepared_folder_are_named(tmp_path):
    root = tmp_path / "siim"
    truth = write_siim_folder(root, n_patients=4)
    with pytest.raises(FileNotFoundError) as caught:
        load_dataset("siim", root)
    assert last_line(caught.value) == (f"error: {root / 'split.csv'}: not prepared: run python "
                                       f"scripts/prepare_siim.py {root}")
    csv = root / "train-rle.csv"
    lines = csv.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if i and not line.endswith("-1"))
    victim = lines[row].split(",")[0]
    lines[row] = f"{victim}, 99999 5"
    csv.write_text("\n".join(lines) + "\n")
    result = run_python([sys.executable, "scripts/prepare_siim.py", str(root)], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert (f"{csv} line {row + 1} (ImageId {victim}): EncodedPixels do not fit the 128 x 96 image: a run ends at "
            "pixel 100004, past the 128 x 96 image; skipped") in result.stderr.splitlines()
    items = load_siim_datalist(root)
    assert victim not in {i["image_id"] for i in items} and len(items) == len(truth) - 1
    assert items.counts("skipped") == {"mask_unusable": 1}


def test_the_configs_read_siim_by_name(siim):
    root, truth, _, _ = siim
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "evaluate.json"))
    parser.update({"bundle_root": str(ROOT), "dataset_name": "siim", "dataset_dir": str(root)})
    items = parser.get_parsed_content("test#datalist")
    assert [i["image_id"] for i in items] == [i["image_id"] for i in load_siim_datalist(
        root, split="test", labels=1, limit=parser.get_parsed_content("saliency#n_images"))]

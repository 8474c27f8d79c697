"""The MURA v1.1 reader and the readers' consensus masks, on a folder in the release's exact layout."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.draw import polygon

from mura_fixture import write_mura_folder
from warm_python import run_python

from bundle.data import load_dataset, load_mura_datalist
from bundle.data.mura import image_key
from bundle.errors import last_line

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mura(tmp_path_factory):
    root = tmp_path_factory.mktemp("mura")
    truth = write_mura_folder(root)
    result = run_python([sys.executable, "scripts/prepare_mura.py", str(root), "--annotations",
                         *(str(root / f"reader{r}.csv") for r in (1, 2, 3))], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return root, truth, result


def _drawn(shape: dict, size: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    if shape["name"] == "rect":
        mask[shape["y"]:shape["y"] + shape["height"], shape["x"]:shape["x"] + shape["width"]] = True
    else:
        mask[polygon(shape["all_points_y"], shape["all_points_x"], shape=size)] = True
    return mask


def test_labels_splits_and_the_consensus_of_two_readers_in_three(mura):
    root, truth, result = mura
    assert f"wrote {sum(bool(s) for _, _, s in truth.values())} consensus mask(s)" in result.stdout
    items = load_mura_datalist(root)
    assert [i["image"] for i in items] == [str(root / p) for p in truth]
    for item in items:
        patient, label, shapes = truth[item["image"].removeprefix(str(root) + "/")]
        assert item["label"] == label and item["patient"] == patient
        assert item["split"] == "test" if "/valid/" in item["image"] else item["split"] in ("train", "val")
        if shapes:
            size = np.asarray(Image.open(item["image"])).shape
            a, b, c = (_drawn(shapes[r], size) for r in (1, 2, 3))
            expected = (a & b) | (a & c) | (b & c)
            np.testing.assert_array_equal(np.asarray(Image.open(item["mask"])) > 0, expected)
            assert expected.sum() < (a | b | c).sum()  # the third reader's strip is not in the consensus
        else:
            assert "mask" not in item
    splits = {s: {i["patient"] for i in load_mura_datalist(root, split=s)} for s in ("train", "val", "test")}
    assert not (splits["train"] & splits["val"]) and not ((splits["train"] | splits["val"]) & splits["test"])
    positives = load_mura_datalist(root, labels=1)
    assert [i["image"] for i in positives] == [str(root / p) for p, (_, _, s) in truth.items() if s]


def test_a_bad_list_row_and_a_missing_image_are_named(tmp_path, caplog):
    truth = write_mura_folder(tmp_path, n_patients=4)
    paths = tmp_path / "train_image_paths.csv"
    lines = paths.read_text().splitlines()
    (tmp_path / lines[1]).unlink()
    paths.write_text("\n".join(lines[:2] + ["MURA-v1.1/train/image9.png"] + lines[2:]) + "\n")
    items = load_dataset("mura", tmp_path / "MURA-v1.1")  # the MURA-v1.1 folder itself is accepted too
    assert len(items) == len(truth) - 1
    assert items.counts("skipped") == {"unreadable_image": 1, "label_value": 1}
    assert f"{paths} line 3: 'MURA-v1.1/train/image9.png' is not MURA-v1.1/" in caplog.text
    assert f"{tmp_path / lines[1]}: not a readable image file (" in caplog.text
    with pytest.raises(FileNotFoundError) as caught:
        load_mura_datalist(tmp_path / "elsewhere")
    assert last_line(caught.value).startswith(f"error: {tmp_path / 'elsewhere' / 'MURA-v1.1'}: MURA folder does")


def test_image_keys_ignore_the_folder_holding_mura():
    assert image_key("/data/MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/image1.png") == \
        image_key("MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/image1.png") == \
        "XR_WRIST/patient11185/study1_positive/image1.png"

"""3-D: the synthetic brain volumes, the Decathlon-style NIfTI reader, 3-D networks, and the study on volumes through
the real command (configs/volume.json, configs/quick_3d.json)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose

from warm_python import run_python

from bundle.data import load_dataset, load_nifti_datalist, render_volume, write_volume_dataset
from bundle.data.synthetic_volume import SPACING_MM
from bundle.errors import last_line
from bundle.networks import build_network, cam_layer_of

ROOT = Path(__file__).resolve().parents[1]
VOLUME_CONFIGS = "['configs/evaluate.json','configs/quick.json','configs/volume.json','configs/quick_3d.json']"


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("brain")
    return write_volume_dataset(root, n_images=24, seed=3)


def test_a_positive_differs_from_its_lesion_free_twin_exactly_on_its_lesion():
    for seed in range(6):
        positive, twin = render_volume(seed, True), render_volume(seed, False)
        assert positive.mask.any() and not twin.mask.any() and twin.knobs == {}
        changed = positive.image != twin.image
        assert changed.any() and not (changed & ~positive.mask).any()
        assert (positive.image[positive.mask] >= twin.image[positive.mask]).all()  # the lesion enhances
        np.testing.assert_array_equal(render_volume(seed, True).image, positive.image)  # seeded


def test_lesion_free_twins_of_volumes_are_their_negatives(volumes):
    from bundle.data.synthetic_volume import write_volume_twins

    twins = write_volume_twins(volumes, ["brain_0003", "brain_0001"])
    assert [t["image_id"] for t in twins] == ["brain_0003", "brain_0001"]
    for twin in twins:
        seed = 300_000 + int(twin["image_id"][-4:])
        np.testing.assert_array_equal(np.asarray(nib.load(twin["image"]).dataobj), render_volume(seed, False).image)
    with pytest.raises(ValueError, match="no volume 'brain_9999'"):
        write_volume_twins(volumes, ["brain_9999"])


def test_the_reader_gives_volumes_masks_and_patient_level_splits(volumes):
    items = load_nifti_datalist(volumes)
    assert [i["image_id"] for i in items] == [f"brain_{i:04d}" for i in range(24)]
    for n, item in enumerate(items):
        assert item["label"] == n % 2
        mask = np.asarray(nib.load(item["mask"]).dataobj)
        np.testing.assert_array_equal(mask > 0, render_volume(300_000 + n, bool(n % 2)).mask)
        assert np.allclose(nib.load(item["image"]).header.get_zooms(), SPACING_MM)
    splits = {s: load_nifti_datalist(volumes, split=s) for s in ("train", "val", "test")}
    assert sum(len(v) for v in splits.values()) == 24 and all(splits.values())
    assert not set.intersection(*({i["patient"] for i in v} for v in splits.values()))
    positives = load_dataset("synthetic_brain", volumes, split="test", labels=1)
    assert positives and all(i["label"] == 1 and i["split"] == "test" for i in positives)


def test_decathlon_entries_label_volumes_and_classes(tmp_path):
    """A Decathlon entry's ``label`` is its segmentation (class: whether it marks a voxel); an integer ``label`` is the
    class itself, with no mask."""
    root = write_volume_dataset(tmp_path / "d", n_images=4)
    manifest = json.loads((root / "dataset.json").read_text())
    manifest["training"] = [{"image": e["image"], "label": e["label"]} for e in manifest["training"][:2]] + [
        {"image": manifest["training"][2]["image"], "label": 1, "patient": "p7"}]
    (root / "dataset.json").write_text(json.dumps(manifest))
    items = load_nifti_datalist(root)
    assert [(i["label"], "mask" in i, i["patient"]) for i in items] == [
        (0, True, "brain_0000"), (1, True, "brain_0001"), (1, False, "p7")]


def test_bad_volumes_and_entries_are_named_and_skipped(tmp_path, caplog):
    root = write_volume_dataset(tmp_path / "d", n_images=6)
    raw = (root / "imagesTr" / "brain_0000.nii.gz").read_bytes()
    (root / "imagesTr" / "brain_0000.nii.gz").write_bytes(raw[: len(raw) // 2])  # cut short
    nib.save(nib.Nifti1Image(np.zeros((32, 32), np.float32), np.eye(4)), root / "imagesTr" / "brain_0001.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 16), np.uint8), np.eye(4)), root / "labelsTr" / "brain_0002.nii.gz")
    (root / "labelsTr" / "brain_0003.nii.gz").unlink()
    manifest = json.loads((root / "dataset.json").read_text())
    manifest["training"][4]["class"] = 2
    (root / "dataset.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        items = load_nifti_datalist(root)
    image = root / "imagesTr"
    assert f"{image / 'brain_0000.nii.gz'}: not a readable NIfTI file (" in caplog.text
    assert f"{image / 'brain_0001.nii.gz'}: data of shape (32, 32): one 3-D volume per file expected" in caplog.text
    assert (f"{image / 'brain_0002.nii.gz'}: lesion mask {root / 'labelsTr' / 'brain_0002.nii.gz'} has grid "
            "(32, 32, 16), its volume (32, 32, 32); skipped") in caplog.text
    assert (f"{root / 'dataset.json'} training[3] (./imagesTr/brain_0003.nii.gz): mask volume "
            f"{root / 'labelsTr' / 'brain_0003.nii.gz'} is missing; skipped") in caplog.text
    assert "training[4] (./imagesTr/brain_0004.nii.gz): class 2: expected 0 or 1; skipped" in caplog.text
    assert [i["image_id"] for i in items] == ["brain_0005"]
    assert items.counts("skipped") == {"unreadable_image": 1, "image_shape": 1, "mask_unusable": 1, "label_value": 2}
    (root / "dataset.json").unlink()
    with pytest.raises(FileNotFoundError) as caught:
        load_dataset("nifti", root)
    assert last_line(caught.value) == (f"error: {root / 'dataset.json'}: expected file is missing (a Decathlon-style "
                                       "dataset.json)")


def test_the_volume_config_reads_a_volume_and_its_lesion_on_one_grid(volumes):
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / n) for n in ("evaluate.json", "volume.json")])
    parser.update({"bundle_root": str(ROOT), "dataset_dir": str(volumes)})
    load = Compose(parser.get_parsed_content("preprocessing"))
    item = load_nifti_datalist(volumes, labels=1)[0]
    out = load(dict(item))
    assert tuple(out["image"].shape) == (1, 32, 32, 32) and tuple(out["mask"].shape) == (1, 32, 32, 32)
    sample = render_volume(300_000 + int(item["image_id"][-4:]), True)
    np.testing.assert_array_equal(out["mask"][0].numpy() > 0, sample.mask)  # same voxel order as the image
    expected = (sample.image - sample.image.min()) / (sample.image.max() - sample.image.min())
    np.testing.assert_allclose(out["image"][0].numpy(), expected, atol=1e-6)
    assert parser.get_parsed_content("ckpt_dir") == str(ROOT / "models" / "synthetic_brain")


def test_3d_networks_know_their_dimensions_and_cam_layer():
    net = build_network("densenet121_3d")
    assert net(torch.zeros(2, 1, 32, 32, 32)).shape == (2, 2) and cam_layer_of(net) == "features.denseblock3"
    with pytest.raises(ValueError, match=r"network 'densenet121' is 2-D but spatial_dims is 3: choose one of "
                                         r"\['densenet121_3d', 'densenet169_3d', 'vit_3d'\] \(network_name\)"):
        build_network("densenet121", spatial_dims=3)


@pytest.mark.slow  # 46 s; test_every_3d_criterion_runs_on_volumes (slow) runs its superset
def test_the_study_runs_on_volumes_through_the_real_command(tmp_path):
    """The quick 3-D config end to end: a 3-D DenseNet121 trained on the synthetic brains, maps in 3-D, localisation
    against the lesion volumes (the oracle hits every lesion), lesion reliance against the twin volumes, cascading
    randomisation with 3-D SSIM; the 2-D-only faithfulness criterion, XRAI and edge baseline skipped, each said."""
    command = [sys.executable, "-m", "monai.bundle", "run", "evaluate", "--config_file", VOLUME_CONFIGS,
               "--dataset_dir", str(tmp_path / "brain"), "--output_dir", str(tmp_path / "eval"),
               "--ckpt_dir", str(tmp_path / "models"),
               "--study#criteria", "$dict(localization=@criteria#localization, lesion_reliance=@criteria#lesion_reliance, "
               "cascading_randomization=@criteria#cascading_randomization, faithfulness=@criteria#faithfulness)",
               "--study#methods", "$dict(grad=@methods#grad, gradcam=@methods#gradcam, occlusion=@methods#occlusion, "
               "xrai=@methods#xrai)",
               "--saliency#n_images", "4", "--saliency#sensitivity_images", "2", "--study#floor_batches", "[8]",
               "--criteria#cascading_randomization#steps", "{'densenet121_3d': ['class_layers', 'conv0']}"]
    result = run_python(command, cwd=ROOT, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    wanted = [i["image_id"] for i in load_nifti_datalist(tmp_path / "brain", split="test", labels=1, limit=4)]
    assert f"densenet121_3d_seed0 on synthetic_brain (test split, {len(wanted)} positive images)" in output
    assert "faithfulness: skipped, PIC curves are defined here for one-channel 2-D images" in output
    for name in ("xrai", "edge"):  # a 2-D segmentation, Canny edges
        assert f"{name}: skipped: defined for 2-D images only, the study's are 3-D" in output
        assert f"  all: {name}: skipped: defined for 2-D images only" in result.stdout  # under "Not scored"
    records = pd.read_csv(next((tmp_path / "eval").glob("*_records.csv")))
    assert not {"xrai", "edge"} & set(records.method)
    assert sorted(set(records[records.criterion == "localization"].image_id)) == sorted(wanted)
    oracle = records[(records.metric == "hit") & (records.method == "oracle")]
    assert len(oracle) == len(wanted) and (oracle.value == 1).all()
    twins = records[(records.criterion == "lesion_reliance") & (records.metric == "logit_difference")]
    assert sorted(twins.image_id) == sorted(wanted)  # each positive against its lesion-free twin volume
    cascade = records[records.criterion == "cascading_randomization"]
    assert set(cascade.method) >= {"grad", "gradcam", "occlusion"} and cascade.value.notna().any()
    assert next((tmp_path / "eval").glob("*_maps.png")).stat().st_size > 0  # the gallery shows the lesion's slice


@pytest.mark.slow
def test_every_3d_criterion_runs_on_volumes(tmp_path):
    """The whole quick 3-D config (every method and criterion of configs/volume.json): each criterion scores, the
    gradient map wherever it is a source, and faithfulness says it is skipped."""
    command = [sys.executable, "-m", "monai.bundle", "run", "evaluate", "--config_file", VOLUME_CONFIGS,
               "--dataset_dir", str(tmp_path / "brain"), "--output_dir", str(tmp_path / "eval"),
               "--ckpt_dir", str(tmp_path / "models")]
    result = run_python(command, cwd=ROOT, timeout=3000)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "faithfulness: skipped, PIC curves are defined here for one-channel 2-D images" in output
    records = pd.read_csv(next((tmp_path / "eval").glob("*_records.csv")))
    scored = records[records.value.notna()]
    assert set(scored.criterion) == {"localization", "fidelity_to_published", "lesion_reliance",
                                     "cascading_randomization", "label_randomization", "repeatability",
                                     "reproducibility", "psc"}
    assert set(scored[scored.method == "grad"].criterion) == {"localization", "cascading_randomization",
                                                              "label_randomization", "repeatability",
                                                              "reproducibility", "psc"}
    assert set(scored[scored.criterion == "fidelity_to_published"].method) == {"ig", "kernelshap"}  # quick's pair
    assert set(records.method) >= {"grad", "smoothgrad", "ig", "smoothig", "gradcam", "gradcampp", "scorecam", "gbp",
                                   "ggcam", "occlusion", "kernelshap", "random", "prior", "oracle"}


def test_a_volume_transformer_is_trained_and_studied_through_the_real_command(tmp_path):
    """vit_3d trained by train.json on the quick brain volumes (3 epochs), then its attention maps and Grad-CAM on its
    4^3 token grid scored in 3-D and its cascade run from the head to the patch embedding."""
    command = [sys.executable, "-m", "monai.bundle", "run", "evaluate", "--config_file", VOLUME_CONFIGS,
               "--dataset_dir", str(tmp_path / "brain"), "--output_dir", str(tmp_path / "eval"),
               "--ckpt_dir", str(tmp_path / "models"), "--network_name", "vit_3d", "--epochs", "3",
               "--study#criteria", "$dict(localization=@criteria#localization, "
               "cascading_randomization=@criteria#cascading_randomization)",
               "--methods#rollout", "{'_target_': 'bundle.saliency.get_method', 'name': 'rollout'}",
               "--methods#chefer", "{'_target_': 'bundle.saliency.get_method', 'name': 'chefer'}",
               "--study#methods", "$dict(gradcam=@methods#gradcam, rollout=@methods#rollout, chefer=@methods#chefer)",
               "--saliency#n_images", "4", "--saliency#sensitivity_images", "2", "--study#floor_batches", "[8]",
               "--criteria#cascading_randomization#steps", "{'vit_3d': ['head', 'patch_embedding']}"]
    result = run_python(command, cwd=ROOT, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert (tmp_path / "models" / "vit_3d_seed0.pt").is_file()
    records = pd.read_csv(next((tmp_path / "eval").glob("*_records.csv")))
    auprc = records[(records.criterion == "localization") & (records.metric == "auprc")]
    assert set(auprc.method) >= {"gradcam", "rollout", "chefer"} and auprc.value.notna().all()
    cascade = records[(records.criterion == "cascading_randomization") & (records.metric == "ssim")]
    assert set(cascade.step) >= {"cascading:head", "cascading:patch_embedding"}
    assert set(cascade[cascade.step == "cascading:patch_embedding"].method) >= {"rollout", "chefer"}

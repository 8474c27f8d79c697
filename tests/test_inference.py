"""configs/inference.json through the real command: predictions and maps of a folder of DICOM, PNG, JPEG and NIfTI
files, no ground truth; and the Model Zoo's check of the network's input and output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import NibabelReader
from monai.transforms import Compose, LoadImage, Resize
from PIL import Image

from warm_python import run_python

from bundle.data import RadiographPNGReader, RadiographReader, render, write_radiograph, write_volume_dataset
from bundle.errors import last_line
from bundle.networks import build_network
from bundle.saliency import get_method

ROOT = Path(__file__).resolve().parents[1]


def _run(*overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", *overrides]
    return run_python(command, cwd=ROOT, timeout=600)


def _checkpoint(folder: Path, name: str) -> Path:
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(build_network(name).state_dict(), folder / f"{name}_seed0.pt")
    return folder


def test_a_folder_of_radiographs_gets_predictions_and_maps_on_each_image_grid(tmp_path):
    """Probabilities equal the network's softmax on the preprocessed image; each map is the method's map resized to
    the image's own grid (non-square images included) and saved with the image's own affine."""
    images = tmp_path / "images"
    images.mkdir()
    write_radiograph(images / "a.dcm", render(1, True).image, "a", True, "CHEST")
    grey = (render(2, False).image * 255).astype(np.uint8)
    Image.fromarray(grey[:, :100]).save(images / "b.png")
    Image.fromarray(grey[10:, :]).save(images / "c.jpg")
    (images / "d.dcm").write_bytes(b"DICM but cut short")  # one bad file among good ones: named and skipped
    models = _checkpoint(tmp_path / "models", "densenet121")
    result = _run("--dataset_dir", str(images), "--ckpt_dir", str(models), "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert f"{images / 'd.dcm'}: not a readable DICOM file" in result.stdout + result.stderr

    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "evaluate.json"))
    parser.update({"bundle_root": str(ROOT)})
    preprocess = Compose(parser.get_parsed_content("image_preprocessing"))
    network = build_network("densenet121")
    network.load_state_dict(torch.load(models / "densenet121_seed0.pt", weights_only=True))
    network.eval()
    load = LoadImage(reader=[NibabelReader(), RadiographReader(), RadiographPNGReader()], image_only=True,
                     ensure_channel_first=True)
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv", header=None, names=["image", "p0", "p1"])
    assert sorted(predictions.image) == sorted(str(images / n) for n in ("a.dcm", "b.png", "c.jpg"))
    for row in predictions.itertuples(index=False):
        image = preprocess({"image": row.image})["image"].as_tensor()[None]
        with torch.no_grad():
            expected = torch.softmax(network(image), dim=1)[0]
        np.testing.assert_allclose([row.p0, row.p1], expected.numpy(), atol=1e-5)
        original = load(row.image)
        stem = Path(row.image).stem
        for method in ("grad", "gradcam"):
            saved = nib.load(tmp_path / "out" / f"{stem}_{method}.nii.gz")
            assert saved.shape == tuple(original.shape[1:])
            np.testing.assert_allclose(saved.affine, np.asarray(original.meta["affine"]), atol=1e-6)
            small = get_method(method)(network, image, 1)
            expected_map = np.asarray(Resize(saved.shape, mode="bilinear")(small.detach()))[0]
            np.testing.assert_allclose(np.asarray(saved.dataobj), expected_map, atol=1e-5)
        assert (tmp_path / "out" / f"{stem}_maps.png").stat().st_size > 0


def test_volumes_get_their_maps_as_nifti_with_their_affine(tmp_path, monkeypatch):
    """Each volume is read once (the maps take their grid and affine from its reader's metadata, not a second read)."""
    from monai.bundle import run

    volumes = write_volume_dataset(tmp_path / "brain", n_images=2) / "imagesTr"
    models = _checkpoint(tmp_path / "models", "densenet121_3d")
    monkeypatch.chdir(ROOT)  # in this process (the radiographs' test runs the command itself)
    reads, read = [], NibabelReader.read

    def counted(self, data, **kwargs):
        reads.extend(map(str, data if isinstance(data, (list, tuple)) else [data]))
        return read(self, data, **kwargs)

    monkeypatch.setattr(NibabelReader, "read", counted)
    run("run", config_file="configs/inference.json", logging_file=False, dataset_dir=str(volumes),
        ckpt_dir=str(models), output_dir=str(tmp_path / "out"), network_name="densenet121_3d", spatial_dims=3,
        image_size=32)
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv", header=None)
    assert len(predictions) == 2 and np.allclose(predictions[[1, 2]].sum(axis=1), 1)
    for volume in sorted(volumes.glob("*.nii.gz")):
        stem = volume.name[: -len(".nii.gz")]
        saved = nib.load(tmp_path / "out" / f"{stem}_gradcam.nii.gz")
        assert saved.shape == (32, 32, 32)
        np.testing.assert_allclose(saved.affine, nib.load(volume).affine)
    assert sorted(reads) == [str(v) for v in sorted(volumes.glob("*.nii.gz"))]


def _last_line_in_process(**overrides) -> str:
    """The last line the command would print (``bundle.errors.last_line`` of what the workflow raises), run in this
    process: the subprocess check above covers the printing itself."""
    from monai.bundle import run

    with pytest.raises(Exception) as error:
        run("run", config_file="configs/inference.json", logging_file=False, **overrides)
    return last_line(error.value)


def test_an_empty_folder_or_a_missing_checkpoint_is_named(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    result = _run("--dataset_dir", str(tmp_path / "empty"))
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'empty'}: no DICOM, PNG, JPEG or NIfTI files (suffixes .dcm, .png, .jpg, .jpeg, .nii, "
        ".nii.gz)")
    monkeypatch.chdir(ROOT)
    (tmp_path / "empty" / "x.png").write_bytes(b"")
    last = _last_line_in_process(dataset_dir=str(tmp_path / "empty"), ckpt_dir=str(tmp_path / "none"))
    assert last.startswith(f"error: {tmp_path / 'empty'}: no usable images"), last
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "empty" / "y.png")
    last = _last_line_in_process(dataset_dir=str(tmp_path / "empty"), ckpt_dir=str(tmp_path / "none"))
    assert last.startswith(f"error: {tmp_path / 'none' / 'densenet121_seed0.pt'} cannot be read as a checkpoint"), last


@pytest.mark.parametrize("network", ["densenet121", "vit"])
def test_the_network_passes_the_model_zoo_input_output_check(network):
    result = run_python([sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def",
                         "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json",
                         "--network_name", network], cwd=ROOT, timeout=300)
    assert result.returncode == 0 and "data shape of network is verified with no error" in result.stdout + result.stderr

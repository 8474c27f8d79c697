"""Model Zoo readiness: the bundle properties MONAI defines for training and inference workflows, and the export of
a checkpoint to TorchScript with MONAI's own command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image

from warm_python import run_python

from bundle.networks import build_network

ROOT = Path(__file__).resolve().parents[1]


def _checkpoint(folder: Path, name: str = "densenet121") -> Path:
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(build_network(name).state_dict(), folder / f"{name}_seed0.pt")
    return folder / f"{name}_seed0.pt"


def test_train_and_inference_configs_have_every_required_property(tmp_path):
    train = ConfigWorkflow(config_file=str(ROOT / "configs" / "train.json"), workflow_type="train",
                           logging_file=False, bundle_root=str(ROOT), dataset_dir=str(tmp_path / "data"),
                           output_dir=str(tmp_path / "eval"), synthetic={"n_images": 16, "seed": 0})
    train.initialize()
    assert train.check_properties() == []
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(images / "a.png")
    infer = ConfigWorkflow(config_file=str(ROOT / "configs" / "inference.json"), workflow_type="infer",
                           logging_file=False, bundle_root=str(ROOT), dataset_dir=str(images),
                           ckpt_dir=str(_checkpoint(tmp_path / "models").parent))
    infer.initialize()
    assert infer.check_properties() == []


@pytest.mark.parametrize("name", ["densenet121", "vit"])
def test_a_checkpoint_exports_to_torchscript_with_the_same_outputs(tmp_path, name):
    """MONAI's ckpt_export on the inference config's network_def: the TorchScript module gives the checkpoint's
    outputs (the trained DenseNet121 exports to about 28 MB, over the Zoo's 25 MB per file, so checkpoints are
    outputs, never tracked; the ViT to about 4 MB)."""
    checkpoint = _checkpoint(tmp_path, name)
    exported = tmp_path / "model.ts"
    result = run_python([sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
                         "--filepath", str(exported), "--ckpt_file", str(checkpoint), "--network_name", name,
                         "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json"],
                     cwd=ROOT, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    network = build_network(name)
    network.load_state_dict(torch.load(checkpoint, weights_only=True))
    images = torch.rand(2, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    scripted = torch.jit.load(str(exported)).eval()
    with torch.no_grad():
        torch.testing.assert_close(scripted(images), network.eval()(images), atol=1e-5, rtol=1e-5)
    size_mb = exported.stat().st_size / 2**20
    assert size_mb > 25 if name == "densenet121" else 3 < size_mb < 6, size_mb


def test_large_files_yml_describes_every_default_checkpoint_none_tracked(tmp_path):
    """large_files.yml lists exactly the checkpoints the default study trains (as scripts/describe_large_files.py
    writes it: path, url, SHA-256), and git tracks none of them (each is over the Zoo's 25 MB limit, an output)."""
    import hashlib

    import yaml

    shipped = yaml.safe_load((ROOT / "large_files.yml").read_text())["large_files"]
    paths = [f["path"] for f in shipped]
    assert paths == ["models/densenet121_seed0.pt", "models/inception_v3_seed0.pt",
                     "models/densenet121_seed0_permuted_labels.pt", "models/densenet121_seed1.pt"]
    for f in shipped:
        assert f["hash_type"] == "sha256" and len(f["hash_val"]) == 64 and int(f["hash_val"], 16) >= 0
    tracked = subprocess.run(["git", "ls-files", "models"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert not set(paths) & set(tracked)
    ignored = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert ignored == paths

    (tmp_path / "models").mkdir()
    for i, path in enumerate(paths):
        (tmp_path / path).write_bytes(bytes([i]) * (1000 + i))
    result = run_python([sys.executable, "scripts/describe_large_files.py", "--models", str(tmp_path / "models"),
                         "--url-base", "https://example.org/v/", "--out", str(tmp_path / "large_files.yml")],
                     cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    written = yaml.safe_load((tmp_path / "large_files.yml").read_text())["large_files"]
    assert written == [{"path": p, "url": f"https://example.org/v/{Path(p).name}", "hash_type": "sha256",
                        "hash_val": hashlib.sha256((tmp_path / p).read_bytes()).hexdigest()} for p in paths]

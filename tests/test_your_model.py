"""Bring your own model: the README's worked example at quick size, a MONAI ResNet18 trained with our train.json as a
stand-in for a team's model, then studied; its CAM layer and randomisation order come from its type, and the models a
criterion retrains (another seed) are built from the same network_def."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from warm_python import run_python

ROOT = Path(__file__).resolve().parents[1]
RESNET = "$monai.networks.nets.resnet18(spatial_dims=2, n_input_channels=1, num_classes=2)"


def _run(run_id: str, config_file: str, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config_file, *overrides]
    return run_python(command, cwd=ROOT, timeout=900)


@pytest.mark.slow  # 1.5 min: kept out of the default suite, which is near its 15-minute budget
def test_a_monai_resnet18_trained_with_our_train_config_is_studied(tmp_path):
    common = ["--dataset_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "eval"),
              "--ckpt_dir", str(tmp_path / "models"), "--network_def", RESNET, "--network_name", "resnet18"]
    trained = _run("run", "configs/train.json", *common, "--epochs", "1", "--synthetic", "%configs/quick.json#synthetic")
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-3000:]
    assert (tmp_path / "models" / "resnet18_seed0.pt").is_file()
    studied = _run("evaluate", "['configs/evaluate.json','configs/quick.json']", *common,
                   "--study#criteria", "$dict(localization=@criteria#localization, "
                   "cascading_randomization=@criteria#cascading_randomization, repeatability=@criteria#repeatability)",
                   "--criteria#cascading_randomization#architectures", "['resnet18']",
                   "--study#methods", "$dict(grad=@methods#grad, gradcam=@methods#gradcam)")
    output = studied.stdout + studied.stderr
    assert studied.returncode == 0, output[-3000:]
    # MONAI's ResNet is not torchvision's: its layer found by the fallback, and said although the nested training of
    # seed 1 chose it first, its INFO lines held back
    assert "CAM layer of ResNet: 'layer4' (the last convolutional block" in output
    assert (tmp_path / "models" / "resnet18_seed1.pt").is_file(), "repeatability trained the same network, seed 1"
    records = pd.read_csv(next((tmp_path / "eval").glob("*_records.csv")))
    cascade = records[(records.criterion == "cascading_randomization") & (records.method == "grad")]
    steps = [step.split(":")[-1] for step in dict.fromkeys(cascade.step) if step != "trained"]
    assert steps == ["fc", "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"]  # its children, output first
    agreement = records[(records.criterion == "repeatability") & (records.method == "gradcam")]
    assert set(agreement.model) == {"resnet18_seed0"} and agreement.value.notna().any()
    assert "resnet18_seed0 on synthetic (test split" in output


@pytest.mark.slow  # 16 s: the default suite is at its 15-minute budget
def test_a_built_in_name_for_your_own_network_is_refused(tmp_path):
    result = _run("run", "configs/train.json", "--network_def", RESNET, "--output_dir", str(tmp_path / "eval"),
                  "--dataset_dir", str(tmp_path / "data"))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "error: network_def is your own network but network_name 'densenet121' names a built-in architecture: give "
        "it another name (its checkpoints are named after it)")


def test_a_torchscript_file_loads_as_the_checkpoint_of_its_architecture(tmp_path):
    """A TorchScript file (what ckpt_export writes) in place of a known architecture's checkpoint: its weights load
    into the configured network, which keeps its hooks, so every method runs on the same weights."""
    import torch

    from bundle.networks import build_network, is_torchscript, load_checkpoint

    torch.manual_seed(0)
    network = build_network("densenet121").eval()
    torch.jit.save(torch.jit.script(network), str(tmp_path / "densenet121_seed0.pt"))
    torch.save(network.state_dict(), tmp_path / "state.pt")
    assert is_torchscript(tmp_path / "densenet121_seed0.pt") and not is_torchscript(tmp_path / "state.pt")
    loaded = load_checkpoint(build_network("densenet121"), str(tmp_path / "densenet121_seed0.pt"))
    assert type(loaded) is type(network)
    for (name, a), b in zip(network.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name

"""The bundle configs parse, keep the Model Zoo ids, and choose network and seed by config key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from monai.bundle import ConfigParser

from bundle.errors import last_line

ROOT = Path(__file__).resolve().parents[1]


def _parser(name: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / name))
    parser.update({"bundle_root": str(ROOT), **overrides})
    return parser


def test_train_config_keeps_model_zoo_ids():
    parser = _parser("train.json")
    for key in ("bundle_root", "device", "dataset_dir", "network_def", "train#trainer", "validate#evaluator",
                "val_interval", "output_dir", "train#handlers", "validate#handlers"):
        assert key in parser, key


@pytest.mark.parametrize("name", ["densenet121", "inception_v3"])
def test_network_is_chosen_by_config_key(name):
    net = _parser("train.json", network_name=name).get_parsed_content("network_def")
    assert net.architecture == name
    assert _parser("train.json", network_name=name, seed=3).get_parsed_content("ckpt_name") == f"{name}_seed3.pt"
    permuted = _parser("train.json", network_name=name, permute_labels=True)
    assert permuted.get_parsed_content("ckpt_name") == f"{name}_seed0_permuted_labels.pt"


def test_every_run_gets_a_unique_descriptive_name():
    names = {_parser("train.json").get_parsed_content("run_name") for _ in range(3)}
    assert len(names) == 3 and all(n.startswith("train_densenet121_seed0_") for n in names)


def test_default_study_uses_every_method_and_each_is_configurable():
    from bundle.saliency import METHODS, get_method

    parser = _parser("evaluate.json")
    parser["methods#ig#n_steps"] = 5
    methods = parser.get_parsed_content("methods")
    assert set(methods) == set(METHODS) and methods["ig"].n_steps == 5
    published = ConfigParser(ConfigParser.load_config_files([str(ROOT / "configs/evaluate.json"),
                                                             str(ROOT / "configs/published.json")]))
    published["bundle_root"] = str(ROOT)
    # the published profile runs every method with exactly its published (class default) parameters
    for name, method in published.get_parsed_content("methods").items():
        assert vars(method) == vars(get_method(name)), name
    assert published.get_parsed_content("saliency#n_images") == 64


def test_profiles_are_one_file_each_and_auto_picks_cpu_without_cuda():
    import json

    import torch

    from bundle.profiles import resolve_profile

    assert resolve_profile("auto") == ("published" if torch.cuda.is_available() else "cpu")
    cpu = json.loads((ROOT / "configs/profiles/cpu.json").read_text())
    parser = _parser("evaluate.json", profile="cpu")
    assert parser.get_parsed_content("saliency#n_images") == cpu["n_images"] == 64
    assert parser.get_parsed_content("methods#xrai").n_steps == cpu["methods"]["xrai"]["n_steps"] == 20
    cascade = parser.get_parsed_content("criteria#cascading_randomization")
    assert cascade.steps == cpu["cascade_steps"] and cascade.n_images == cpu["sensitivity_images"]
    assert parser.get_parsed_content("criteria#repeatability").n_images == cpu["agreement_images"] == 16
    assert parser.get_parsed_content("criteria#fidelity_to_published").n_images == cpu["fidelity_images"] == 3
    assert parser.get_parsed_content("study#params#profile") == "cpu"  # logged as an MLflow param
    published = _parser("evaluate.json", profile="published")
    assert published.get_parsed_content("criteria#cascading_randomization").steps == {
        "densenet121": None, "inception_v3": None}  # every block
    assert published.get_parsed_content("methods#kernelshap").n_samples == 200
    psc = parser.get_parsed_content("criteria#psc")  # the cpu profile's attack cut, and the published attack
    assert (psc.iterations, psc.lr, psc.n_images, psc.attacked) == (10, 0.003, 16, ("grad",))
    assert parser.get_parsed_content("criteria#faithfulness").n_images == cpu["faithfulness_images"] == 64
    assert parser.get_parsed_content("study#replicate") is False and published.get_parsed_content("study#replicate")
    published_psc = published.get_parsed_content("criteria#psc")
    assert (published_psc.iterations, published_psc.lr, published_psc.attacked) == (1000, 2e-4, None)
    with pytest.raises(Exception) as error:
        _parser("evaluate.json", profile="gpu").get_parsed_content("saliency#n_images")
    assert "unknown profile 'gpu'" in "".join(str(e) for e in _chain(error.value))


def test_dataset_script_writes_a_folder_with_size_and_seed(tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/make_synthetic_dataset.py", "--out", str(tmp_path / "d"), "--n-images", "6",
         "--seed", "5", "--size", "64", "--variant", "msk"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    knobs = pd.read_csv(tmp_path / "d" / "knobs.csv")
    assert len(knobs) == 6 and set(knobs.variant) == {"msk"} and knobs.patientId[0].startswith("msk-5-")


def test_criteria_are_config_entries_with_their_own_settings():
    from bundle.criteria import (
        CRITERIA,
        CascadingRandomization,
        Faithfulness,
        FidelityToPublished,
        LesionReliance,
        Localization,
        PredictionSaliencyCorrelation,
        Reproducibility,
    )

    parser = _parser("evaluate.json")
    parser["criteria#localization#binarize"] = "topk:10"
    criteria = parser.get_parsed_content("criteria")
    assert list(criteria) == ["localization", "fidelity_to_published", "lesion_reliance", "cascading_randomization",
                              "label_randomization", "repeatability", "reproducibility", "faithfulness",
                              "psc"] == list(CRITERIA)
    assert isinstance(criteria["localization"], Localization) and criteria["localization"].binarize == "topk:10"
    assert isinstance(criteria["fidelity_to_published"], FidelityToPublished)
    assert criteria["fidelity_to_published"].n_images == 3  # the cpu profile's
    assert isinstance(criteria["lesion_reliance"], LesionReliance)
    assert isinstance(criteria["cascading_randomization"], CascadingRandomization)
    assert criteria["cascading_randomization"].architectures == ("densenet121", "inception_v3")
    assert isinstance(criteria["reproducibility"], Reproducibility)
    assert criteria["repeatability"].other == {"architecture": "densenet121", "seed": 1}
    assert criteria["repeatability"].binarize == criteria["reproducibility"].binarize == "area"  # equal-area masks
    assert isinstance(criteria["faithfulness"], Faithfulness) and criteria["faithfulness"].baseline == "random"
    psc = criteria["psc"]
    assert isinstance(psc, PredictionSaliencyCorrelation) and psc.epsilon == 0.03 and psc.transfer_from == "grad"
    assert set(parser["baselines"]) == {"random", "edge", "prior"} and set(parser["references"]) == {"oracle"}


@pytest.mark.parametrize("key, value, message", [
    ("criteria#localization#name", "saliency_dice", "unknown criterion 'saliency_dice' (a name under criteria); "
                                                    "available: "),
    ("methods#ig#name", "lime", "unknown saliency method 'lime' (a name under methods); available: "),
    ("network_name", "resnet9", "unknown network 'resnet9' (network_name, or an architecture of a criterion)"),
    ("criteria#localization#binarize", "median", "median"),
    ("criteria#localization#verdict_metric", "ssim", "verdict_metric 'ssim' must be one of the recorded metrics"),
])
def test_bad_names_in_the_config_say_what_is_available_on_the_last_line(key, value, message):
    """Under MONAI's `Failed to instantiate ...` wrappers, the line a user reads last is the bundle's message."""
    parser = _parser("evaluate.json")
    parser[key] = value
    with pytest.raises(Exception) as error:
        parser.get_parsed_content("network_def" if key == "network_name" else "#".join(key.split("#")[:2]))
    assert "Failed to instantiate" in str(error.value)
    assert last_line(error.value).startswith("error: ") and message in last_line(error.value)


def _chain(error):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def test_the_label_permuted_training_reads_permuted_labels(small_dataset):
    """`permute_labels` reaches the training and validation data, not only the checkpoint name."""
    def labels(part, permute):
        parser = _parser("train.json", dataset_dir=str(small_dataset), permute_labels=permute)
        items = parser.get_parsed_content(f"{part}#datalist")
        return [i["image"] for i in items], [i["label"] for i in items]

    for part in ("train", "validate"):
        (images, true), (same_images, permuted) = labels(part, False), labels(part, True)
        assert images == same_images and sorted(true) == sorted(permuted)
        if len(set(true)) > 1:
            assert permuted != true, part
        # the words a command line gives (`--permute_labels false` arrives as the string "false")
        assert labels(part, "false")[1] == true and labels(part, "true")[1] == permuted


def test_permute_labels_takes_the_command_line_words_and_refuses_others():
    names = {word: _parser("train.json", permute_labels=word).get_parsed_content("ckpt_name")
             for word in ("false", "no", "true", "1")}
    assert names == {"false": "densenet121_seed0.pt", "no": "densenet121_seed0.pt",
                     "true": "densenet121_seed0_permuted_labels.pt", "1": "densenet121_seed0_permuted_labels.pt"}
    assert _parser("train.json", permute_labels="true").get_parsed_content("run_name").startswith(
        "train_densenet121_seed0_permuted_labels_")  # its MLflow run and epoch-trust folder say so
    with pytest.raises(Exception) as caught:
        _parser("train.json", permute_labels="maybe").get_parsed_content("ckpt_name")
    assert any("permute_labels must be true or false" in str(e) for e in _chain(caught.value))


def test_each_id_is_defined_in_one_config_file():
    """No id of the workflow configs is defined in two of them with the same value: train.json takes the ids it
    shares with the study from evaluate.json (MONAI's ``%file#id`` macro), so a change to the intensity pipeline,
    the data or the network reaches training, validation and the study's maps alike; once its macros are resolved,
    train.json is every id it was when it held its own copies."""
    files = {name: json.loads((ROOT / "configs" / f"{name}.json").read_text()) for name in ("train", "evaluate")}
    train, evaluate = files["train"], files["evaluate"]
    repeated = [k for k in set(train) & set(evaluate) if train[k] == evaluate[k] and not str(train[k]).startswith("%")]
    assert not repeated, repeated
    shared = [k for k, v in train.items() if isinstance(v, str) and v.startswith("%configs/evaluate.json#")]
    assert {"image_preprocessing", "network_def", "synthetic", "dataset_dir", "seed"} <= set(shared)
    resolved = ConfigParser()
    resolved.read_config(str(ROOT / "configs" / "train.json"))
    resolved.resolve_macro_and_relative_ids()
    assert all(resolved[k] == evaluate[k] for k in shared)


def test_inference_preprocesses_images_as_training_and_the_study_do():
    """inference.json's preprocessing is the study's transform for transform (its reader list included)."""
    evaluate, inference = (json.loads((ROOT / "configs" / f"{name}.json").read_text())
                           for name in ("evaluate", "inference"))
    transforms = [{**t, "reader": inference["readers"]} if t.get("reader") == "@readers" else t
                  for t in inference["preprocessing"]["transforms"]]
    assert transforms == evaluate["image_preprocessing"]

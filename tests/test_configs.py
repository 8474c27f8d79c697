"""The bundle configs parse, keep the Model Zoo ids, and choose network and seed by config key."""

from __future__ import annotations

import ast
import itertools
import json
import re
import shlex
import sys
from pathlib import Path

import pandas as pd
import pytest
from monai.bundle import ConfigParser

from warm_python import run_python

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
    for handlers in ("train#handlers", "validate#handlers"):  # their batches' loading timed as work (bundle.passes)
        assert parser[handlers][-1] == {"_target_": "bundle.handlers.DataTimer"}, handlers


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
    # every method of a CNN; configs/transformer.json adds the attention maps of its ViT
    assert set(methods) == set(METHODS) - {"rollout", "chefer"} and methods["ig"].n_steps == 5
    assert set(_merged("evaluate.json", "transformer.json").get_parsed_content("methods")) == set(METHODS)
    published = _merged("evaluate.json", "published.json")
    # the published profile runs every method with exactly its published (class default) parameters; Expected
    # Gradients' references are data (the first 64 training images, read when first used), not a count
    from bundle.saliency import TrainingImages

    for name, method in published.get_parsed_content("methods").items():
        data = {"references"} if name == "eg" else set()
        assert {k: v for k, v in vars(method).items() if k not in data} == {
            k: v for k, v in vars(get_method(name)).items() if k not in data}, name
    references = published.get_parsed_content("methods#eg").references
    assert isinstance(references, TrainingImages) and references._images is None and references.n_images == 64
    assert published.get_parsed_content("saliency#n_images") == 64


def _merged(*names: str) -> ConfigParser:
    parser = ConfigParser(ConfigParser.load_config_files([str(ROOT / "configs" / n) for n in names]))
    parser["bundle_root"] = str(ROOT)
    return parser


def test_the_published_profile_is_an_ordinary_override_file(caplog):
    """evaluate.json holds the cpu profile's cuts as plain values and configs/published.json restores the published
    settings as ordinary ``id#key`` overrides, each changing a value (no Python-loaded profile, no indexing)."""
    from bundle.profiles import profile_label

    evaluate = ConfigParser()
    evaluate.read_config(str(ROOT / "configs/evaluate.json"))
    overrides = json.loads((ROOT / "configs/published.json").read_text())
    assert all(evaluate[k] != v and not str(v).startswith("$") for k, v in overrides.items())
    assert "profile_settings" not in json.dumps(evaluate.get())
    parser, published = _parser("evaluate.json"), _merged("evaluate.json", "published.json")
    assert parser.get_parsed_content("saliency#n_images") == published.get_parsed_content("saliency#n_images") == 64
    assert parser.get_parsed_content("methods#xrai").n_steps == 20
    cascade = parser.get_parsed_content("criteria#cascading_randomization")
    assert cascade.steps == {"densenet121": ["class_layers", "denseblock3", "conv0"],
                             "inception_v3": ["fc", "Mixed_6e", "Conv2d_1a_3x3"]} and cascade.n_images == 8
    assert parser.get_parsed_content("criteria#repeatability").n_images == 16
    assert parser.get_parsed_content("criteria#fidelity_to_published").n_images == 3
    assert parser.get_parsed_content("study#params#profile") == "cpu"  # logged as an MLflow param
    assert published.get_parsed_content("study#params#profile") == "published"
    assert published.get_parsed_content("criteria#cascading_randomization").steps == {
        "densenet121": None, "inception_v3": None}  # every block
    assert published.get_parsed_content("methods#kernelshap").n_samples == 200
    psc = parser.get_parsed_content("criteria#psc")  # the cpu profile's attack cut, and the published attack
    assert (psc.iterations, psc.lr, psc.n_images, psc.attacked) == (10, 0.003, 16, ("grad",))
    assert parser.get_parsed_content("criteria#faithfulness").n_images == 64
    assert parser.get_parsed_content("study#replicate") is False and published.get_parsed_content("study#replicate")
    published_psc = published.get_parsed_content("criteria#psc")
    assert (published_psc.iterations, published_psc.lr, published_psc.attacked) == (1000, 2e-4, None)
    with caplog.at_level("WARNING", logger="bundle.profiles"):
        assert profile_label("cpu", cuda_available=False) == "cpu" and not caplog.records
        assert profile_label("cpu", cuda_available=True) == "cpu"
    assert "add configs/published.json" in caplog.text
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        profile_label("gpu")


def test_dataset_script_writes_a_folder_with_size_and_seed(tmp_path):
    result = run_python(
        [sys.executable, "scripts/make_synthetic_dataset.py", "--out", str(tmp_path / "d"), "--n-images", "6",
         "--seed", "5", "--size", "64", "--variant", "msk"],
        cwd=ROOT, timeout=300,
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
                              "psc"] == list(CRITERIA)[:-1]
    # configs/transformer.json adds the last: the ViT's maps against the CNN's best, on the same images
    transformer = _merged("evaluate.json", "transformer.json").get_parsed_content("criteria")
    assert list(transformer) == list(CRITERIA) and transformer["architecture_localization"].other == {
        "architecture": "densenet121", "seed": 0}
    assert transformer["reproducibility"].other["architecture"] == "densenet121"
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
    ("methods#ig#name", "deconvnet", "unknown saliency method 'deconvnet' (a name under methods); available: "),
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


# two override files that set one knob to the same value for different reasons: the published occlusion stride and
# KernelSHAP cell, and the volume study's (32-voxel volumes)
COINCIDENT = {("published", "volume", "methods#kernelshap#cell"), ("published", "volume", "methods#occlusion#stride")}


def test_no_id_is_defined_twice():
    """No id is defined in two config files with the same value (a macro taking it from the other aside)."""
    files = {f.stem: json.loads(f.read_text()) for f in (ROOT / "configs").glob("*.json") if f.stem != "metadata"}
    assert {"evaluate", "train", "inference", "published", "quick", "multi_gpu_train"} <= set(files)
    repeated = [(a, b, k) for a, b in itertools.combinations(sorted(files), 2) for k in set(files[a]) & set(files[b])
                if files[a][k] == files[b][k] and k != "imports" and not str(files[a][k]).startswith("%")]
    assert set(repeated) == COINCIDENT, repeated


@pytest.mark.parametrize(("workflow", "base"), [("train", "evaluate"), ("inference", "evaluate"),
                                                ("multi_gpu_train", "multi_gpu_evaluate")])
def test_shared_ids_come_from_one_file(workflow, base, monkeypatch):
    """train.json and inference.json take the ids they share with the study from evaluate.json (MONAI's ``%file#id``
    macro), so a change to the intensity pipeline, the data or the network reaches training, validation, inference
    and the study's maps alike; once its macros are resolved, each is every id it was when it held its own copies."""
    monkeypatch.chdir(ROOT)  # the macros name configs/<base>.json from the bundle folder, where commands run
    prefix = f"%configs/{base}.json#"
    mine = json.loads((ROOT / "configs" / f"{workflow}.json").read_text())
    shared = {k: v[len(prefix):] for k, v in mine.items() if isinstance(v, str) and v.startswith(prefix)}
    assert {"image_preprocessing", "network_def", "image_size", "seed"} <= set(shared) or base != "evaluate"
    assert {"initialize", "device"} <= set(shared) or base == "evaluate"
    merged_after = ["configs/train.json"] if workflow == "multi_gpu_train" else []  # an override file
    resolved = ConfigParser(ConfigParser.load_config_files([*merged_after, f"configs/{workflow}.json"]))
    resolved.resolve_macro_and_relative_ids()
    definitions = ConfigParser()
    definitions.read_config(str(ROOT / "configs" / f"{base}.json"))
    assert all(resolved[k] == definitions[v] for k, v in shared.items())


def test_inference_preprocesses_images_as_training_and_the_study_do(monkeypatch):
    """inference.json's preprocessing is the study's transform for transform, read by the study's readers (the map
    saver reads no image again)."""
    monkeypatch.chdir(ROOT)
    parser = _parser("inference.json")
    evaluate = ConfigParser()
    evaluate.read_config(str(ROOT / "configs/evaluate.json"))
    assert parser["preprocessing"]["transforms"] == "@image_preprocessing"
    parser.resolve_macro_and_relative_ids()
    assert parser["image_preprocessing"] == evaluate["image_preprocessing"]
    readers = parser.get_parsed_content("preprocessing").transforms[0]._loader.readers
    assert {"RadiographReader", "RadiographPNGReader"} <= {type(r).__name__ for r in readers}


def _documented_commands() -> list[tuple[str, str]]:
    """Every ``monai.bundle run`` command in a code block of the README or docs/README.md (continuations joined),
    the README's ``$NET`` and the placeholders filled in."""
    commands = []
    for doc in ("README.md", "docs/README.md"):
        blocks = re.findall(r"```bash\n(.*?)```", (ROOT / doc).read_text(), flags=re.S)
        text = "\n".join(blocks).replace("\\\n", " ")
        net = re.search(r"NET='([^']*)'", text)
        for line in text.splitlines():
            match = re.search(r"-m monai\.bundle run\b(.*)$", line)
            if match:
                command = match.group(1).replace('"$NET"', shlex.quote(net.group(1)) if net else "")
                commands.append((doc, command.replace("<folder>", "/data/folder")))
    return commands


@pytest.mark.parametrize(("doc", "command"), _documented_commands())
def test_every_documented_command_builds_its_config_tree(doc, command, monkeypatch):
    """Each ``monai.bundle run`` command of the README and docs/README.md merges its files and overrides into a tree
    where every reference of ``initialize``, its run id and ``finalize`` exists (MONAI's own resolution; nothing
    instantiated or run)."""
    monkeypatch.chdir(ROOT)
    args = shlex.split(command)
    run_id = args.pop(0) if args and not args[0].startswith("--") else "run"
    options = {k.removeprefix("--"): v for k, v in zip(args[0::2], args[1::2])}
    files = options.pop("config_file")
    parser = ConfigParser(ConfigParser.load_config_files(ast.literal_eval(files) if files.startswith("[") else files))
    parser.update(options)
    for step in ("initialize", run_id, "finalize"):
        assert parser.get_parsed_content(step, instantiate=False, eval_expr=False) is not None, (doc, command, step)


def test_the_documented_commands_are_found():
    found = [c for _, c in _documented_commands()]
    assert len(found) >= 12 and any("published.json" in c for c in found) and any("resnet18" in c for c in found)

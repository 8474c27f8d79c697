"""Cascading and independent weight randomisation: in place, exactly the right blocks, restorable, seeded."""

from __future__ import annotations

import pytest
import torch

from bundle.networks import build_network, get_architecture
from bundle.trust.randomization import WeightRandomization


def _changed_parameters(model, trained) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, trained[k])}


def _block_of(key: str, blocks) -> str | None:
    return next((name for name, paths in blocks for p in paths if key == p or key.startswith(p + ".")), None)


@pytest.fixture(scope="module")
def densenet():
    torch.manual_seed(0)
    model = build_network("densenet121").eval()
    with torch.no_grad():  # trained-like running statistics, so that resetting them is visible
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return model


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_each_step_changes_exactly_its_blocks_and_the_trained_weights_come_back(densenet, mode):
    blocks = get_architecture("densenet121").randomisation_blocks
    trained = {k: v.clone() for k, v in densenet.state_dict().items()}
    randomization = WeightRandomization(densenet, blocks, mode, seed=0)
    names = [n for n, _ in blocks]
    assert randomization.steps == names
    steps = randomization.map_steps(lambda key, model: (model(), _changed_parameters(model(), trained)))
    for index, (step, (model, keys)) in enumerate(steps):
        assert model is densenet and step == f"{mode}:{names[index]}"
        changed = {_block_of(k, blocks) for k in keys if "num_batches" not in k}
        expected = set(names[: index + 1]) if mode == "cascading" else {names[index]}
        assert changed == expected, (step, changed)
    assert _changed_parameters(densenet, trained) == set()


def test_batchnorm_statistics_are_reset_and_the_global_rng_is_untouched(densenet):
    blocks = get_architecture("densenet121").randomisation_blocks
    randomization = WeightRandomization(densenet, blocks, "cascading", seed=0, steps=["denseblock4"])
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with randomization.randomized("denseblock4") as model:
        norm5 = model.features.norm5
        assert torch.equal(norm5.running_mean, torch.zeros_like(norm5.running_mean))
        assert torch.equal(norm5.running_var, torch.ones_like(norm5.running_var))
    assert torch.equal(torch.rand(3), expected_next)


def test_same_seed_same_randomised_model_and_cumulative_blocks_keep_their_draw(densenet):
    blocks = get_architecture("densenet121").randomisation_blocks
    draws = []
    for seed in (0, 0, 1):
        with WeightRandomization(densenet, blocks, seed=seed).randomized("denseblock4") as model:
            draws.append({k: v.clone() for k, v in model.state_dict().items()})
    key = "class_layers.out.weight"
    assert torch.equal(draws[0][key], draws[1][key]) and not torch.equal(draws[0][key], draws[2][key])
    # class_layers gets the same random weights at step 1 and at step 2 of the cascade
    with WeightRandomization(densenet, blocks, seed=0).randomized("class_layers") as model:
        assert torch.equal(model.state_dict()[key], draws[0][key])


def test_inception_cascade_and_unknown_steps():
    model = build_network("inception_v3").eval()
    blocks = get_architecture("inception_v3").randomisation_blocks
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    with WeightRandomization(model, blocks, steps=["Mixed_7c", "Conv2d_1a_3x3"]).randomized("Mixed_7c") as m:
        assert {_block_of(k, blocks) for k in _changed_parameters(m, trained) if "num_batches" not in k} == {
            "fc", "Mixed_7c"}
    with pytest.raises(ValueError, match="unknown randomisation step"):
        WeightRandomization(model, blocks, steps=["Mixed_9z"])


def test_a_subset_of_steps_reaches_the_same_fully_randomised_model(densenet):
    """The CPU profile computes fewer cascade steps; its last step must be the published cascade's last step."""
    blocks = get_architecture("densenet121").randomisation_blocks
    subset = WeightRandomization(densenet, blocks, steps=["class_layers", "denseblock2", "conv0"])
    full = WeightRandomization(densenet, blocks)
    with subset.randomized("conv0") as model:
        cut = {k: v.clone() for k, v in model.state_dict().items()}
    with full.randomized("conv0") as model:
        for key, value in model.state_dict().items():
            assert torch.equal(value, cut[key]), key


def test_weights_are_restored_before_results_are_handed_out_even_when_computing_fails(densenet):
    blocks = get_architecture("densenet121").randomisation_blocks
    trained = {k: v.clone() for k, v in densenet.state_dict().items()}
    randomization = WeightRandomization(densenet, blocks, steps=["class_layers", "conv0"])
    seen = []
    for step, changed in randomization.map_steps(lambda key, model: _changed_parameters(model(), trained)):
        assert _changed_parameters(densenet, trained) == set()  # trained weights back before the result arrives
        seen.append((step, bool(changed)))
    assert seen == [("cascading:class_layers", True), ("cascading:conv0", True)]
    assert randomization.cache_step("conv0") == "cascading:conv0:seed0:cpu"

    def fail(key, model):
        model()
        raise RuntimeError("a method failed")

    with pytest.raises(RuntimeError):
        next(randomization.map_steps(fail))
    assert _changed_parameters(densenet, trained) == set()


def test_a_step_whose_model_is_not_asked_for_draws_and_restores_nothing(densenet, monkeypatch):
    """A rerun with every map of a step cached asks for no randomised model: no block is re-initialised and no
    state is loaded back (16 s of a 54 s quick rerun before)."""
    blocks = get_architecture("densenet121").randomisation_blocks
    randomization = WeightRandomization(densenet, blocks, steps=["class_layers", "conv0"])
    loads, resets = [], []
    monkeypatch.setattr(densenet, "load_state_dict", lambda *a, **k: loads.append(1))
    monkeypatch.setattr(WeightRandomization, "_reset", lambda self, block: resets.append(block))
    assert [step for step, _ in randomization.map_steps(lambda key, model: key)] == [
        "cascading:class_layers", "cascading:conv0"]
    assert loads == [] and resets == []
    list(randomization.map_steps(lambda key, model: (model(), model())))  # asked twice: drawn and restored once
    assert resets == ["class_layers", "conv0"] and len(loads) == 2


def test_a_block_that_cannot_be_reinitialised_is_an_error_not_the_trained_maps():
    """A block whose weights no module can reset (a bare parameter; a TorchScript module) would hand the trained
    model's maps out as the randomised model's: refused, naming the block."""

    class Scale(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.gain

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), Scale())
    randomised = WeightRandomization(model, [("gain", ("1",)), ("linear", ("0",))])
    with pytest.raises(ValueError, match=r"^1: no module of this block can re-initialise its weights"):
        with randomised.randomized("gain"):
            pass
    assert torch.equal(model[1].gain, torch.ones(1))
    with pytest.raises(ValueError, match="a TorchScript module cannot be re-initialised block by block"):
        WeightRandomization(torch.jit.script(torch.nn.Sequential(torch.nn.Linear(2, 2))), [("0", ("0",))])

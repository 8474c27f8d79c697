"""PSC: divergences against SciPy, attacks inside the epsilon ball, softplus only during the attack, the
differentiable maps equal to the methods, and the criterion's records, PSC and verdicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import jensenshannon
from torch import nn

from bundle.networks import build_network
from bundle.saliency import get_method
from bundle.saliency.base import inference_state
from bundle.saliency.differentiable import DIFFERENTIABLE, Activation, activations, differentiable_map
from bundle.trust.psc import (
    Attack, attacked_images, class_probability, jensen_shannon, map_distribution, map_divergence,
    prediction_divergence, psc, target_region_map,
)
from nets import relu_net  # tests/nets.py


@pytest.fixture
def images():
    return torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(7))


def test_a_map_compared_with_itself_diverges_by_exactly_zero():
    """Entries below the clamp (a blurred mask's tails) must not leave a residue PSC could correlate."""
    p = torch.tensor([[0.5, 0.5 - 3e-9, 1e-9, 2e-9], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    assert jensen_shannon(p, p.clone()).tolist() == [0.0, 0.0]


def test_jensen_shannon_equals_scipy_squared_distance_in_nats():
    rng = np.random.default_rng(0)
    p, q = rng.random((5, 30)), rng.random((5, 30))
    p[:, :4] = 0.0  # zeros on one side, and on both (0 log 0 = 0)
    q[:, 2:6] = 0.0
    p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    ours = jensen_shannon(torch.as_tensor(p), torch.as_tensor(q)).numpy()
    np.testing.assert_allclose(ours, [jensenshannon(a, b) ** 2 for a, b in zip(p, q)], rtol=1e-10, atol=1e-14)
    a, b = torch.tensor([0.9, 0.2, 0.5]), torch.tensor([0.1, 0.2, 0.6])
    expected = [jensenshannon([x, 1 - x], [y, 1 - y]) ** 2 for x, y in zip(a.tolist(), b.tolist())]
    np.testing.assert_allclose(prediction_divergence(a.double(), b.double()).numpy(), expected, atol=1e-12)
    assert jensen_shannon(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])).item() == pytest.approx(np.log(2))


def test_map_divergence_folds_signed_maps_and_is_nan_without_mass():
    a = torch.tensor([[[1.0, -1.0], [0.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]])
    b = torch.tensor([[[-1.0, 1.0], [0.0, 2.0]], [[1.0, 0.0], [0.0, 0.0]]])
    values = map_divergence(a, b, signed=True)
    assert values[0].item() == pytest.approx(0.0, abs=1e-12) and np.isnan(values[1].item())  # |a| == |b|; no mass
    unit, degenerate = map_distribution(a, signed=True)
    np.testing.assert_allclose(unit[0].numpy(), [0.25, 0.25, 0.0, 0.5])
    assert degenerate.tolist() == [False, True]
    ranking = map_divergence(a[:1], b[:1], signed=False)  # a ranking map's negative values carry no mass
    p, q = np.array([1.0, 0, 0, 2]) / 3, np.array([0, 1.0, 0, 2]) / 3
    assert ranking.item() == pytest.approx(jensenshannon(p, q) ** 2)


def test_psc_is_pearson_with_nan_map_divergences_replaced_by_the_mean():
    rng = np.random.default_rng(1)
    pred, maps = rng.random(12), rng.random(12)
    maps[[2, 7]] = np.nan
    result = psc(pred, maps, n_resamples=300, seed=4)
    filled = maps.copy()
    filled[[2, 7]] = np.nanmean(maps)
    assert result.psc == pytest.approx(stats.pearsonr(pred, filled).statistic, abs=1e-12)
    assert (result.n, result.n_replaced) == (12, 2)
    draws = np.random.default_rng(4).integers(0, 12, size=(300, 12))  # the same resamples, one scipy call each
    resampled = [stats.pearsonr(pred[d], filled[d]).statistic for d in draws]
    assert (result.ci_low, result.ci_high) == pytest.approx(tuple(np.percentile(resampled, [2.5, 97.5])), abs=1e-10)
    assert np.isnan(psc(pred, np.full(12, 0.3)).psc)  # a map that never changes: no correlation to speak of
    assert np.isnan(psc(pred[:2], maps[:2]).psc) and psc(pred, np.full(12, np.nan)).n == 0
    order = rng.permutation(12)  # permuting the images permutes nothing in PSC
    assert psc(pred[order], filled[order], n_resamples=10).psc == pytest.approx(result.psc, abs=1e-12)


def test_target_region_is_the_least_salient_square():
    maps = torch.ones(2, 8, 8)
    maps[0, 5:8, 0:3] = 0.0
    maps[1, 0:3, 4:7] = 0.0
    target = target_region_map(maps, 3)
    assert torch.allclose(target.sum(dim=(1, 2)), torch.ones(2, dtype=torch.float64))
    assert target[0, 5:8, 0:3].eq(1 / 9).all() and target[1, 0:3, 4:7].eq(1 / 9).all()


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_differentiable_maps_equal_the_methods(images, name):
    params = {"smoothgrad": {"nt_samples": 3}, "ig": {"n_steps": 5}, "smoothig": {"nt_samples": 2, "n_steps": 3}}
    method, net = get_method(name, **params.get(name, {})), relu_net()
    with inference_state(net):
        ours = differentiable_map(method, net, images, torch.ones(3, dtype=torch.long))
    assert ours.requires_grad  # in the graph: an attack can differentiate it
    torch.testing.assert_close(ours.detach(), method(net, images, 1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_differentiable_maps_equal_the_methods_on_the_study_densenet(name):
    """The attack's maps are the configured methods' maps on the study's own network (MONAI DenseNet121: its
    concatenations, batch norms and CAM layer), not only on a small ReLU network."""
    params = {"smoothgrad": {"nt_samples": 2}, "ig": {"n_steps": 3}, "smoothig": {"nt_samples": 2, "n_steps": 2}}
    method, net = get_method(name, **params.get(name, {})), build_network("densenet121").eval()
    images = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(11))
    with inference_state(net):
        ours = differentiable_map(method, net, images, torch.ones(2, dtype=torch.long))
    torch.testing.assert_close(ours.detach(), method(net, images, 1), rtol=1e-4, atol=1e-6)


def test_softplus_gives_a_gradient_map_a_second_derivative_only_inside_the_attack(images):
    net = relu_net()
    x = images.clone().requires_grad_(True)
    method = get_method("grad")
    with inference_state(net), activations(net) as acts:
        assert len(acts) == 2 and isinstance(net[1], Activation) and isinstance(net[3], Activation)
        relu = torch.autograd.grad(differentiable_map(method, net, x, torch.ones(3, dtype=torch.long)).pow(2).sum(), x)
        for a in acts:
            a.beta = 10.0
        smooth = torch.autograd.grad(differentiable_map(method, net, x, torch.ones(3, dtype=torch.long)).pow(2).sum(), x)
    assert relu[0].abs().max() == 0  # piecewise linear: the gradient map's own gradient vanishes
    assert smooth[0].abs().max() > 0
    assert sum(isinstance(m, nn.ReLU) for m in net) == 2 and not any(isinstance(m, Activation) for m in net.modules())


@pytest.mark.parametrize("kind", ["sensitivity", "robustness"])
def test_attacks_stay_in_the_epsilon_ball_are_deterministic_and_restore_the_model(images, kind):
    net = relu_net()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    images = images.clone()
    images[0, 0, :4] = 0.0  # pixels at the edges of the valid range
    images[1, 0, :4] = 1.0
    attack = Attack(kind, epsilon=0.05, iterations=6, lr=0.02)
    target = torch.ones(3, dtype=torch.long)
    method = get_method("grad")

    def map_fn(m, x, t):
        return differentiable_map(method, m, x, t)

    adversarial = attacked_images(net, images, target, map_fn, attack)
    change = (adversarial.double() - images.double()).abs()
    assert change.max() <= 0.05 + 1e-7 and change.max() > 0.04  # it used the budget, and no more
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    torch.testing.assert_close(attacked_images(net, images, target, map_fn, attack), adversarial, rtol=0, atol=0)
    alone = torch.cat([attacked_images(net, images[i:i + 1], target[:1], map_fn, attack) for i in range(3)])
    torch.testing.assert_close(alone, adversarial, rtol=0, atol=1e-5)  # a batch changes no image's attack (to rounding)
    assert not net.training and all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert all(isinstance(m, nn.ReLU) for m in (net[1], net[3]))


@pytest.mark.parametrize("name", ["grad", "gradcam", "gbp", "ig"])
def test_the_maps_own_pass_gives_the_attacks_prediction_where_its_backward_is_the_gradients(images, name):
    """Sharing the map's pass on x changes no attack beyond rounding; it saves one pass per step for a map that scores
    x itself with the true gradient (not guided backpropagation, not IG's path); the map's passes count as
    second-order ones (bundle.passes) where the gradient they differentiate again is the input's."""
    from bundle.passes import PassCounter, counting

    net, target = relu_net(), torch.ones(3, dtype=torch.long)
    net.architecture = "relu_net"  # counted as a study network
    method = get_method(name, **({"n_steps": 3} if name == "ig" else {"layer": "2"} if name == "gradcam" else {}))
    attack = Attack("sensitivity", epsilon=0.05, iterations=4, lr=0.02)
    counted = {}
    for shared, map_fn in {True: lambda m, x, t: differentiable_map(method, m, x, t),
                           False: lambda m, x, t: differentiable_map(method, m, x * 1, t)}.items():  # x * 1: not x
        with counting(PassCounter()) as counter:
            counted[shared] = attacked_images(net, images, target, map_fn, attack), dict(counter.images)
    torch.testing.assert_close(counted[True][0], counted[False][0], rtol=0, atol=1e-4)  # summed in another order
    # 3 images, 4 steps: the original's prediction (forward) and map (backward: IG's 3 points), then per step the map
    # (second-order; Grad-CAM's gradient goes down to its layer only: one backward more, counted as backward) and the
    # prediction where the map's pass did not give it (backward)
    expected = {"grad": {"forward": 3, "backward": 3, "second_order": 12},
                "gradcam": {"forward": 3, "backward": 3 + 12},
                "gbp": {"forward": 3, "backward": 3 + 12, "second_order": 12},
                "ig": {"forward": 3, "backward": 9 + 12, "second_order": 36}}[name]
    assert counted[True][1] == {("study", "relu_net", kind): n for kind, n in expected.items()}
    unshared = expected["backward"] + (12 if name in ("grad", "gradcam") else 0)  # a prediction pass at every step
    assert counted[False][1][("study", "relu_net", "backward")] == unshared


def test_sensitivity_lowers_the_score_and_robustness_moves_the_map_towards_its_target(images):
    net, target, method = relu_net(), torch.ones(3, dtype=torch.long), get_method("grad")

    def map_fn(m, x, t):
        return differentiable_map(method, m, x, t)

    with torch.no_grad():
        before = class_probability(net(images), target)
    lower = before >= 0.5
    adversarial = attacked_images(net, images, target, map_fn, Attack("sensitivity", 0.1, 20, 0.01, keep_weight=0.0))
    with torch.no_grad():
        after = class_probability(net(adversarial), target)
    assert torch.where(lower, after < before, after > before).all()

    original = map_distribution(method(net, images, 1), True)[0]
    goal = target_region_map(original.reshape(3, 16, 16), 4).reshape(3, -1)
    moved = attacked_images(net, images, target, map_fn, Attack("robustness", 0.1, 20, 0.01, keep_weight=0.0))
    distance = lambda maps: jensen_shannon(map_distribution(maps, True)[0], goal)  # noqa: E731
    # on the real (ReLU) model the smoothed attack transfers on average; one image of this tiny net resists it
    assert distance(method(net, moved, 1)).mean() < distance(method(net, images, 1)).mean() - 0.005


def test_the_attack_differentiates_a_cheaper_map_only_where_surrogate_counts_say_so():
    from bundle.criteria import PredictionSaliencyCorrelation

    class Context:
        kinds = {"ig": "method", "grad": "method", "xrai": "method", "random": "baseline"}
        sources = {"ig": get_method("ig", n_steps=16), "grad": get_method("grad"), "xrai": get_method("xrai"),
                   "random": object()}

    criterion = PredictionSaliencyCorrelation(surrogates={"ig": {"n_steps": 10}})
    attacked, direct = criterion.attacked_source(Context, "ig")
    assert direct and attacked.n_steps == 10 and Context.sources["ig"].n_steps == 16  # the scored map keeps 16
    assert criterion.attacked_source(Context, "grad") == (Context.sources["grad"], True)
    assert [criterion.attacked_source(Context, n)[1] for n in ("xrai", "random")] == [False, False]  # transfer
    assert repr(criterion.attacked_source(Context, "xrai")[0]) == "grad(output='logit')"
    few = PredictionSaliencyCorrelation(surrogates={"ig": {"n_steps": 32}})  # never more than configured
    assert few.attacked_source(Context, "ig")[0] is Context.sources["ig"]


def test_an_attack_on_a_saturated_prediction_stays_finite(images):
    """p rounds to 1 in float32: the divergence's gradient must stay finite (it was -inf, and the image NaN)."""
    net = relu_net()
    net[-1].weight.data *= 1e4  # logits far apart: softmax gives exactly 1 and 0
    target, method = torch.ones(3, dtype=torch.long), get_method("grad")
    with torch.no_grad():
        p = class_probability(net(images), target)
    assert ((p == 1) | (p == 0)).any()
    for kind in ("sensitivity", "robustness"):
        adversarial = attacked_images(net, images, target, lambda m, x, t: differentiable_map(method, m, x, t),
                                      Attack(kind, 0.05, 3, 0.01))
        assert torch.isfinite(adversarial).all(), kind
    p = torch.tensor([[1.0, 0.0]], requires_grad=True)
    jensen_shannon(p, torch.tensor([[0.5, 0.5]])).sum().backward()
    assert torch.isfinite(p.grad).all()

"""Saliency methods: the interface, and values against autograd, captum and hand-computed Grad-CAM."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG
from torch import nn

from bundle.networks import build_network
from bundle.saliency import METHODS, SaliencyInferer, get_method


class TinyNet(nn.Module):
    """conv -> relu -> conv (the CAM layer) -> relu -> global average pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 3, 3, stride=2, padding=1)
        self.fc = nn.Linear(3, 2)

    def features(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))))

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


@pytest.fixture
def images():
    return torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(5))


def test_grad_equals_autograd(images):
    net = TinyNet()
    x = images.clone().requires_grad_(True)
    net(x)[:, 1].sum().backward()
    maps = get_method("grad")(net, images, 1)
    assert maps.shape == (3, 12, 12)
    torch.testing.assert_close(maps, x.grad[:, 0])


def test_ig_equals_captum_and_is_complete(images):
    net = TinyNet().eval()
    ours = get_method("ig", n_steps=64)(net, images, 1)
    reference = CaptumIG(net).attribute(images, baselines=0.0, target=1, n_steps=64)[:, 0]
    torch.testing.assert_close(ours, reference)
    with torch.no_grad():
        gap = net(images)[:, 1] - net(torch.zeros_like(images))[:, 1]
    torch.testing.assert_close(ours.sum(dim=(1, 2)), gap, atol=2e-3, rtol=2e-2)


def test_gradcam_equals_hand_computation(images):
    net = TinyNet()
    ours = get_method("gradcam", layer="conv2")(net, images, 1)
    activations = torch.relu(net.conv2(torch.relu(net.conv1(images))))
    # d logit_1 / d A_k(i,j) through relu(A) and the mean pool
    pre = net.conv2(torch.relu(net.conv1(images)))
    grad = (pre > 0).float() * net.fc.weight[1][None, :, None, None] / (pre.shape[2] * pre.shape[3])
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * pre).sum(dim=1, keepdim=True))
    expected = nn.functional.interpolate(cam, size=(12, 12), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(ours, expected.detach(), atol=1e-6, rtol=1e-5)
    assert activations.shape[2:] == (6, 6)


BATCH_PARAMS = {"ig": {"n_steps": 4}, "smoothgrad": {"nt_samples": 3}, "smoothig": {"nt_samples": 2, "n_steps": 2},
                "kernelshap": {"n_samples": 24, "cell": 8}, "lime": {"n_samples": 24},
                "eg": {"n_samples": 4, "references": torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(2))},
                "xrai": {"n_steps": 2},
                "occlusion": {"window": 8, "stride": 8}, "scorecam": {"max_channels": 8}}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_batched_equals_per_image_and_model_state_is_restored(name, images):
    """A map depends only on its image (random methods seed per image), never on the rest of the batch."""
    method = get_method(name, **BATCH_PARAMS.get(name, {}))
    net = build_network("densenet121")
    if not method.applies_to(net):  # the attention maps: a ViT at the same input size
        net = build_network("vit", image_size=32)
    net.train()
    frozen = next(net.parameters())
    frozen.requires_grad_(False)
    batch = method(net, torch.nn.functional.interpolate(images, size=32), 1)
    single = torch.cat([method(net, torch.nn.functional.interpolate(images[i : i + 1], size=32), 1) for i in range(3)])
    # oneDNN picks kernels by batch size, and a rounding difference can flip a ReLU gate of this untrained
    # network (seen: 0.4% of the map's range); a map that depended on its batch (a shared noise stream, a
    # batch-wide normalisation) would differ on the scale of the map itself
    scale = batch.abs().amax(dim=tuple(range(1, batch.ndim)), keepdim=True).clamp_min(1e-12)
    assert ((batch - single).abs() / scale).max() < 0.01
    assert net.training, "train/eval mode must be restored"
    assert not frozen.requires_grad and all(p.requires_grad for p in list(net.parameters())[1:])
    assert all(p.grad is None for p in net.parameters()), "no weight gradients may be accumulated"


def test_per_image_targets_and_inferer(images):
    net = TinyNet()
    method = get_method("grad")
    mixed = method(net, images, torch.tensor([0, 1, 0]))
    torch.testing.assert_close(mixed[1], method(net, images[1:2], 1)[0])
    torch.testing.assert_close(mixed[0], method(net, images[:1], 0)[0])
    with torch.no_grad():  # MONAI evaluators call the inferer under no_grad
        maps = SaliencyInferer(method, target=1)(images, net)
    torch.testing.assert_close(maps, method(net, images, 1))


def test_unknown_method_and_bad_target_give_clear_errors(images):
    with pytest.raises(ValueError, match="unknown saliency method 'deconvnet'"):
        get_method("deconvnet")
    with pytest.raises(ValueError, match="target has 2 entries for a batch of 3"):
        get_method("grad")(TinyNet(), images, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="no layer 'nope'"):
        get_method("gradcam", layer="nope")(TinyNet(), images, 1)


def test_repr_lists_parameters():
    assert repr(get_method("ig", n_steps=8)) == (
        "ig(baseline=0.0, integration='gausslegendre', internal_batch_size=None, n_steps=8, output='logit')"
    )


class CountingGradient(type(get_method("grad"))):
    """The gradient method, counting how many images it was asked to explain."""

    def __init__(self) -> None:
        super().__init__()
        self.images_seen = 0

    def attribute(self, model, images, target):
        self.images_seen += images.shape[0]
        return super().attribute(model, images, target)


def test_map_cache_reuses_maps_across_restarts(tmp_path, images):
    from bundle.saliency.cache import MapCache

    net = TinyNet()
    method = CountingGradient()
    cache = MapCache(tmp_path)
    description = MapCache.describe("tiny_seed0", "digest-a", method, 1)
    first = SaliencyInferer(method, 1, cache, description)(images, net, image_ids=["a", "b", "c"])
    assert method.images_seen == 3
    # a new cache object on the same folder (a restarted study) computes only the unseen image
    again = SaliencyInferer(method, 1, MapCache(tmp_path), description)(images[[2, 1, 0]], net,
                                                                        image_ids=["c", "x", "a"])
    assert method.images_seen == 4
    torch.testing.assert_close(again[0], first[2])
    torch.testing.assert_close(again[2], first[0])
    torch.testing.assert_close(again[1], method(net, images[1:2], 1)[0])


def test_cache_keys_are_values_and_computing_one_writes_nothing(tmp_path):
    """ARCHITECTURE.md: a randomised or attacked model is a derived step of a trained one; its maps must never
    be stored under the trained model's key, and the key must not depend on what is loaded."""
    from bundle.saliency.cache import MapCache

    method = get_method("grad")
    trained = MapCache.describe("densenet121_seed0", "digest-a", method, 1)
    keys = {MapCache.key(d) for d in (
        trained,
        MapCache.describe("densenet121_seed0", "digest-a", method, 1, step="cascade:denseblock4"),
        MapCache.describe("densenet121_seed1", "digest-a", method, 1),
        MapCache.describe("densenet121_seed0", "digest-b", method, 1),
        MapCache.describe("densenet121_seed0", "digest-a", method, 0),
        MapCache.describe("densenet121_seed0", "digest-a", get_method("ig", n_steps=4), 1),
        MapCache.describe("densenet121_seed0", "digest-a", method, 1, {"image_size": 224}),
    )}
    assert len(keys) == 7
    assert MapCache.key(trained) == MapCache.key(MapCache.describe("densenet121_seed0", "digest-a", method, 1))
    MapCache(tmp_path).key(trained)
    assert not any(tmp_path.iterdir()), "computing a key has no side effect"


def test_passes_are_sized_by_the_voxel_budget(images):
    from bundle.saliency.base import PASS_VOXELS, budget_inputs, inputs_per_pass

    assert budget_inputs(torch.zeros(16, 1, 299, 299)) == 5 and budget_inputs(torch.zeros(1, 1, 299, 299), 3) == 3
    assert inputs_per_pass(torch.zeros(2, 1, 128, 128), None) == PASS_VOXELS // 128**2 == 32
    assert inputs_per_pass(torch.zeros(2, 1, 224, 224), None) == 10
    assert inputs_per_pass(torch.zeros(16, 1, 299, 299), None) == 16  # never fewer than the batch
    assert inputs_per_pass(torch.zeros(2, 1, 224, 224), 7) == 7
    # how the steps are split into passes does not change the attributions
    net = TinyNet()
    auto = get_method("ig", n_steps=40)(net, images, 1)
    torch.testing.assert_close(auto, get_method("ig", n_steps=40, internal_batch_size=4)(net, images, 1))
    torch.testing.assert_close(auto, get_method("ig", n_steps=40, internal_batch_size=10_000)(net, images, 1))


@pytest.mark.parametrize("name, pass_size, params", [
    ("scorecam", "batch_size", {"layer": "conv2"}),
    ("occlusion", "perturbations_per_eval", {"window": 4, "stride": 4}),
    ("kernelshap", "perturbations_per_eval", {"n_samples": 16, "cell": 8}),
])
def test_forward_pass_size_does_not_change_the_maps(name, pass_size, params, images):
    net = TinyNet()
    budget = get_method(name, **params)(net, images, 1)
    torch.testing.assert_close(budget, get_method(name, **params, **{pass_size: 3})(net, images, 1))

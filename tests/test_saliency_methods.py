"""The full method set: values against autograd, captum, pytorch-grad-cam and hand computations; 3-D; XRAI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAMPlusPlus as PGCGradCAMPlusPlus
from pytorch_grad_cam import ScoreCAM as PGCScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from skimage.morphology import dilation, disk
from torch import nn

from bundle.saliency import METHODS, get_method
from bundle.saliency.xrai import dilated_segment_masks, xrai_regions
from nets import relu_net  # tests/nets.py


class Linear(nn.Module):
    """score_c(x) = sum(w_c * x): every attribution of a linear model has a closed form."""

    def __init__(self, shape) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.w = nn.Parameter(torch.randn(2, *shape))

    def forward(self, x):
        return torch.einsum("bchw,kchw->bk", x, self.w)


@pytest.fixture
def images():
    return torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(7))


def test_every_published_name_is_registered():
    assert set(METHODS) == {"grad", "smoothgrad", "ig", "smoothig", "gradcam", "gradcampp", "scorecam", "gbp",
                            "ggcam", "xrai", "occlusion", "kernelshap", "lime", "eg", "lrp", "rollout",
                            "chefer"}


def test_smoothgrad_without_noise_equals_grad_and_is_seeded(images):
    net = relu_net()
    torch.testing.assert_close(get_method("smoothgrad", noise_level=0.0, nt_samples=4)(net, images, 1),
                               get_method("grad")(net, images, 1))
    a = get_method("smoothgrad", nt_samples=8, seed=3)(net, images, 1)
    torch.testing.assert_close(a, get_method("smoothgrad", nt_samples=8, seed=3)(net, images, 1))
    assert not torch.allclose(a, get_method("smoothgrad", nt_samples=8, seed=4)(net, images, 1))


@pytest.mark.parametrize("name", ["smoothgrad", "smoothig"])
def test_noisy_copies_per_pass_do_not_change_the_map(name):
    """Each copy's noise is its own draw: one copy per pass, three, or the voxel budget's 32 give the same map, on
    images whose voxels (5 x 5) are no multiple of torch's 16-number normal sampling blocks."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(100, 2)).eval()
    images = torch.rand(2, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    maps = [get_method(name, nt_samples=7, seed=2, nt_samples_batch_size=k)(net, images, 1) for k in (1, 3, None)]
    torch.testing.assert_close(maps[0], maps[1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(maps[0], maps[2], atol=1e-6, rtol=1e-5)
    assert get_method(name).noisy_copies(torch.rand(16, 1, 128, 128)).__next__().shape[0] == 2  # 2**19 / 16 / 128²


def test_smoothig_without_noise_equals_ig(images):
    net = relu_net()
    ours = get_method("smoothig", noise_level=0.0, nt_samples=3, n_steps=16)(net, images, 1)
    torch.testing.assert_close(ours, get_method("ig", n_steps=16)(net, images, 1))


def test_guided_backprop_matches_hand_computation(images):
    torch.manual_seed(2)
    conv, fc = nn.Conv2d(1, 3, 3, padding=1), nn.Linear(3 * 16 * 16, 2)
    net = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), fc).eval()
    pre = conv(images)
    grad_out = fc.weight[1].reshape(1, 3, 16, 16).expand_as(pre)
    guided = torch.relu(grad_out) * (pre > 0)  # only positive gradients through active units
    expected = torch.nn.grad.conv2d_input(images.shape, conv.weight, guided, padding=1)[:, 0]
    torch.testing.assert_close(get_method("gbp")(net, images, 1), expected.detach(), atol=1e-6, rtol=1e-5)


def _minmax(x: np.ndarray) -> np.ndarray:
    x = x - x.min(axis=(1, 2), keepdims=True)
    return x / np.maximum(x.max(axis=(1, 2), keepdims=True), 1e-12)


def cam_net() -> nn.Module:
    """A CNN whose CAM layer (index 3) is at input resolution and feeds a nonlinear head.

    Gradients then vary over pixels and channels, so every term of Grad-CAM++ and
    Score-CAM changes the map, and no upsampling convention stands between us and the reference.
    Large output weights keep the gradients (about 10) far above the 1e-6 that
    pytorch-grad-cam adds to Grad-CAM++'s denominator.
    """
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 2),
    ).eval()
    with torch.no_grad():
        net[8].weight.mul_(1e4)
    return net


@pytest.mark.parametrize("name, reference", [("gradcampp", PGCGradCAMPlusPlus), ("scorecam", PGCScoreCAM)])
def test_cams_equal_pytorch_grad_cam(name, reference, images):
    net = cam_net()
    ours = _minmax(get_method(name, layer="3")(net, images, 1).numpy())  # pytorch-grad-cam returns min-max maps
    with reference(model=net, target_layers=[net[3]]) as cam:
        theirs = cam(input_tensor=images, targets=[ClassifierOutputTarget(1)] * 3)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_every_cam_term_matters_on_the_reference_network(images):
    """Grad-CAM++ without its alpha, or Score-CAM with uniform channel weights, misses the reference by far more
    than the tolerance above, so the value test would catch either."""
    from bundle.saliency.cam import layer_activations_and_gradients

    net = cam_net()
    target = torch.ones(3, dtype=torch.long)
    acts, grads, _ = layer_activations_and_gradients(net, net[3], images, target)
    no_alpha = torch.relu((torch.relu(grads).sum(dim=(2, 3), keepdim=True) * acts).sum(dim=1))
    uniform = torch.relu(acts.mean(dim=1))
    for name, variant in (("gradcampp", no_alpha), ("scorecam", uniform)):
        published = _minmax(get_method(name, layer="3")(net, images, 1).numpy())
        assert np.abs(_minmax(variant.numpy()) - published).max() > 0.05, name


def test_occlusion_of_a_linear_model_is_the_window_contribution(images):
    net = Linear((1, 16, 16))
    maps = get_method("occlusion", window=4, stride=4)(net, images, 1)
    contribution = (net.w[1] * images)[:, 0]
    expected = contribution.reshape(3, 4, 4, 4, 4).sum(dim=(2, 4), keepdim=True).expand(3, 4, 4, 4, 4)
    torch.testing.assert_close(maps, expected.reshape(3, 16, 16).detach(), atol=1e-5, rtol=1e-5)


def test_kernelshap_of_a_linear_model_recovers_cell_contributions(images):
    net = Linear((1, 16, 16))
    maps = get_method("kernelshap", cell=8, n_samples=64)(net, images[:1], 1)
    contribution = (net.w[1] * images[:1])[:, 0].reshape(1, 2, 8, 2, 8).sum(dim=(2, 4))
    torch.testing.assert_close(maps[0, ::8, ::8], contribution[0].detach(), atol=1e-3, rtol=1e-3)


class TinyNet3d(nn.Module):
    """conv -> relu -> conv (the CAM layer, stride 2) -> relu -> global average pool -> linear, on volumes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv3d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv3d(4, 3, 3, stride=2, padding=1)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()  # modules, so guided backpropagation can guide them
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.relu2(self.conv2(self.relu1(self.conv1(x)))).mean(dim=(2, 3, 4)))


def test_three_dimensional_maps_equal_their_references():
    """On volumes: gradient = autograd, IG = captum, SmoothGrad without noise = gradient, Grad-CAM = the hand
    computation upsampled trilinearly, occlusion of a linear model = each window's contribution."""
    from captum.attr import IntegratedGradients

    net = TinyNet3d().eval()
    volume = torch.rand(2, 1, 8, 10, 12, generator=torch.Generator().manual_seed(3))
    x = volume.clone().requires_grad_(True)
    net(x)[:, 1].sum().backward()
    torch.testing.assert_close(get_method("grad")(net, volume, 1), x.grad[:, 0])
    torch.testing.assert_close(get_method("smoothgrad", noise_level=0.0, nt_samples=3)(net, volume, 1), x.grad[:, 0])
    torch.testing.assert_close(get_method("ig", n_steps=32)(net, volume, 1),
                               IntegratedGradients(net).attribute(volume, baselines=0.0, target=1, n_steps=32)[:, 0])
    pre = net.conv2(torch.relu(net.conv1(volume)))
    grad = (pre > 0).float() * net.fc.weight[1][None, :, None, None, None] / pre[0, 0].numel()
    cam = torch.relu((grad.mean(dim=(2, 3, 4), keepdim=True) * pre).sum(dim=1, keepdim=True))
    expected = nn.functional.interpolate(cam, size=(8, 10, 12), mode="trilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(get_method("gradcam", layer="conv2")(net, volume, 1), expected.detach(),
                               atol=1e-6, rtol=1e-5)

    class Linear3d(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(1)))

        def forward(self, v):
            return torch.einsum("bcdhw,kcdhw->bk", v, self.w)

    linear, cube = Linear3d(), torch.rand(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(4))
    contribution = (linear.w[1] * cube)[:, 0].reshape(2, 2, 4, 2, 4, 2, 4).sum(dim=(2, 4, 6), keepdim=True)
    expected = contribution.expand(2, 2, 4, 2, 4, 2, 4).reshape(2, 8, 8, 8)
    torch.testing.assert_close(get_method("occlusion", window=4, stride=4)(linear, cube, 1), expected.detach(),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["gradcampp", "scorecam", "gbp", "ggcam", "kernelshap", "lime", "eg"])
def test_three_dimensional_inputs(name):
    """The other methods run on volumes: batched maps equal per-volume maps, not empty where the tiny network's CAM
    is not (their values are tested in 2-D against their references; the code paths are dimension-free)."""
    net = TinyNet3d().eval()
    volume = torch.rand(2, 1, 8, 10, 12, generator=torch.Generator().manual_seed(3))
    params = {"layer": "conv2"} if name in ("gradcampp", "scorecam", "ggcam") else {}
    params |= {"n_samples": 24, "cell": 4} if name in ("kernelshap", "lime") else {}
    params |= {"n_samples": 6, "references": torch.rand(3, 1, 8, 10, 12)} if name == "eg" else {}
    method = get_method(name, **params)
    maps = method(net, volume, 1)
    assert maps.shape == (2, 8, 10, 12) and maps[1].abs().amax() > 0
    torch.testing.assert_close(maps[1:], method(net, volume[1:], 1), atol=1e-5, rtol=1e-4)


def test_xrai_rejects_volumes():
    with pytest.raises(ValueError, match="2-D images only"):
        get_method("xrai")(nn.Identity(), torch.rand(1, 1, 4, 4, 4), 0)


def test_segment_dilation_equals_skimage():
    rng = np.random.default_rng(0)
    seg = np.repeat(np.repeat(rng.integers(0, 5, (6, 7)), 4, axis=0), 3, axis=1)
    masks = dilated_segment_masks(seg, 3)
    for i, label in enumerate(np.unique(seg)):
        np.testing.assert_array_equal(masks[i], dilation(seg == label, disk(3)).ravel())


def _pair_xrai_reference(attr, masks, min_pixel_diff):
    """A direct port of PAIR saliency's XRAI 'full' loop, one mask at a time."""
    output = np.full(attr.shape, -np.inf)
    current = np.zeros(attr.shape, bool)
    remaining = dict(enumerate(masks))
    order = []
    while current.mean() <= 1.0:
        best_gain, best_key, drop = -np.inf, None, []
        for key, mask in remaining.items():
            added = mask & ~current
            if added.sum() < min_pixel_diff:
                drop.append(key)
                continue
            gain = attr[added].mean()
            if gain > best_gain:
                best_gain, best_key = gain, key
        for key in drop:
            del remaining[key]
        if not remaining:
            break
        added = remaining[best_key] & ~current
        output[added] = best_gain
        order.append(best_key)
        current |= remaining.pop(best_key)
    if (~current).any():
        output[~current] = attr[~current].mean()
    return output, order


def test_xrai_growth_reproduces_the_published_loop():
    rng = np.random.default_rng(1)
    attr = rng.normal(size=400)
    masks = rng.uniform(size=(30, 400)) < rng.uniform(0.05, 0.4, size=(30, 1))
    ours, order = xrai_regions(attr, masks, min_pixel_diff=5)
    expected, expected_order = _pair_xrai_reference(attr, masks, 5)
    assert order == expected_order
    np.testing.assert_allclose(ours, expected)


def _pair_gradients(net, target):
    """PAIR's ``call_model_function`` for a PyTorch model: (N, H, W, C) inputs to input gradients."""
    from saliency.core.base import INPUT_OUTPUT_GRADIENTS

    def call_model(x, call_model_args=None, expected_keys=None):
        t = torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2).requires_grad_(True)
        grads = torch.autograd.grad(net(t)[:, target].sum(), t)[0]
        return {INPUT_OUTPUT_GRADIENTS: grads.permute(0, 2, 3, 1).numpy()}

    return call_model


@pytest.fixture
def radiograph():
    """A 64 x 64 synthetic radiograph: real structure for the segmentation to find."""
    from bundle.data.synthetic import SyntheticConfig, render

    return torch.from_numpy(render(5, True, SyntheticConfig(size=64)).image)[None, None]


def test_xrai_segments_the_image_as_pair_does(radiograph):
    from saliency.core.xrai import _get_segments_felzenszwalb

    from bundle.saliency.xrai import felzenszwalb_masks

    image = radiograph[0].permute(1, 2, 0).numpy()
    theirs = {m.tobytes() for m in _get_segments_felzenszwalb(image) if m.any()}
    ours = {m.reshape(64, 64).tobytes() for m in felzenszwalb_masks(image)}
    assert ours == theirs


def test_xrai_keeps_an_images_regions_for_its_next_map_and_forgets_the_oldest(radiograph, monkeypatch):
    """The regions depend on the image alone: the same image again (another model, step or criterion) is not
    segmented again and gets the same regions; another image is; past KEPT_REGION_BYTES the oldest goes."""
    from bundle.saliency import xrai

    segmented = []
    segments = xrai._segments
    monkeypatch.setattr(xrai, "_segments", lambda *args: segmented.append(args[2]) or segments(*args))
    monkeypatch.setattr(xrai, "_regions", type(xrai._regions)())
    image = radiograph[0].permute(1, 2, 0).numpy()
    others = [image[::-1].copy(), image[:, ::-1].copy()]
    first = xrai.felzenszwalb_masks(image)
    monkeypatch.setattr(xrai, "KEPT_REGION_BYTES", 2.5 * np.packbits(first, axis=1).nbytes)  # about two images
    assert len(segmented) == len(xrai.FELZENSZWALB_SCALES) and first.dtype == bool
    np.testing.assert_array_equal(xrai.felzenszwalb_masks(image.copy()), first)  # by content, not by object
    assert len(segmented) == len(xrai.FELZENSZWALB_SCALES)
    assert xrai.felzenszwalb_masks(image, radius=3).sum() < first.sum()  # other settings, other regions
    for other in others:  # two more images: the first one's regions are forgotten
        xrai.felzenszwalb_masks(other)
    assert len(xrai._regions) == 2
    before = len(segmented)
    np.testing.assert_array_equal(xrai.felzenszwalb_masks(image), first)
    assert len(segmented) == before + len(xrai.FELZENSZWALB_SCALES)


def test_xrai_equals_pair_saliency_end_to_end(radiograph):
    """Our XRAI on a small model equals PAIR's own ``saliency`` package: IG, segments and greedy growth."""
    from saliency.core import XRAI as PairXRAI
    from saliency.core import XRAIParameters

    net = relu_net()
    theirs = PairXRAI().GetMask(radiograph[0].permute(1, 2, 0).numpy(), _pair_gradients(net, 1), batch_size=7,
                                extra_parameters=XRAIParameters(steps=12))
    ours = get_method("xrai", n_steps=12)(net, radiograph, 1)[0].numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * np.abs(theirs).max(), rtol=0)


def test_xrai_map_on_a_small_model(images):
    net = relu_net()
    maps = get_method("xrai", n_steps=4)(net, images[:2], 1)
    assert maps.shape == (2, 16, 16) and torch.isfinite(maps).all()
    # region maps are piecewise constant: far fewer distinct values than pixels
    assert all(m.unique().numel() < 64 for m in maps)


@pytest.mark.parametrize("name", ["gradcam", "gradcampp", "scorecam", "ggcam"])
def test_hooks_are_removed(name, images):
    net = relu_net()
    method = get_method(name, layer="3")
    for _ in range(5):
        method(net, images, 1)
    assert all(not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks for m in net.modules())


def _faster_scorecam_by_hand(net, image, target, layer, k):
    """Score-CAM on the k highest-variance channels of one image, one channel at a time."""
    acts = []
    handle = layer.register_forward_hook(lambda m, a, out: acts.append(out.detach()))
    with torch.no_grad():
        net(image[None])
    handle.remove()
    act = acts[0][0]
    keep = act.flatten(1).var(dim=1).argsort(descending=True)[:k]
    scores = []
    for c in keep:
        up = torch.nn.functional.interpolate(act[c][None, None], image.shape[1:], mode="bilinear", align_corners=False)
        up = (up - up.min()) / (up.max() - up.min())
        with torch.no_grad():
            scores.append(net(image[None] * up)[0, target])
    weights = torch.softmax(torch.stack(scores), dim=0)
    cam = torch.relu((weights[:, None, None] * act[keep]).sum(dim=0))
    return torch.nn.functional.interpolate(cam[None, None], image.shape[1:], mode="bilinear", align_corners=False)[0, 0]


def test_scorecam_max_channels_keeps_the_highest_variance_channels(images):
    net = relu_net()
    full = get_method("scorecam", layer="3")(net, images, 1)
    torch.testing.assert_close(get_method("scorecam", layer="3", max_channels=6)(net, images, 1), full)
    reduced = get_method("scorecam", layer="3", max_channels=3, batch_size=4)(net, images, 1)
    for image, ours in zip(images, reduced):
        torch.testing.assert_close(ours, _faster_scorecam_by_hand(net, image, 1, net[3], 3), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="max_channels"):
        get_method("scorecam", max_channels=0)


def _exact_cell_shapley(net, image, target, cell):
    """Shapley values of the grid cells of one image by enumerating every coalition (baseline 0)."""
    from itertools import combinations
    from math import factorial

    from bundle.saliency.perturbation import grid_feature_mask

    features = grid_feature_mask(tuple(image.shape[1:]), cell, image.device)[0, 0]
    m = int(features.max()) + 1

    def value(coalition):
        keep = torch.isin(features, torch.tensor(list(coalition), dtype=torch.long)).float()
        with torch.no_grad():
            return net((image * keep)[None])[0, target].item()

    phi = torch.zeros(m)
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for size in range(m):
            for subset in combinations(others, size):
                weight = factorial(size) * factorial(m - size - 1) / factorial(m)
                phi[i] += weight * (value(subset + (i,)) - value(subset))
    return phi[features]


def test_kernelshap_converges_to_exact_shapley_values_like_captum(images):
    from captum.attr import KernelShap as CaptumKernelShap

    from bundle.saliency.perturbation import grid_feature_mask

    net = relu_net()
    exact = _exact_cell_shapley(net, images[0], 1, cell=8)  # 16x16 image, 4 cells: 16 coalitions
    ours = get_method("kernelshap", cell=8, n_samples=2000)(net, images[:2], 1)[0]
    scale = exact.abs().max()
    torch.testing.assert_close(ours, exact, atol=0.05 * scale, rtol=0)
    torch.manual_seed(0)
    theirs = CaptumKernelShap(net).attribute(images[:1], baselines=0.0, target=1, n_samples=2000,
                                              feature_mask=grid_feature_mask((16, 16), 8, images.device))[0, 0]
    torch.testing.assert_close(theirs, exact, atol=0.05 * scale, rtol=0)


def test_kernelshap_refuses_an_underdetermined_fit(images):
    # 16 x 16 images in 8-px cells: 4 features plus the intercept need more than 4 coalitions
    with pytest.raises(ValueError, match="n_samples=4 coalitions cannot determine 5 unknowns"):
        get_method("kernelshap", cell=8, n_samples=4)(relu_net(), images, 1)
    assert get_method("kernelshap", cell=8, n_samples=5)(relu_net(), images, 1).shape == (3, 16, 16)


def test_signed_attributions_of_colour_images_sum_absolute_channels():
    """TRUST_METRICS section 0: a signed map of a multi-channel input is sum_c |a_c|, not |sum_c a_c|."""
    colour, grey = Linear((3, 8, 8)), Linear((1, 8, 8))
    images = torch.rand(2, 3, 8, 8)
    expected = colour.w[1].abs().sum(dim=0).detach()
    assert not torch.allclose(expected, colour.w[1].sum(dim=0).abs().detach())  # the channels' signs differ
    torch.testing.assert_close(get_method("grad")(colour, images, 1), expected.expand(2, 8, 8))
    # a single channel keeps its sign, so conventions other than ``pair`` can still use it
    torch.testing.assert_close(get_method("grad")(grey, images[:, :1], 1), grey.w[1, 0].detach().expand(2, 8, 8))


def test_methods_declare_attribution_or_ranking_and_their_published_counts():
    ranking = {name for name, cls in METHODS.items() if not cls.signed}
    assert ranking == {"gradcam", "gradcampp", "scorecam", "xrai", "rollout", "chefer"}
    for name, cls in METHODS.items():
        method = get_method(name)
        assert not method.is_cut(), f"{name}: the class defaults are the published counts"
        assert repr(method.published_method()) == repr(method)
    cut = get_method("ig", n_steps=8, internal_batch_size=4)
    assert cut.is_cut() and repr(cut.published_method()) == repr(get_method("ig", internal_batch_size=4))
    assert not get_method("grad").is_cut() and not get_method("smoothgrad", nt_samples_batch_size=2).is_cut()


def test_kernelshap_coalitions_follow_the_shapley_kernel():
    method = get_method("kernelshap", n_samples=20002)
    z = method.coalitions(6, torch.Generator().manual_seed(0))
    assert z[0].sum() == 6 and z[1].sum() == 0 and set(z.unique().tolist()) == {0.0, 1.0}
    sizes = z[2:].sum(dim=1)
    k = torch.arange(1, 6, dtype=torch.float64)
    expected = (5 / (k * (6 - k))) / (5 / (k * (6 - k))).sum()
    observed = torch.stack([(sizes == s).double().mean() for s in range(1, 6)])
    torch.testing.assert_close(observed, expected, atol=0.01, rtol=0)


def _lime_kernel(width: float):
    """lime_image's weight of a coalition: sqrt(exp(-d^2 / width^2)), d its cosine distance to the all-kept one."""
    def similarity(original, perturbed, interpretable, **kwargs):
        ones = torch.ones_like(interpretable[0])
        d = 1 - torch.nn.functional.cosine_similarity(interpretable[0].double(), ones.double(), dim=0)
        return torch.exp(-d**2 / width**2).sqrt()
    return similarity


def test_lime_equals_captum_lime_with_lime_images_settings(radiograph):
    """Our batched LIME against captum's ``Lime`` explaining one image at a time with lime_image's settings (the
    same superpixels and coalitions, each left-out superpixel at its mean intensity, lime_image's kernel, sklearn's
    Ridge with sample weights); the kernel width, the ridge penalty and the mean fill each change the maps."""
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime as CaptumLime

    from bundle.saliency.base import image_generators
    from bundle.saliency.perturbation import segment_means

    net = relu_net()
    images = torch.cat([radiograph, radiograph.flip(-1) * 0.8])
    method = get_method("lime", n_samples=60, kernel_width=0.5)
    ours = method(net, images, 1)
    features = method.features(images)
    assert [int(f.max()) + 1 for f in features] == [len(f.unique()) for f in features]  # consecutive superpixels
    fills = segment_means(images, features)
    for i, generator in enumerate(image_generators(images, method.seed)):
        n_features = int(features[i].max()) + 1
        assert n_features > 5
        coalitions = method.coalitions(n_features, generator)

        def perturb(original, coalitions=coalitions, **kwargs):
            yield from (row[None] for row in coalitions)

        lime = CaptumLime(net, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=_lime_kernel(0.5),
                          perturb_func=perturb)
        theirs = lime.attribute(images[i : i + 1], target=1, n_samples=60, feature_mask=features[i][None, None],
                                baselines=fills[i : i + 1], perturbations_per_eval=16)[0, 0]
        scale = theirs.abs().max()
        torch.testing.assert_close(ours[i], theirs, atol=1e-4 * scale, rtol=0)
    for changed in ({"kernel_width": 0.25}, {"alpha": 0.01}, {"baseline": 0.0}):
        other = get_method("lime", **{"n_samples": 60, "kernel_width": 0.5, **changed})(net, images, 1)
        assert (other - ours).abs().max() > 0.05 * ours.abs().max(), changed


def test_lime_draws_coalitions_as_lime_image_does():
    method = get_method("lime", n_samples=20001)
    z = method.coalitions(8, torch.Generator().manual_seed(0))
    assert z[0].sum() == 8 and set(z.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(z[1:].mean(dim=0).double(), torch.full((8,), 0.5, dtype=torch.float64), atol=0.01,
                               rtol=0)
    weights = method.kernel(torch.tensor([[[1.0, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]]]), torch.tensor([4.0]))
    torch.testing.assert_close(weights[0], torch.tensor([1.0, np.exp(-0.5**2 / 0.25**2) ** 0.5,
                                                         np.exp(-1 / 0.25**2) ** 0.5], dtype=torch.float32))


def test_expected_gradients_equal_captum_gradient_shap_without_noise(radiograph):
    """With captum's own draws (numpy's reference indices, then path points), our batched Expected Gradients equal
    captum's ``GradientShap`` (stdevs 0) on a real radiograph; other draws give other maps (every term is used)."""
    from captum.attr import GradientShap

    net = relu_net()
    references = torch.rand(6, 1, 64, 64, generator=torch.Generator().manual_seed(2)) * radiograph.amax()
    np.random.seed(3)
    indices, alphas = np.random.choice(6, 12), np.random.uniform(0.0, 1.0, 12)

    class CaptumDraws(type(get_method("eg"))):
        def draws(self, n_references, generator):
            return torch.as_tensor(indices), torch.as_tensor(alphas, dtype=torch.float32)

    ours = CaptumDraws(references=references, n_samples=12)(net, radiograph, 1)[0]
    np.random.seed(3)
    theirs = GradientShap(net).attribute(radiograph, baselines=references, n_samples=12, stdevs=0.0, target=1)[0, 0]
    scale = theirs.abs().max()
    assert scale > 0
    torch.testing.assert_close(ours, theirs, atol=1e-5 * scale, rtol=0)
    seeded = get_method("eg", references=references, n_samples=12)(net, radiograph, 1)[0]
    assert (seeded - ours).abs().max() > 0.05 * scale


def test_expected_gradients_draw_uniformly_and_name_their_references():
    from bundle.saliency import ReferenceImages

    method = get_method("eg", references=torch.zeros(4, 1, 8, 8), n_samples=40000)
    indices, alphas = method.draws(4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.bincount(indices, minlength=4).double() / 40000, torch.full((4,), 0.25,
                               dtype=torch.float64), atol=0.01, rtol=0)
    assert 0 <= alphas.min() and alphas.max() < 1 and abs(alphas.mean().item() - 0.5) < 0.01
    assert repr(method.references) == f"ReferenceImages(n=4, shape=(1, 8, 8), sha1={method.references.digest})"
    assert method.references == ReferenceImages(torch.zeros(4, 1, 8, 8)) != ReferenceImages(torch.ones(4, 1, 8, 8))
    with pytest.raises(ValueError, match="eg needs reference images"):
        get_method("eg")(relu_net(), torch.rand(1, 1, 16, 16), 1)


def test_training_references_are_the_first_training_images_preprocessed_as_the_study_does(small_dataset):
    """Expected Gradients' references in the configs: the training split's first images of every class, through the
    study's preprocessing, read on first use."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized, ScaleIntensityd

    from bundle.data import RadiographReader, load_dataset
    from bundle.saliency import TrainingImages

    transform = Compose([LoadImaged("image", reader=RadiographReader(), image_only=True),
                         EnsureChannelFirstd("image", channel_dim="no_channel"), ScaleIntensityd("image"),
                         Resized("image", (32, 32), mode="area")])
    references = TrainingImages("synthetic", str(small_dataset), transform, n_images=6)
    assert references._images is None  # nothing read yet
    train = load_dataset("synthetic", small_dataset, split="train", limit=6)
    assert len(references) == 6 and {item["label"] for item in load_dataset("synthetic", small_dataset,
                                                                              split="train")} == {0, 1}
    torch.testing.assert_close(references.images[2], torch.as_tensor(transform(train[2])["image"]).float())
    assert references == TrainingImages("synthetic", str(small_dataset), transform, n_images=6)
    with pytest.raises(ValueError, match="n_images must be positive"):
        TrainingImages("synthetic", str(small_dataset), transform, n_images=0)

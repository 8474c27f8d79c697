"""Performance information curves against PAIR's ``saliency.metrics.pic`` on the same image, map, model and mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from bundle.data.synthetic import SyntheticConfig, render
from bundle.trust.pic import (
    PIC_FRACTIONS, aggregate_pic, blurred_image, blurred_measurements, curve_through, information, median_curve,
    pic_curves, random_reveal_mask,
)

pic = pytest.importorskip("saliency.metrics.pic")


class EdgeEnergy(nn.Module):
    """Class-1 logit grows with the image's Laplacian energy: blurring lowers the score, as PIC assumes."""

    def __init__(self, gain: float = 40.0, offset: float = 1.0) -> None:
        super().__init__()
        self.gain, self.offset = gain, offset
        self.register_buffer("kernel", torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = torch.nn.functional.conv2d(x, self.kernel).abs().mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(energy), self.gain * energy - self.offset], dim=1)


def _images(n=3, size=48, seed=0):
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.standard_normal((n, size, size)), (0, 1.5, 1.5))
    images = np.clip(128 + 60 * base / base.std() + 25 * rng.standard_normal((n, size, size)), 0, 255)
    maps = ndimage.gaussian_filter(rng.random((n, size, size)), (0, 3, 3))
    return images.astype(np.uint8), maps


def _pair(model, image, saliency, mask, kind):
    def pred_func(batch):
        with torch.no_grad():
            logits = model(torch.as_tensor(batch, dtype=model.kernel.dtype)[:, None] / 255.0)
        if kind == "sic":
            return torch.softmax(logits, dim=1)[:, 1].double().numpy().tolist()
        return (logits.argmax(dim=1) == 1).double().numpy().tolist()

    return pic.compute_pic_metric(image, saliency, mask, pred_func, PIC_FRACTIONS, min_pred_value=0.0)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.float64, 1e-9)])
@pytest.mark.parametrize("kind", ["sic", "aic"])
def test_curves_and_areas_equal_pair(monkeypatch, kind, dtype, tolerance):
    # PAIR 0.2.1 integrates with np.trapz, which numpy 2 removed: give it numpy's new name for the same rule
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    model = EdgeEnergy().to(dtype).eval()  # a float64 model is scored in float64 (the benchmark's value check)
    images, maps = _images()
    mask = random_reveal_mask(images.shape[1:], 0.01, seed=0)
    ours = pic_curves(model, images, maps, mask, target=1, min_score=0.0)[kind]  # both kinds from one pass
    for i in range(len(images)):
        try:
            reference = _pair(model, images[i], maps[i], mask, kind)
        except pic.ComputePicMetricError:
            assert ours.skipped[i] and np.isnan(ours.auc[i])
            continue
        assert ours.skipped[i] == ""
        np.testing.assert_allclose(ours.curve_x, reference.curve_x, atol=1e-12)
        np.testing.assert_allclose(ours.curves[i], reference.curve_y, atol=tolerance)
        assert ours.auc[i] == pytest.approx(reference.auc, abs=tolerance)
        # the recorded points rebuild the curve exactly (what the criterion's median curve is made from)
        np.testing.assert_array_equal(curve_through(ours.points_x[i], ours.points_y[i], ours.curve_x), ours.curves[i])
    scored = sum(s == "" for s in ours.skipped)
    assert scored >= (3 if kind == "sic" else 1) and (kind == "sic" or scored < len(images))  # both paths compared


def test_blur_and_information_follow_pair():
    images, _ = _images(n=1)
    mask = random_reveal_mask(images.shape[1:], 0.05, seed=1)
    np.testing.assert_array_equal(blurred_image(images[0], mask), pic.create_blurred_image(images[0], mask))
    assert information(images[0]) == pic.estimate_image_entropy(images[0])
    assert information(blurred_image(images[0], mask)) < information(images[0])
    counts = np.bincount(images[0].ravel(), minlength=256) / images[0].size
    entropy = -(counts[counts > 0] * np.log2(counts[counts > 0])).sum()
    assert information(images[0], "entropy") == pytest.approx(entropy)
    assert random_reveal_mask((40, 50), 0.01, seed=3).sum() == 20
    np.testing.assert_array_equal(random_reveal_mask((40, 50), seed=3), random_reveal_mask((40, 50), seed=3))


def test_a_tied_maps_equal_kept_pixels_are_blurred_once(monkeypatch):
    """A blocky map (an occlusion map's 16 x 16 windows) keeps the same pixels at several reveal fractions: each kept
    set is blurred once, and every fraction's image and information are PAIR's for it."""
    from bundle.trust import pic as ours

    images, _ = _images(n=1, size=64)
    rng = np.random.default_rng(2)
    blocks = np.kron(rng.permutation(16).reshape(4, 4), np.ones((16, 16)))  # 16 windows, no two equal
    mask = random_reveal_mask(images.shape[1:], 0.01, seed=0)
    blurred = []
    monkeypatch.setattr(ours, "blurred_image", lambda image, keep: blurred.append(keep) or blurred_image(image, keep))
    measured, info = blurred_measurements(images[0], blocks, mask, PIC_FRACTIONS, "webp")
    keeps = [mask, *[(blocks >= np.quantile(blocks, 1 - t)) | mask for t in PIC_FRACTIONS], np.ones_like(mask)]
    assert len({k.tobytes() for k in keeps}) == 9 and len(blurred) == 9  # 0.005-0.05 keep one window, 0.07 and 0.1 two
    for k, keep in enumerate(keeps):
        pair = pic.create_blurred_image(images[0], keep)  # (H, W, 1) when it keeps every pixel
        np.testing.assert_array_equal(measured[k], pair.reshape(images[0].shape))
        assert info[k] == pic.estimate_image_entropy(measured[k])
    steps, steps_info = blurred_measurements(images[0], blocks, mask, PIC_FRACTIONS, "webp", ends=False)
    np.testing.assert_array_equal(steps, measured[1:-1])
    np.testing.assert_array_equal(steps_info, info[1:-1])


def test_skipped_images_are_counted_with_the_reason_and_the_median_curve_aggregates():
    images, maps = _images(n=4)
    mask = random_reveal_mask(images.shape[1:], 0.01, seed=0)
    result = pic_curves(EdgeEnergy(offset=100.0), images, maps, mask, min_score=0.8)["sic"]  # scores near 0
    assert result.skipped == ["min_score"] * 4 and np.isnan(result.auc).all()
    assert np.isnan(aggregate_pic(result.curve_x, result.curves)[1])
    flat = np.full_like(images, 128)  # nothing to blur: the blurred image is exactly as informative
    assert pic_curves(EdgeEnergy(offset=-100.0), flat, maps, mask, min_score=0.0)["sic"].skipped == ["blur"] * 4
    scored = pic_curves(EdgeEnergy(), images, maps, mask, min_score=0.0)["sic"]
    median, area = aggregate_pic(scored.curve_x, scored.curves)
    kept = scored.curves[~np.isnan(scored.auc)]
    np.testing.assert_allclose(median, np.median(kept, axis=0))
    assert area == pytest.approx(np.trapezoid(np.median(kept, axis=0), scored.curve_x))
    assert median[0] == 0.0 and median[-1] == 1.0 and (np.diff(median) >= -1e-12).all()  # monotonic
    boot = median_curve(scored.curve_x, scored.curves, n_resamples=200, seed=1)
    assert boot.auc == area and boot.auc_low <= area <= boot.auc_high and boot.n == len(kept)
    assert (boot.curve_low <= boot.curve + 1e-12).all() and (boot.curve <= boot.curve_high + 1e-12).all()
    bare = median_curve(scored.curve_x, scored.curves, n_resamples=0)  # a verdict's bootstrap needs no interval
    assert bare.auc == area and np.isnan(bare.auc_low) and np.isnan(bare.curve_high).all()


class LesionContrast(nn.Module):
    """A model that relies on the lesion: the class-1 logit is the mean intensity inside a known lesion
    region minus the mean of the ring around it."""

    def __init__(self, lesion: np.ndarray, gain: float = 40.0, offset: float = 1.0) -> None:
        super().__init__()
        ring = ndimage.binary_dilation(lesion, iterations=6) & ~lesion
        self.register_buffer("lesion", torch.as_tensor(lesion / lesion.sum(), dtype=torch.float32))
        self.register_buffer("ring", torch.as_tensor(ring / ring.sum(), dtype=torch.float32))
        self.gain, self.offset = gain, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        contrast = (x[:, 0] * self.lesion).sum(dim=(1, 2)) - (x[:, 0] * self.ring).sum(dim=(1, 2))
        return torch.stack([torch.zeros_like(contrast), self.gain * contrast - self.offset], dim=1)


def test_a_map_that_reveals_the_lesion_first_beats_a_random_map_and_one_that_reveals_background_first_loses():
    size = 64
    yy, xx = np.mgrid[:size, :size]
    lesion = (yy - 40) ** 2 + (xx - 24) ** 2 <= 8**2
    backgrounds = [render(seed, lesion=False, cfg=SyntheticConfig(size=size)).image for seed in range(6)]
    images = np.stack([np.round(255 * np.clip(b + 0.35 * lesion, 0, 1)) for b in backgrounds]).astype(np.uint8)
    oracle = np.stack([ndimage.gaussian_filter(lesion.astype(float), 2.0)] * len(images))
    background_first = 1.0 - oracle
    uniform = np.random.default_rng(0).random(images.shape)
    mask = random_reveal_mask((size, size), 0.01, seed=0)
    model = LesionContrast(lesion)
    area = {name: pic_curves(model, images, maps, mask, min_score=0.8)["sic"].auc
            for name, maps in [("oracle", oracle), ("random", uniform), ("background", background_first)]}
    assert not any(np.isnan(a).any() for a in area.values())  # every image scored
    assert (area["oracle"] > area["random"]).all() and (area["random"] > area["background"]).all()
    assert area["oracle"].mean() > 0.8 and area["background"].mean() < 0.3

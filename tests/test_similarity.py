"""Map similarity and agreement (TRUST_METRICS.md sections 2-4) against scikit-image, scipy and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from skimage.metrics import structural_similarity

from bundle.trust.agreement import map_agreement, mask_overlap
from bundle.trust.similarity import ssim
from bundle.trust.stats import one_sample_test


def _pairs(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g, dtype=torch.float64)
    # every SSIM term matters: means, variances and covariance all differ between a and b
    b = (0.6 * a + 0.3 * torch.rand(shape, generator=g, dtype=torch.float64) + 0.05).clamp(0, 1) ** 1.5
    return a, b


@pytest.mark.parametrize("data_range", [1.0, 2.0])
def test_ssim_equals_skimage_per_pair_2d(data_range):
    a, b = _pairs((6, 40, 33))
    ours = ssim(a, b, data_range=data_range)
    reference = [structural_similarity(x.numpy(), y.numpy(), data_range=data_range) for x, y in zip(a, b)]
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-6)
    assert ours.shape == (6,) and len(set(np.round(reference, 4))) == 6


def test_ssim_equals_skimage_in_3d_and_is_one_for_identical_maps():
    a, b = _pairs((2, 9, 12, 10), seed=1)
    reference = [structural_similarity(x.numpy(), y.numpy(), data_range=1.0) for x, y in zip(a, b)]
    np.testing.assert_allclose(ssim(a, b).numpy(), reference, atol=1e-6)
    np.testing.assert_allclose(ssim(a, a).numpy(), 1.0, atol=1e-6)


def test_ssim_permuting_pairs_permutes_values_and_non_finite_maps_give_nan():
    a, b = _pairs((5, 16, 16), seed=2)
    order = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(ssim(a[order], b[order]), ssim(a, b)[order])
    a[2, 3, 3] = float("nan")
    values = ssim(a, b)
    assert math.isnan(values[2]) and torch.isfinite(values[[0, 1, 3, 4]]).all()
    with pytest.raises(ValueError, match="same shape"):
        ssim(a, b[:, :8])
    with pytest.raises(ValueError, match="at least 7"):
        ssim(a[:, :5, :5], b[:, :5, :5])


def test_mask_overlap_hand_computed():
    a = torch.zeros(3, 4, 4, dtype=torch.bool)
    b = torch.zeros(3, 4, 4, dtype=torch.bool)
    a[0, :2, :2] = True  # 4 pixels
    b[0, :2, :3] = True  # 6 pixels, 4 shared: IoU 4/6, Dice 8/10
    a[1, 0, 0] = True  # a second pair with an empty mask: undefined
    a[2], b[2] = True, True
    scores = mask_overlap(a, b)
    np.testing.assert_allclose(scores["iou"][[0, 2]].numpy(), [4 / 6, 1.0], atol=1e-7)
    np.testing.assert_allclose(scores["dice"][[0, 2]].numpy(), [0.8, 1.0], atol=1e-7)
    assert math.isnan(scores["iou"][1]) and math.isnan(scores["dice"][1])


def test_map_agreement_perfect_for_the_same_map_and_nan_for_a_constant_one():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 32, 32, generator=g) - 0.5
    maps[:, 8:16, 8:16] += 3.0
    same = map_agreement(maps, maps.clone())
    for metric in ("ssim", "iou", "dice"):
        np.testing.assert_allclose(same[metric].numpy(), 1.0, atol=1e-6)
    # the sign is folded for signed maps: a map and its negative agree perfectly
    np.testing.assert_allclose(map_agreement(maps, -maps)["ssim"].numpy(), 1.0, atol=1e-6)
    constant = maps.clone()
    constant[1] = 0.7
    scores = map_agreement(maps, constant)
    for metric in ("ssim", "iou", "dice"):
        assert math.isnan(scores[metric][1]) and torch.isfinite(scores[metric][[0, 2]]).all()


def test_one_sample_test_equals_scipy_and_handles_no_spread():
    values = np.array([0.1, 0.3, 0.2, np.nan, 0.25])
    test = one_sample_test(values, 0.4, "less")
    reference = stats.ttest_1samp(values[:4][[0, 1, 2]].tolist() + [0.25], 0.4, alternative="less")
    assert test.n == 4 and test.p_value == pytest.approx(reference.pvalue, rel=1e-12)
    assert test.statistic == pytest.approx(reference.statistic, rel=1e-12)
    assert one_sample_test([0.2, 0.2, 0.2], 0.5, "less").p_value == 0.0  # all below, no spread
    assert one_sample_test([0.9, 0.9], 0.5, "less").p_value == 1.0
    assert math.isnan(one_sample_test([0.2], 0.5, "less").p_value)

"""Baseline maps: seeded random map and the location prior."""

from __future__ import annotations

import pytest
import torch

from bundle.study import location_prior
from bundle.trust import PriorMap, RandomMap, mean_mask


def test_random_map_is_seeded_and_uniform():
    images = torch.zeros(4, 1, 32, 32)
    a, b = RandomMap(seed=1)(None, images), RandomMap(seed=1)(None, images)
    torch.testing.assert_close(a, b)
    assert a.shape == (4, 32, 32) and 0 <= a.min() and a.max() < 1
    assert abs(a.mean().item() - 0.5) < 0.02
    assert not torch.equal(a, RandomMap(seed=2)(None, images))
    # an image's map does not depend on its batch or on earlier calls
    varied = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    random = RandomMap(seed=1)
    together = random(None, varied)
    torch.testing.assert_close(random(None, varied[2:]), together[2:])
    assert not torch.equal(together[0], together[1])


def test_prior_is_the_mean_training_mask():
    masks = torch.zeros(4, 1, 8, 8)
    masks[:2, :, :4] = 1
    masks[3, :, :, :2] = 1
    prior = mean_mask(masks)
    assert prior[0, 0].item() == pytest.approx(0.75) and prior[0, 7].item() == pytest.approx(0.5)
    assert prior[7, 7].item() == 0.0 and prior[7, 0].item() == pytest.approx(0.25)
    loader = [{"mask": masks[:3]}, {"mask": masks[3:]}]
    torch.testing.assert_close(location_prior(loader), prior)
    maps = PriorMap(prior)(None, torch.zeros(2, 1, 8, 8))
    assert maps.shape == (2, 8, 8) and torch.equal(maps[1], prior)
    with pytest.raises(ValueError, match="prior map has shape"):
        PriorMap(prior)(None, torch.zeros(1, 1, 16, 16))


def test_prior_repr_changes_with_its_content():
    """The repr is the map-cache key and the MLflow param: another prior must not reuse cached maps."""
    assert repr(PriorMap(torch.zeros(4, 4))) != repr(PriorMap(torch.ones(4, 4)))

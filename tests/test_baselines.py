"""Baseline maps (seeded random map, Canny edges, location prior) and the oracle reference, with the sanity
checks that make them worth printing: on synthetic radiographs the oracle reaches AUPRC 0.9 and the random map
the lesion prevalence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bundle.data.masks import location_prior
from bundle.data.synthetic import render
from bundle.trust import EdgeMap, OracleMap, PriorMap, RandomMap, auprc, mean_mask, normalize_maps


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


def test_edge_map_blurs_3x3_and_keeps_edges_by_hysteresis():
    """A step of 200 grey levels is an edge; one of 20 (below the low threshold of 30 after the blur) is not."""
    image = torch.zeros(1, 1, 32, 32)
    image[0, 0, :, 16:] = 200 / 255  # strong vertical step
    image[0, 0, 24:, :8] = 20 / 255  # faint step
    edges = EdgeMap()(None, image)[0]
    assert set(edges.unique().tolist()) == {0.0, 1.0}
    columns = edges[2:22].nonzero()[:, 1].unique().tolist()
    assert columns and all(c in (15, 16) for c in columns), columns  # only along the strong step
    assert edges[20:28, :8].sum() == 0
    with pytest.raises(ValueError, match="2-D images only"):
        EdgeMap()(None, torch.zeros(1, 1, 4, 4, 4))


def test_oracle_is_the_blurred_mask_and_needs_the_ground_truth():
    masks = torch.zeros(2, 1, 16, 16)
    masks[:, :, 4:10, 4:10] = 1
    maps = OracleMap(sigma=1.0)(None, torch.zeros(2, 1, 16, 16), masks=masks)
    from scipy import ndimage

    np.testing.assert_allclose(maps[0].numpy(), ndimage.gaussian_filter(masks[0, 0].numpy().astype(float), 1.0),
                               atol=1e-6)
    assert OracleMap.needs_ground_truth and not RandomMap.signed and not EdgeMap.signed
    with pytest.raises(ValueError, match="needs the ground-truth masks"):
        OracleMap()(None, torch.zeros(1, 1, 4, 4))


def test_sanity_on_synthetic_radiographs_oracle_ceiling_and_random_at_prevalence():
    samples = [render(seed, True) for seed in range(24)]
    images = torch.from_numpy(np.stack([s.image for s in samples]))[:, None]
    masks = torch.from_numpy(np.stack([s.mask for s in samples])).float()
    oracle = auprc(normalize_maps(OracleMap()(None, images, masks=masks), signed=False)[0], masks)
    assert oracle.mean() >= 0.9
    random = auprc(normalize_maps(RandomMap()(None, images), signed=False)[0], masks)
    prevalence = masks.flatten(1).mean(dim=1)  # 0.039 here; the random map's AUPRC is 0.044, the trapezoid's
    # start at (recall 0, precision 1) lifting images with small lesions
    assert random.mean().item() == pytest.approx(prevalence.mean().item(), abs=0.01)

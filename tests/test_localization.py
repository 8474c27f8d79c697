"""Localisation metrics against scikit-learn and hand-computed cases, plus their MONAI/Ignite wrappers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from sklearn.metrics import auc, average_precision_score, precision_recall_curve

from bundle.handlers import LocalizationAUPRC
from bundle.trust import LocalizationAUPRCMetric, auprc, average_precision, normalize_maps, pointing_game, relevance_mass


def _sklearn_auprc(m: torch.Tensor, y: torch.Tensor) -> float:
    precision, recall, _ = precision_recall_curve(y.flatten().numpy(), m.flatten().numpy())
    return auc(recall, precision)


@pytest.mark.parametrize("levels", [None, 5, 2])
def test_auprc_matches_sklearn_on_random_maps(levels):
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(8, 24, 20, generator=g, dtype=torch.float64)
    if levels:  # many ties
        maps = (maps * levels).floor()
    masks = torch.rand(8, 24, 20, generator=g) > 0.8
    ours = auprc(maps, masks)
    ours_ap = average_precision(maps, masks)
    for i in range(8):
        assert ours[i].item() == pytest.approx(_sklearn_auprc(maps[i], masks[i]), abs=1e-6)
        expected_ap = average_precision_score(masks[i].flatten().numpy(), maps[i].flatten().numpy())
        assert ours_ap[i].item() == pytest.approx(expected_ap, abs=1e-6)


def test_auprc_hand_computed_case():
    # scores 4,3,2,1 with labels 1,0,1,0: points (r,p) = (0,1), (.5,1), (.5,.5), (1,2/3), (1,.5)
    maps = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    masks = torch.tensor([[1, 0, 1, 0]])
    expected = 0.5 * (1 + 1) / 2 + 0.0 + 0.5 * (0.5 + 2 / 3) / 2 + 0.0
    assert auprc(maps, masks).item() == pytest.approx(expected)
    assert average_precision(maps, masks).item() == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_perfect_map_scores_one_and_undefined_cases_are_nan():
    masks = torch.zeros(3, 16, 16)
    masks[:, 4:8, 4:8] = 1
    perfect = masks.clone() + 0.01 * torch.rand(3, 16, 16) * masks
    assert torch.allclose(auprc(perfect, masks), torch.ones(3))
    constant = torch.full((1, 16, 16), 0.3)
    assert math.isnan(auprc(constant, masks[:1]).item())
    assert math.isnan(auprc(perfect[:1], torch.zeros(1, 16, 16)).item())
    assert math.isnan(pointing_game(perfect[:1], torch.zeros(1, 16, 16)).item())


def test_permuting_images_permutes_results():
    g = torch.Generator().manual_seed(2)
    maps, masks = torch.rand(6, 10, 10, generator=g), torch.rand(6, 10, 10, generator=g) > 0.7
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(auprc(maps[perm], masks[perm]), auprc(maps, masks)[perm])


def test_pointing_game_and_relevance_mass():
    maps = torch.zeros(2, 4, 4)
    maps[0, 1, 1] = 5.0
    maps[1, 3, 3] = 5.0
    maps[:, 0, 0] = 1.0
    masks = torch.zeros(2, 4, 4)
    masks[:, 1:3, 1:3] = 1
    assert pointing_game(maps, masks).tolist() == [1.0, 0.0]
    torch.testing.assert_close(relevance_mass(maps, masks), torch.tensor([5 / 6, 0.0]))


def test_pair_normalisation_matches_the_pair_formula():
    g = torch.Generator().manual_seed(3)
    maps = torch.randn(4, 32, 32, generator=g)
    ours, degenerate = normalize_maps(maps, "pair")
    for i in range(4):
        a = np.abs(maps[i].numpy().astype(np.float64))
        vmax, vmin = np.percentile(a, 99), a.min()
        np.testing.assert_allclose(ours[i].numpy(), np.clip((a - vmin) / (vmax - vmin), 0, 1), atol=1e-6)
    assert not degenerate.any()


def test_constant_map_is_flagged_not_scored():
    maps = torch.stack([torch.full((8, 8), 2.0), torch.rand(8, 8)])
    for method in ("pair", "minmax", "sum_to_one"):
        out, degenerate = normalize_maps(maps if method != "sum_to_one" else maps * 0, method)
        assert degenerate[0] and (out[0] == 0).all()
    out, _ = normalize_maps(maps, "minmax")
    assert out[1].min() == 0 and out[1].max() == 1


def test_cumulative_metric_counts_nans():
    metric = LocalizationAUPRCMetric(get_not_nans=True)
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, 2:5, 2:5] = 1
    good = masks[:, 0] + 0.1 * torch.rand(2, 8, 8)
    metric(good, masks)
    metric(torch.stack([torch.ones(8, 8), good[0]]), masks)  # one constant map
    mean, not_nans = metric.aggregate()
    assert not_nans.item() == 3
    assert mean.item() == pytest.approx(1.0)
    assert torch.isnan(metric.get_buffer()).sum() == 1


def test_all_nan_aggregates_to_nan_not_zero():
    metric = LocalizationAUPRCMetric(get_not_nans=True)
    metric(torch.ones(2, 8, 8), torch.zeros(2, 1, 8, 8))
    mean, not_nans = metric.aggregate()
    assert math.isnan(mean.item()) and not_nans.item() == 0


def test_ignite_handler_puts_mean_and_details_on_the_engine():
    g = torch.Generator().manual_seed(4)
    batches = [(torch.rand(4, 8, 8, generator=g), (torch.rand(4, 1, 8, 8, generator=g) > 0.6).float()) for _ in range(3)]
    engine = Engine(lambda e, batch: batch)
    LocalizationAUPRC().attach(engine, "auprc")
    state = engine.run(batches, max_epochs=1)
    maps = torch.cat([b[0] for b in batches])
    masks = torch.cat([b[1] for b in batches])
    expected = auprc(normalize_maps(maps)[0], masks)
    assert state.metrics["auprc"] == pytest.approx(expected.mean().item(), abs=1e-6)
    torch.testing.assert_close(state.metric_details["auprc"].reshape(-1), expected)

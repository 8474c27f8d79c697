"""Calibration controls and the models whose answers are known by construction; the equal-area agreement."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from bundle.calibration import CONTROLS, GRADED, NOT_APPLICABLE, adjusted_as_expected, control_of, level_of
from bundle.networks import GlassBox, IntensityModel, build_network
from bundle.saliency import get_method
from bundle.trust import OracleMap, RandomMap
from bundle.trust.agreement import agreement_binarization, equal_area, map_agreement, mask_overlap
from bundle.trust.controls import CutOf, DegradedMap, PredictionTrackingMap, RankedMap, ShiftedMap, ShuffledMap
from bundle.trust.psc import map_divergence, prediction_divergence

ROOT = Path(__file__).resolve().parents[1]


def _images(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, generator=g)
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        masks[i, 0, 4 + 3 * i:12 + 3 * i, 6 + 2 * i:14 + 2 * i] = 1
    return images, masks


def test_the_docs_table_is_the_code_table():
    """docs/calibration.md's expected verdicts, written before any calibration ran, are bundle.calibration.CONTROLS."""
    section = (ROOT / "docs" / "calibration.md").read_text().split("\n## ")[0]
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|"))[:4]
            for line in section.splitlines() if re.match(r"\| [a-z_]+ \| ", line)} - {
        ("criterion", "control", "judged on", "expected")}
    on = {"study": "the model under study", "glass_box": "glass box"}
    expected = {(c.criterion, c.name, on.get(c.model, f"{c.model} model"), "graded" if c.expected == GRADED else
                 c.expected) for c in CONTROLS} | {(c, n, "-", "n/a") for c, n in NOT_APPLICABLE}
    assert rows == expected
    for criterion in {c.criterion for c in CONTROLS}:  # every criterion has a control that must PASS and one that must not
        assert {"PASS", "FAIL"} <= {c.expected for c in CONTROLS if c.criterion == criterion}, criterion


def test_degraded_map_adds_seeded_noise_to_the_unit_map_whatever_the_model():
    images, masks = _images()
    oracle = OracleMap(2.0)
    clean = oracle(None, images, 1, masks=masks)
    unit = clean / clean.flatten(1).amax(dim=1).reshape(-1, 1, 1)
    noisy = DegradedMap(oracle, 0.5, seed=3)
    maps = noisy(None, images, 1, masks=masks)
    assert torch.equal(maps, noisy(build_network("glass_box"), images, 1, masks=masks)), "the noise ignores the model"
    noise = (maps - unit).double()
    assert noise.std().item() == pytest.approx(0.5, rel=0.05) and abs(noise.mean().item()) < 0.03
    assert torch.allclose(DegradedMap(oracle, 0.0)(None, images, 1, masks=masks), unit, atol=1e-6)
    assert not torch.equal(maps, noisy.independent_draw()(None, images, 1, masks=masks))
    assert noisy.needs_ground_truth and not noisy.signed


def test_shifted_map_moves_the_oracle_by_fractions_of_the_lesion_diameter():
    images, masks = _images(n=1, size=48)
    oracle = OracleMap(0.5)
    diameter = 2 * np.sqrt(masks.sum().item() / np.pi)
    for fraction in (0.5, 1.0, 2.0):
        moved = ShiftedMap(oracle, fraction)(None, images, 1, masks=masks)[0].numpy()
        step = fraction * diameter / np.sqrt(2)  # diagonal: the same along both axes
        before = np.array(ndimage.center_of_mass(oracle(None, images, 1, masks=masks)[0].numpy()))
        assert np.array(ndimage.center_of_mass(moved)) - before == pytest.approx([step, step], abs=0.15)


def test_shuffled_map_gives_each_image_the_map_of_another():
    images, masks = _images(n=5)
    oracle = OracleMap(2.0)
    own = oracle(None, images, 1, masks=masks)
    unit = own / own.flatten(1).amax(dim=1).reshape(-1, 1, 1)
    shuffled = ShuffledMap(oracle, seed=7)(None, images, 1, masks=masks)
    taken = [next(j for j in range(5) if torch.allclose(shuffled[i], unit[j])) for i in range(5)]
    assert sorted(taken) == list(range(5)) and all(t != i for i, t in enumerate(taken)), "a derangement"
    assert torch.equal(shuffled, ShuffledMap(oracle, seed=7)(None, images, 1, masks=masks)), "seeded"
    second = ShuffledMap(oracle, seed=7).independent_draw()(None, images, 1, masks=masks)
    assert all(not torch.allclose(second[i], unit[i]) and not torch.allclose(second[i], shuffled[i]) for i in range(5)), \
        "the independent draw takes a third image's map"
    single = ShuffledMap(oracle)(None, images[:1], 1, masks=masks[:1])
    assert torch.allclose(single[0], unit[0].flip(0, 1)), "alone in its batch: its own map turned by 180 degrees"


def test_prediction_tracking_map_diverges_exactly_as_the_prediction():
    """JSD of two such maps (sum_to_one) equals JSD of the two predictions [p, 1 - p]: PSC 1 by construction."""
    images, masks = _images()
    model = IntensityModel(sign=1)
    control = PredictionTrackingMap()
    before, after = control(model, images, 1, masks=masks), control(model, images * 0.3, 1, masks=masks)
    p = lambda x: torch.softmax(model(x).double(), dim=1)[:, 1]  # noqa: E731
    assert torch.allclose(map_divergence(before, after, signed=False).double(),
                          prediction_divergence(p(images), p(images * 0.3)), atol=1e-6)
    assert torch.allclose(before.flatten(1).sum(dim=1), torch.ones(4), atol=1e-5)


def test_prediction_tracking_with_a_logit_error_degrades_psc_steadily_however_weak_the_attack():
    """PSC's graded control: the error on the tracked logit is drawn from the mask, so an image and its attacked
    version share it, and PSC falls steadily with its size even when the attack moves JSD_pred by 1e-11 to 1e-8
    (0.18.0's control, pixel noise on the map scaled to [0, 1] by its range, lost the prediction at its first level)."""
    g = torch.Generator().manual_seed(0)
    images, masks = torch.rand(32, 1, 32, 32, generator=g), torch.zeros(32, 1, 32, 32)
    for mask in masks:
        r, c = torch.randint(0, 24, (2,), generator=g).tolist()
        mask[0, r:r + 8, c:c + 8] = 1
    attacked = images + 1e-3 * torch.rand(32, 1, 1, 1, generator=g)
    model = IntensityModel(sign=1)
    p = lambda x: torch.softmax(model(x).double(), dim=1)[:, 1]  # noqa: E731
    jsd_pred = prediction_divergence(p(images), p(attacked)).numpy()
    scores = []
    for level in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0):
        control = PredictionTrackingMap(level, seed=5)
        before, after = control(model, images, 1, masks=masks), control(model, attacked, 1, masks=masks)
        tracked = [(m * masks[:, 0]).flatten(1).sum(dim=1).double() for m in (before, after)]  # float32 maps
        errors = [torch.logit(t) - torch.logit(p(x)) for t, x in zip(tracked, (images, attacked))]
        assert torch.allclose(errors[0], errors[1], rtol=1e-3, atol=1e-4), "an image and its attacked one share it"
        assert errors[0].std().item() == pytest.approx(level, rel=0.35, abs=1e-4)
        jsd_map = map_divergence(before, after, signed=False).double().numpy()
        scores.append(np.corrcoef(jsd_pred, jsd_map)[0, 1])
    # the bounds hold for every seed from 0 to 19 (level 4: 0.31 to 0.68), not for this seed alone
    assert scores[0] == pytest.approx(1.0, abs=1e-6) and scores[1] > 0.98 and scores[-1] < 0.75
    old = DegradedMap(PredictionTrackingMap(), 0.25, seed=5)
    old_maps = old(model, images, 1, masks=masks), old(model, attacked, 1, masks=masks)
    assert np.corrcoef(jsd_pred, map_divergence(*old_maps, signed=False).double().numpy())[0, 1] < 0.5
    assert all(np.diff(scores) < 0), scores
    assert repr(PredictionTrackingMap()) == "prediction_tracking()", "the PASS control's cache key is unchanged"
    with pytest.raises(ValueError, match="logit_noise must be non-negative"):
        PredictionTrackingMap(-0.5)


def test_glass_box_gradient_and_integrated_gradients_are_known_by_construction():
    """The gradient of a GlassBox logit is its cell weight / cell pixels (the same for every image); Integrated
    Gradients from black is image x that gradient: the exact contributions the faithfulness control ranks by."""
    torch.manual_seed(0)
    model = build_network("glass_box").eval()
    assert isinstance(model, GlassBox)
    images = torch.rand(2, 1, 128, 128)
    weights = model.fc.weight[1].detach().reshape(16, 16) / 64  # 128 / 16 = 8 x 8 pixels a cell
    exact = weights.repeat_interleave(8, 0).repeat_interleave(8, 1)
    grad = get_method("grad")(model, images, 1)
    assert torch.allclose(grad, exact.expand(2, -1, -1), rtol=1e-5, atol=1e-9)
    ig = get_method("ig", n_steps=4)(model, images, 1)
    assert torch.allclose(ig, images[:, 0] * exact, rtol=1e-4, atol=1e-9)
    ranked = RankedMap(get_method("ig", n_steps=4), sign=-1)
    assert torch.allclose(ranked(model, images, 1), -ig, atol=1e-9) and not ranked.signed


def test_intensity_models_and_a_control_presented_as_a_cut():
    images = torch.rand(3, 1, 8, 8)
    for sign in (1, -1, 0):
        assert torch.allclose(IntensityModel(sign)(images)[:, 1], sign * images.flatten(1).mean(dim=1))
    cut = CutOf(RandomMap(4), OracleMap())
    assert cut.is_cut() and repr(cut.published_method()) == "oracle(sigma=2.0)"
    assert torch.equal(cut(None, images, 1), RandomMap(4)(None, images, 1))


def test_the_calibration_builds_psc_graded_series_as_logit_errors_of_one_draw():
    """Every level of PSC's graded control tracks the prediction through an error of that size, seeded by
    SEED_OFFSET whatever the draw (the levels share one set of errors and their maps are computed once)."""
    from bundle.calibration import SEED_OFFSET, ControlSources

    parts = ControlSources({}, noise_levels=(0.25, 2.0), shift_fractions=())
    for draw in (0, 7):
        built = parts.build("prediction tracking+noise", draw)
        assert list(built) == ["control:prediction tracking+noise@0.25", "control:prediction tracking+noise@2"]
        assert [repr(c) for c in built.values()] == [f"prediction_tracking(logit_noise={v}, seed={SEED_OFFSET})"
                                                     for v in ("0.25", "2")]
    assert repr(parts.build("prediction tracking", 3)["control:prediction tracking"]) == "prediction_tracking()"


def test_labels_and_the_holm_case_least_favourable_to_each_control():
    assert control_of("control:oracle+noise@0.5") == "oracle+noise" and level_of("control:oracle+noise@0.5") == 0.5
    assert np.isnan(level_of("control:random"))
    import pandas as pd
    comparisons = pd.DataFrame({"criterion": ["localization", "localization"],
                                "method": ["control:random", "control:oracle"], "p_value": [0.01, 0.01]})
    adjusted = adjusted_as_expected({("localization", "random")}, family=90)(comparisons)
    assert adjusted.p_holm.tolist() == [0.01, 0.9] and adjusted.n_tests.tolist() == [90, 90]


def test_two_random_maps_agree_at_chance_and_readers_above_it_at_equal_area():
    """IoU of two independent uniform random maps binarised at k percent is about k / (200 - k); Otsu's near-full
    masks made them agree at 0.86. A second reader's outline (the mask moved by 2 pixels) agrees far above."""
    images, masks = _images(n=8, size=64)
    k = 100 * masks.mean().item()
    spec = agreement_binarization("area", k)
    chance = map_agreement(RandomMap(0)(None, images), RandomMap(1)(None, images), False, "pair", spec)["iou"]
    assert chance.mean().item() == pytest.approx(k / (200 - k), abs=0.02)
    otsu = map_agreement(RandomMap(0)(None, images), RandomMap(1)(None, images), False, "pair", "otsu")["iou"]
    assert otsu.mean().item() > 0.5, "the degenerate instrument this replaces"
    reader = torch.roll(masks, shifts=2, dims=-1)
    readers = mask_overlap(masks[:, 0] > 0.5, reader[:, 0] > 0.5)["iou"]
    assert readers.mean().item() > 0.5 > 10 * chance.mean().item()
    blocky = torch.zeros(1, 8, 8)
    blocky[0, :4] = 1.0  # ties at the threshold are all kept, never split in pixel order
    assert equal_area(blocky, 10).sum().item() == 32
    with pytest.raises(ValueError, match="mean area"):
        agreement_binarization("area", 0.0)

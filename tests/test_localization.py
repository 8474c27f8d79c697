"""Localisation metrics against scikit-learn, cheXlocalize's own pipeline and hand-computed cases, plus their
MONAI/Ignite wrappers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

from bundle.handlers import LocalizationScore
from bundle.trust import (
    LocalizationMetric,
    auprc,
    average_precision,
    binarize,
    dice,
    hit,
    iou,
    localization_scores,
    mass_accuracy,
    normalize_maps,
)
from bundle.trust.localization import rank_accuracy, roc_auc


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
    assert math.isnan(hit(perfect[:1], torch.zeros(1, 16, 16)).item())


def test_permuting_images_permutes_results():
    g = torch.Generator().manual_seed(2)
    maps, masks = torch.rand(6, 10, 10, generator=g), torch.rand(6, 10, 10, generator=g) > 0.7
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(auprc(maps[perm], masks[perm]), auprc(maps, masks)[perm])


@pytest.mark.parametrize("levels", [None, 3])
def test_roc_auc_matches_sklearn_with_ties_and_rank_accuracy_counts_the_top_k(levels):
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(6, 12, 10, generator=g, dtype=torch.float64)
    if levels:
        maps = (maps * levels).floor()
    masks = torch.rand(6, 12, 10, generator=g) > 0.7
    ours = roc_auc(maps, masks)
    for i in range(6):
        expected = roc_auc_score(masks[i].flatten().numpy(), maps[i].flatten().numpy())
        assert ours[i].item() == pytest.approx(expected, abs=1e-6)
    # rank accuracy against a stable descending argsort (ties ranked in pixel order), every image another K
    ranks = rank_accuracy(maps, masks)
    for i in range(6):
        flat, inside = maps[i].flatten().numpy(), masks[i].flatten().numpy()
        k = int(inside.sum())
        assert ranks[i].item() == pytest.approx(inside[np.argsort(-flat, kind="stable")[:k]].mean(), abs=1e-7)
    assert len(set(masks.flatten(1).sum(1).tolist())) > 1
    one = torch.tensor([[[4.0, 3.0, 0.0], [2.0, 1.0, 0.5]]])  # top 3: 4, 3, 2; the mask holds 4 and 1 and 0.5
    mask = torch.tensor([[[1, 0, 0], [0, 1, 1]]])
    assert rank_accuracy(one, mask).item() == pytest.approx(1 / 3)
    assert rank_accuracy(torch.ones(1, 2, 3), mask).isnan().all() and roc_auc(torch.ones(1, 2, 3), mask).isnan().all()
    assert roc_auc(one, torch.ones(1, 2, 3)).isnan().all()  # no negative pixel: undefined


def test_pointing_game_and_mass_accuracy():
    maps = torch.zeros(2, 4, 4)
    maps[0, 1, 1] = 5.0
    maps[1, 3, 3] = 5.0
    maps[:, 0, 0] = 1.0
    masks = torch.zeros(2, 4, 4)
    masks[:, 1:3, 1:3] = 1
    assert hit(maps, masks).tolist() == [1.0, 0.0]
    torch.testing.assert_close(mass_accuracy(maps, masks), torch.tensor([5 / 6, 0.0]))


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
    metric = LocalizationMetric("auprc", get_not_nans=True)
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
    metric = LocalizationMetric("auprc", get_not_nans=True)
    metric(torch.ones(2, 8, 8), torch.zeros(2, 1, 8, 8))
    mean, not_nans = metric.aggregate()
    assert math.isnan(mean.item()) and not_nans.item() == 0


def test_ignite_handler_puts_mean_and_details_on_the_engine():
    g = torch.Generator().manual_seed(4)
    batches = [(torch.rand(4, 8, 8, generator=g), (torch.rand(4, 1, 8, 8, generator=g) > 0.6).float()) for _ in range(3)]
    engine = Engine(lambda e, batch: batch)
    LocalizationScore("auprc").attach(engine, "auprc")
    state = engine.run(batches, max_epochs=1)
    maps = torch.cat([b[0] for b in batches])
    masks = torch.cat([b[1] for b in batches])
    expected = auprc(normalize_maps(maps)[0], masks)
    assert state.metrics["auprc"] == pytest.approx(expected.mean().item(), abs=1e-6)
    torch.testing.assert_close(state.metric_details["auprc"].reshape(-1), expected)


def test_one_sign_convention_for_every_score_through_the_metric():
    """Under ``pair`` a signed attribution is scored by |m| everywhere: strong negative evidence on the lesion
    counts for AUPRC, hit and mass alike; a ranking map (CAM, XRAI) keeps its sign, so its most negative
    region is its least salient."""
    masks = torch.zeros(1, 1, 16, 16)
    masks[0, 0, 4:8, 4:8] = 1
    signed_map = torch.full((1, 16, 16), 0.05)
    signed_map[0, 4:8, 4:8] = -3.0  # the lesion drives the score down: evidence, as much as a positive one
    signed_map[0, 12, 12] = 1.0
    values = {score: LocalizationMetric(score, signed=True)(signed_map, masks).item() for score in ("auprc", "hit")}
    assert values == {"auprc": 1.0, "hit": 1.0}
    mass = LocalizationMetric("mass", signed=True)(signed_map, masks).item()
    folded = signed_map.abs() - signed_map.abs().min()
    assert mass == pytest.approx((folded * masks[:, 0]).sum().item() / folded.sum().item())
    # the same numbers read as a ranking map: the lesion is the least salient region
    ranked = {score: LocalizationMetric(score, signed=False)(signed_map, masks).item() for score in ("hit", "mass")}
    assert ranked == {"hit": 0.0, "mass": 0.0}
    assert LocalizationMetric("auprc", signed=False)(signed_map, masks).item() < 0.2


def test_hit_and_mass_skip_the_percentile_clip():
    """The 99th-percentile clip makes the top 1% of pixels ties at 1; hit must still find the true maximum."""
    masks = torch.zeros(1, 1, 20, 20)
    masks[0, 0, 0, 0] = 1
    maps = torch.linspace(0, 1, 400).reshape(1, 20, 20).flip(-1).flip(-2).clone()  # maximum at (0, 0)
    maps[0, 19, 19] = 0.9999  # a near-maximum outside the mask, tied with it after the clip
    assert LocalizationMetric("hit")(maps, masks).item() == 1.0


def test_pair_normalisation_keeps_the_sign_of_ranking_maps():
    maps = torch.tensor([[[-2.0, -1.0], [0.5, 1.0]]])
    signed, _ = normalize_maps(maps, "pair", signed=True, clip=False)
    ranking, _ = normalize_maps(maps, "pair", signed=False, clip=False)
    torch.testing.assert_close(signed, torch.tensor([[[1.0, 1 / 3], [0.0, 1 / 3]]]))
    torch.testing.assert_close(ranking, torch.tensor([[[0.0, 1 / 3], [2.5 / 3, 1.0]]]))


def test_binarisations_on_hand_computed_cases():
    maps = torch.arange(16, dtype=torch.float64).reshape(1, 4, 4)  # min-max: k / 15
    torch.testing.assert_close(binarize(maps, "threshold:0.5")[0], (maps > 7.5))
    top = binarize(maps, "topk:25")[0]
    assert top.sum() == 4 and top[0, 3].all()
    ties = torch.zeros(1, 4, 4, dtype=torch.float64)
    ties[0, 0, :2] = 1.0
    ties[0, 3, 3] = 0.5
    assert binarize(ties, "topk:12.5")[0].reshape(-1).nonzero().flatten().tolist() == [0, 1]  # ties in pixel order
    constant, degenerate = binarize(torch.ones(1, 4, 4), "otsu")
    assert degenerate.tolist() == [True] and not constant.any()
    for bad in ("otsu:3", "threshold", "threshold:1.5", "topk:0", "median"):
        with pytest.raises(ValueError):
            binarize(maps, bad)


def test_bbox_binarisation_follows_the_mura_recipe():
    """Each Otsu component becomes its tight box; an opening with a disk of radius H/32 (twice) removes boxes
    thinner than the disk."""
    from scipy import ndimage
    from skimage.morphology import disk

    maps = torch.zeros(1, 64, 64)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    maps[0][((yy - 20) ** 2 + (xx - 20) ** 2) <= 100] = 1.0  # a disk: its box is 21 x 21
    maps[0, 50, 5:60] = 1.0  # a one-pixel line: its box is thinner than the opening's disk
    boxes = binarize(maps, "bbox")[0][0].numpy()
    square = np.zeros((64, 64), dtype=bool)
    square[10:31, 10:31] = True
    expected = ndimage.binary_opening(square, structure=disk(2), iterations=2)
    np.testing.assert_array_equal(boxes, expected)
    assert boxes[20, 10] and not boxes[50].any()


def test_iou_and_dice_against_scikit_learn_and_the_nan_rules():
    from sklearn.metrics import f1_score, jaccard_score

    g = torch.Generator().manual_seed(5)
    maps = torch.rand(4, 12, 12, generator=g)
    masks = (torch.rand(4, 12, 12, generator=g) > 0.6).float()
    predicted = binarize(maps, "threshold:0.5")[0]
    ours_iou, ours_dice = iou(maps, masks, "threshold:0.5"), dice(maps, masks, "threshold:0.5")
    for i in range(4):
        y, p = masks[i].flatten().numpy(), predicted[i].flatten().numpy()
        assert ours_iou[i].item() == pytest.approx(jaccard_score(y, p), abs=1e-6)
        assert ours_dice[i].item() == pytest.approx(f1_score(y, p), abs=1e-6)
    empty_truth = torch.zeros(1, 12, 12)
    assert math.isnan(iou(maps[:1], empty_truth).item())  # true positives only: an empty mask is undefined
    assert iou(maps[:1], empty_truth, "threshold:0.5", true_positive_only=False).item() == 0.0
    peak = torch.zeros(1, 12, 12)
    peak[0, 0, 0] = 1.0  # only the maximum survives the threshold, and it misses the mask
    assert iou(peak, 1 - peak, "threshold:0.5").item() == 0.0 and dice(peak, 1 - peak, "threshold:0.5").item() == 0.0
    assert math.isnan(dice(torch.ones(1, 12, 12), masks[:1]).item())  # a constant map cannot be binarised


def test_maps_on_a_coarser_grid_are_resized_to_the_mask_bilinearly():
    g = torch.Generator().manual_seed(6)
    maps, masks = torch.rand(2, 8, 8, generator=g), (torch.rand(2, 32, 32, generator=g) > 0.7).float()
    resized = torch.nn.functional.interpolate(maps[:, None].double(), size=(32, 32), mode="bilinear",
                                              align_corners=False)[:, 0]
    for score in (auprc, hit, mass_accuracy, iou):
        torch.testing.assert_close(score(maps, masks), score(resized, masks), equal_nan=True)
    with pytest.raises(ValueError, match=r"maps \(2, 8, 8\) and masks \(3, 32, 32\)"):
        auprc(maps, torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="same batch"):
        localization_scores(maps, torch.zeros(2, 4, 32, 32))


CHEXLOCALIZE = Path(__file__).resolve().parent / "data" / "chexlocalize_sample"  # a copy of ../shared/data's


def _chexlocalize_segmentation(cam: np.ndarray) -> np.ndarray:
    """cheXlocalize's ``cam_to_segmentation`` (heatmap_to_segmentation.py, MIT licence), Otsu branch, verbatim
    in its steps: min-max, uint8, cv2 Otsu, contours (RETR_TREE), each contour drawn as a filled polygon."""
    import cv2
    from PIL import Image, ImageDraw

    mask = cam - cam.min()
    mask = np.uint8(255 * (mask / mask.max()))
    thresh = cv2.threshold(mask, 0, np.max(mask), cv2.THRESH_OTSU)[1]
    contours = cv2.findContours(thresh, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    segmentation = Image.new("1", (mask.shape[1], mask.shape[0]))
    for contour in contours:
        if len(contour) > 1:
            ImageDraw.Draw(segmentation).polygon([(int(p[0][0]), int(p[0][1])) for p in contour], outline=1, fill=1)
    return np.array(segmentation, dtype=bool)


def _chexlocalize_cases():
    from pycocotools import mask as coco

    truth = json.loads((CHEXLOCALIZE / "gt_segmentations_val.json").read_text())
    for path in sorted((CHEXLOCALIZE / "maps").glob("*.npz")):
        with np.load(path, allow_pickle=False) as z:
            cam, task, (width, height) = z["map"], str(z["task"]), z["cxr_dims"]  # cxr_dims is (W, H)
        cxr_id = path.stem[: -len(task) - 1]
        yield cxr_id, task, torch.from_numpy(cam), (int(height), int(width)), coco.decode(truth[cxr_id][task])


def test_otsu_iou_and_hit_follow_chexlocalize_on_its_real_sample():
    """20 real Grad-CAM maps (320 x 320) and radiologist segmentations at full size: our Otsu segmentation is
    cheXlocalize's pixel for pixel, and IoU (true positives only) and hit equal its evaluation's."""
    cases = list(_chexlocalize_cases())
    assert len(cases) == 20
    scored = 0
    for cxr_id, task, cam, size, truth in cases:
        assert truth.shape == size, "the JSON's [H, W] and the maps' (W, H) cxr_dims describe the same image"
        resized = torch.nn.functional.interpolate(cam[None, None].double(), size=size, mode="bilinear",
                                                  align_corners=False)[0, 0]
        reference = _chexlocalize_segmentation(resized.numpy())
        ours = binarize(resized[None], "otsu")[0][0].numpy()
        np.testing.assert_array_equal(ours, reference, err_msg=f"{cxr_id} {task}")
        gt = torch.from_numpy(truth)[None].float()
        if truth.any() and reference.any():
            expected_iou = (reference & (truth > 0)).sum() / (reference | (truth > 0)).sum()
            row, col = np.unravel_index(np.argmax(resized.numpy()), size)
            expected_hit = float(truth[row, col] == 1)
            scored += 1
        else:
            expected_iou = expected_hit = float("nan")
        scores = localization_scores(cam[None], gt, ("iou", "hit"), "minmax", signed=False)
        assert scores["iou"].item() == pytest.approx(expected_iou, abs=1e-6, nan_ok=True), f"{cxr_id} {task}"
        assert scores["hit"].item() == pytest.approx(expected_hit, nan_ok=True), f"{cxr_id} {task}"
    assert scored == 4  # the positive findings of the sample that Grad-CAM segments


def test_otsu_fills_holes_and_drops_single_pixels_as_chexlocalize_does():
    """A ring (its hole is filled), a lone bright pixel (a one-point contour: dropped) and a diagonal two-pixel
    component (kept): cases the real sample does not contain, against the same cheXlocalize reference."""
    cam = np.zeros((40, 40))
    yy, xx = np.mgrid[:40, :40]
    ring = np.hypot(yy - 14, xx - 14)
    cam[(ring >= 4) & (ring <= 8)] = 1.0
    cam[33, 5] = 0.9
    cam[30, 30] = cam[31, 31] = 0.95
    cam += 0.05 * np.random.default_rng(0).random((40, 40))
    ours = binarize(torch.from_numpy(cam)[None], "otsu")[0][0].numpy()
    reference = _chexlocalize_segmentation(cam)
    np.testing.assert_array_equal(ours, reference)
    assert ours[14, 14] and not ours[33, 5] and ours[30, 30] and ours[31, 31]


def test_fill_holes_equals_scipy():
    from scipy import ndimage

    from bundle.trust.localization import fill_holes

    rng = np.random.default_rng(1)
    for n in range(60):
        shape = tuple(rng.integers(3, 40, size=2)) if n % 3 else tuple(rng.integers(3, 14, size=3))
        mask = ndimage.gaussian_filter(rng.random(shape), rng.uniform(0.5, 3)) > rng.uniform(0.3, 0.7)
        np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask), err_msg=str(n))
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7], ring[3:6, 3:6] = True, False
    assert fill_holes(ring)[4, 4] and fill_holes(ring).sum() == 25

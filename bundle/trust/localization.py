"""Localisation utility of saliency maps against ground-truth masks (TRUST_METRICS.md section 1).

Pure functions of batched tensors returning one value per image (NaN where a
score is undefined), plus one MONAI ``CumulativeIterationMetric`` for the family
so that an Ignite evaluator can compute any of them per epoch.

Maps and masks share the batch and the number of spatial dimensions; a map on a
coarser grid than its mask is resized to the mask bilinearly (align_corners=False),
as cheXlocalize resizes maps to the original image before scoring them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import look_up_option
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops
from skimage.morphology import disk

from bundle.passes import work
from bundle.trust.normalization import NORMALIZATIONS, normalize_maps


def match_grid(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, *spatial) float64 maps on the masks' grid and (B, *spatial) boolean masks.

    A singleton channel on either is dropped; a map on another grid is resized to the
    mask's bilinearly (trilinearly in 3-D). Any other disagreement is an error.
    """
    if masks.ndim == maps.ndim + 1 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if maps.ndim == masks.ndim + 1 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != masks.ndim or maps.shape[0] != masks.shape[0] or maps.ndim < 2:
        raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} must both be (B, *spatial) "
                         "with the same batch")
    maps = maps.to(torch.float64)
    if maps.shape[1:] != masks.shape[1:]:
        if maps.ndim not in (3, 4):
            raise ValueError(f"maps {tuple(maps.shape)} cannot be resized to masks {tuple(masks.shape)}: "
                             "only (B, H, W) and (B, D, H, W) grids are")
        mode = "bilinear" if maps.ndim == 3 else "trilinear"
        maps = F.interpolate(maps[:, None], size=tuple(masks.shape[1:]), mode=mode, align_corners=False)[:, 0]
    return maps, masks.to(maps.device) > 0.5


def _flatten_pair(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps and masks on one grid, flattened to (B, N) float64."""
    maps, masks = match_grid(maps, masks)
    b = maps.shape[0]
    return maps.reshape(b, -1), masks.reshape(b, -1).to(torch.float64)


def _precision_recall_points(maps: torch.Tensor, masks: torch.Tensor):
    """Per-image PR curve points at every distinct score, batched.

    Returns recall and precision at each sorted position, the recall and precision
    of the previous distinct-threshold point (or sklearn's start point (0, 1)),
    a mask of the positions that are curve points, and per-image validity.
    Vectorised over the batch because sklearn's curve is one image at a time on the CPU.
    """
    scores, labels = _flatten_pair(maps, masks)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    scores = torch.gather(scores, 1, order)
    labels = torch.gather(labels, 1, order)
    n = scores.shape[1]
    tps = labels.cumsum(dim=1)
    position = torch.arange(1, n + 1, device=scores.device, dtype=torch.float64)
    is_point = torch.ones_like(scores, dtype=torch.bool)
    is_point[:, :-1] = scores[:, :-1] != scores[:, 1:]
    positives = tps[:, -1:]
    recall = tps / positives.clamp_min(1.0)
    precision = tps / position
    index = torch.where(is_point, torch.arange(n, device=scores.device).expand_as(scores), -1)
    prev = torch.full_like(index, -1)
    prev[:, 1:] = index[:, :-1].cummax(dim=1).values
    safe = prev.clamp_min(0)
    prev_recall = torch.where(prev >= 0, torch.gather(recall, 1, safe), torch.zeros_like(recall))
    prev_precision = torch.where(prev >= 0, torch.gather(precision, 1, safe), torch.ones_like(precision))
    valid = (positives[:, 0] > 0) & (scores[:, 0] != scores[:, -1]) & torch.isfinite(scores).all(dim=1)
    return recall, precision, prev_recall, prev_precision, is_point, valid


def auprc(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-image area under the precision-recall curve, trapezoid rule over (recall, precision).

    Equals ``sklearn.metrics.auc(recall, precision)`` after ``precision_recall_curve``
    on the flattened image (the published convention, not average precision).
    NaN for an empty mask or a constant map.
    """
    recall, precision, prev_recall, prev_precision, is_point, valid = _precision_recall_points(maps, masks)
    segments = (recall - prev_recall) * (precision + prev_precision) / 2.0
    area = torch.where(is_point, segments, torch.zeros_like(segments)).sum(dim=1)
    return torch.where(valid, area, torch.full_like(area, float("nan"))).float()


def average_precision(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-image average precision (step-wise, as ``sklearn.metrics.average_precision_score``); NaN as :func:`auprc`."""
    recall, precision, prev_recall, _, is_point, valid = _precision_recall_points(maps, masks)
    steps = (recall - prev_recall) * precision
    ap = torch.where(is_point, steps, torch.zeros_like(steps)).sum(dim=1)
    return torch.where(valid, ap, torch.full_like(ap, float("nan"))).float()


def hit(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Pointing game: 1 when the first arg-max pixel of the map lies inside the mask, else 0.

    NaN for an empty mask (cheXlocalize) or a constant map (no arg-max to point with).
    """
    scores, labels = _flatten_pair(maps, masks)
    hits = torch.gather(labels, 1, scores.argmax(dim=1, keepdim=True))[:, 0]
    constant = scores.amax(dim=1) == scores.amin(dim=1)
    undefined = (labels.sum(dim=1) == 0) | constant | ~torch.isfinite(scores).all(dim=1)
    return torch.where(undefined, torch.full_like(hits, float("nan")), hits).float()


def mass_accuracy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Relevance mass accuracy: share of the non-negative map mass inside the mask.

    NaN when the map has no mass or the mask is empty.
    """
    scores, labels = _flatten_pair(maps, masks)
    scores = scores.clamp_min(0.0)
    total = scores.sum(dim=1)
    inside = (scores * labels).sum(dim=1)
    undefined = (total <= 0) | (labels.sum(dim=1) == 0) | ~torch.isfinite(total)
    return torch.where(undefined, torch.full_like(total, float("nan")), inside / total.clamp_min(1e-300)).float()


def rank_accuracy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Relevance rank accuracy (Arras et al. 2022): the share of the K highest-ranked pixels that lie inside the
    mask, K the mask's size (ties ranked in pixel order). NaN for an empty mask or a constant map.

    Thresholded at each image's K-th largest score (one ``topk``, not a full stable sort): the pixels above it,
    and of those equal to it the first in pixel order that complete K."""
    scores, labels = _flatten_pair(maps, masks)
    k = labels.sum(dim=1).long()
    finite = torch.isfinite(scores).all(dim=1)
    scores = torch.nan_to_num(scores)
    largest = scores.topk(int(k.max().clamp_min(1)), dim=1).values
    kth = torch.gather(largest, 1, (k - 1).clamp_min(0)[:, None])
    above, tied = scores > kth, scores == kth
    tied_taken = tied & (tied.cumsum(dim=1) <= (k[:, None] - above.sum(dim=1, keepdim=True)))
    value = (labels * (above | tied_taken)).sum(dim=1) / k.clamp_min(1)
    undefined = (k == 0) | (scores.amax(dim=1) == scores.amin(dim=1)) | ~finite
    return torch.where(undefined, torch.full_like(value, float("nan")), value).float()


def roc_auc(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-image ROC AUC of the map's pixels against the mask (as ``sklearn.metrics.roc_auc_score``: the
    Mann-Whitney statistic with tied scores sharing their average rank). NaN for an empty or full mask or a
    constant map.

    A positive pixel of score s has the average rank (lo + hi + 1) / 2 among all pixels (lo of them below s,
    hi at or below it), so U = sum over positives of (lo + hi) / 2, minus P^2 / 2: one sort of each image's
    scores and two binary searches per positive, with no permutation to carry and no tie groups to find."""
    scores, labels = _flatten_pair(maps, masks)
    finite = torch.isfinite(scores).all(dim=1)
    values = torch.nan_to_num(scores).cpu().numpy()
    inside = labels.cpu().numpy() > 0.5
    ordered = np.sort(values, axis=1)  # numpy's SIMD sort of values alone: about 10x torch's CPU sort here
    rank_sums = np.array([np.searchsorted(row, v[m], "left").sum() + np.searchsorted(row, v[m], "right").sum()
                          for row, v, m in zip(ordered, values, inside)], dtype=np.float64) / 2
    positives = inside.sum(axis=1).astype(np.float64)
    negatives = inside.shape[1] - positives
    value = torch.as_tensor((rank_sums - positives**2 / 2) / np.maximum(positives * negatives, 1), device=scores.device)
    undefined = (torch.as_tensor(positives == 0) | torch.as_tensor(negatives == 0)).to(scores.device)
    undefined |= (scores.amax(dim=1) == scores.amin(dim=1)) | ~finite
    return torch.where(undefined, torch.full_like(value, float("nan")), value).float()


BINARIZATIONS = ("otsu", "threshold", "topk", "bbox")


def parse_binarization(spec: str) -> tuple[str, float | None]:
    """``"otsu"``, ``"bbox"``, ``"threshold:t"`` (0 <= t < 1) or ``"topk:p"`` (0 < p <= 100) -> (kind, value)."""
    kind, _, value = str(spec).partition(":")
    kind = look_up_option(kind, BINARIZATIONS)
    if kind in ("otsu", "bbox"):
        if value:
            raise ValueError(f"binarisation {kind!r} takes no value, got {spec!r}")
        return kind, None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"binarisation {spec!r} needs a number: '{kind}:<value>'") from None
    if (kind == "threshold" and not 0 <= number < 1) or (kind == "topk" and not 0 < number <= 100):
        raise ValueError(f"binarisation {spec!r} is out of range: threshold in [0, 1), topk percent in (0, 100]")
    return kind, number


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes``: every background component (face-connected) not touching the border is
    filled. Own labelling because scipy's iterated dilation takes 4-5x longer on a 2000 x 2000 radiograph's map."""
    background, _ = ndimage.label(~mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))
    border = np.unique(np.concatenate([np.take(background, i, axis=d).ravel() for d in range(mask.ndim)
                                       for i in (0, -1)]))
    return ~np.isin(background, border[border > 0])


def _otsu(unit: np.ndarray) -> np.ndarray:
    """cheXlocalize's segmentation of a min-max map: Otsu on uint8(255 m), every contour filled."""
    levels = (255 * unit).astype(np.uint8)  # truncation, as np.uint8(255 * mask) in cheXlocalize
    if levels.min() == levels.max():
        return np.zeros(unit.shape, dtype=bool)
    foreground = levels > threshold_otsu(levels)
    # cheXlocalize fills every contour polygon: holes are filled and single-pixel components
    # (contours of one point) are dropped
    filled = fill_holes(foreground)
    components, _ = ndimage.label(filled, structure=np.ones((3,) * unit.ndim))
    sizes = np.bincount(components.ravel())
    return filled & (sizes[components] > 1)


def _bounding_boxes(segmentation: np.ndarray) -> np.ndarray:
    """MURA: each connected component replaced by its tight box, then an opening with a disk of radius H/32, twice."""
    if segmentation.ndim != 2:
        raise ValueError("the 'bbox' binarisation is defined for 2-D maps only")
    boxes = np.zeros_like(segmentation)
    for region in regionprops(label(segmentation)):
        y0, x0, y1, x1 = region.bbox
        boxes[y0:y1, x0:x1] = True
    radius = max(1, round(segmentation.shape[0] / 32))
    return ndimage.binary_opening(boxes, structure=disk(radius), iterations=2)


def binarize(maps: torch.Tensor, method: str = "otsu") -> tuple[torch.Tensor, torch.Tensor]:
    """Binary (B, *spatial) masks from maps, and the per-image flags of maps that cannot be binarised.

    On each map scaled to [0, 1] by min-max: ``otsu`` (cheXlocalize), ``threshold:t``
    (pixels above t), ``topk:p`` (the p percent highest pixels, ties in pixel order),
    ``bbox`` (MURA). A constant or non-finite map is flagged and gives an empty mask.
    """
    kind, value = parse_binarization(method)
    unit, degenerate = normalize_maps(maps.to(torch.float64), "minmax")
    if kind == "threshold":
        return (unit > value) & ~degenerate.reshape(-1, *[1] * (maps.ndim - 1)), degenerate
    if kind == "topk":
        flat = unit.reshape(unit.shape[0], -1)
        k = max(1, int(round(value / 100 * flat.shape[1])))
        order = flat.argsort(dim=1, descending=True, stable=True)[:, :k]
        out = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order, True)
        out[degenerate] = False
        return out.reshape(maps.shape), degenerate
    segmentations = []
    for m, bad in zip(unit.cpu().numpy(), degenerate.tolist()):  # scikit-image's Otsu threshold, on the CPU
        seg = np.zeros(m.shape, dtype=bool) if bad else _otsu(m)
        segmentations.append(_bounding_boxes(seg) if kind == "bbox" else seg)
    return torch.as_tensor(np.stack(segmentations), device=maps.device), degenerate


def _overlap(maps, masks, binarization, true_positive_only) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    maps, truth = match_grid(maps, masks)
    predicted, degenerate = binarize(maps, binarization)
    b = maps.shape[0]
    predicted, truth = predicted.reshape(b, -1), truth.reshape(b, -1)
    intersection = (predicted & truth).sum(dim=1).double()
    pred_area, true_area = predicted.sum(dim=1).double(), truth.sum(dim=1).double()
    undefined = degenerate | (pred_area + true_area == 0)
    if true_positive_only:
        undefined |= (pred_area == 0) | (true_area == 0)
    return intersection, torch.stack([pred_area, true_area]), undefined


def iou(maps: torch.Tensor, masks: torch.Tensor, binarize: str = "otsu", true_positive_only: bool = True) -> torch.Tensor:
    """Intersection over union of the binarised map and the mask.

    NaN when the union is empty, and with ``true_positive_only`` (cheXlocalize's
    default) also when either mask is empty; NaN for a map that cannot be binarised.
    """
    intersection, areas, undefined = _overlap(maps, masks, binarize, true_positive_only)
    union = areas.sum(dim=0) - intersection
    value = intersection / union.clamp_min(1.0)
    return torch.where(undefined, torch.full_like(value, float("nan")), value).float()


def dice(maps: torch.Tensor, masks: torch.Tensor, binarize: str = "otsu", true_positive_only: bool = True) -> torch.Tensor:
    """Dice coefficient 2|A and B| / (|A| + |B|) of the binarised map and the mask; NaN as :func:`iou`."""
    intersection, areas, undefined = _overlap(maps, masks, binarize, true_positive_only)
    value = 2 * intersection / areas.sum(dim=0).clamp_min(1.0)
    return torch.where(undefined, torch.full_like(value, float("nan")), value).float()


LOCALIZATION_METRICS = ("auprc", "ap", "hit", "mass", "iou", "dice")  # the study's scores (TRUST_METRICS section 1)
# also offered by name: the other localisation scores of Quantus's family, for comparisons with it
EXTRA_LOCALIZATION_METRICS = ("rank", "roc_auc")


@work("metrics")
def localization_scores(
    maps: torch.Tensor,
    masks: torch.Tensor,
    metrics=LOCALIZATION_METRICS,
    normalization: str = "pair",
    signed: bool = True,
    binarize: str = "otsu",
    true_positive_only: bool = True,
) -> dict[str, torch.Tensor]:
    """Every requested localisation score of a batch, one value per image, under one sign convention.

    The map is normalised once (``signed`` maps folded by ``|.|`` under ``pair``):
    AUPRC and AP use the normalised map; hit, mass, rank accuracy, ROC AUC and the binarisations
    behind IoU and Dice use it without the 99th-percentile clip, which would turn the top 1% of
    pixels into ties at 1. A map that cannot be normalised scores NaN everywhere.
    """
    available = LOCALIZATION_METRICS + EXTRA_LOCALIZATION_METRICS
    unknown = [m for m in metrics if m not in available]
    if unknown:
        raise ValueError(f"unknown localisation metric(s) {unknown}; available: {list(available)}")
    look_up_option(normalization, NORMALIZATIONS)
    parse_binarization(binarize)
    scored, degenerate = normalize_maps(maps, normalization, signed)
    unclipped, _ = normalize_maps(maps, normalization, signed, clip=False)
    functions = {
        "auprc": lambda: auprc(scored, masks),
        "ap": lambda: average_precision(scored, masks),
        "hit": lambda: hit(unclipped, masks),
        "mass": lambda: mass_accuracy(unclipped, masks),
        "rank": lambda: rank_accuracy(unclipped, masks),
        "roc_auc": lambda: roc_auc(unclipped, masks),
        "iou": lambda: iou(unclipped, masks, binarize, true_positive_only),
        "dice": lambda: dice(unclipped, masks, binarize, true_positive_only),
    }
    out = {}
    for name in metrics:
        values = functions[name]()
        out[name] = torch.where(degenerate.to(values.device), torch.full_like(values, float("nan")), values)
    return out


class LocalizationMetric(CumulativeIterationMetric):
    """Accumulates one per-image localisation ``score`` over batches of (maps, masks).

    Settings as :func:`localization_scores`. ``aggregate()`` is the NaN-skipping mean;
    with ``get_not_nans`` it also returns how many images were defined, so
    skipped images are counted, never silently dropped.
    """

    def __init__(
        self, score: str = "auprc", normalization: str = "pair", signed: bool = True, binarize: str = "otsu",
        true_positive_only: bool = True, get_not_nans: bool = False,
    ) -> None:
        super().__init__()
        self.score = look_up_option(score, LOCALIZATION_METRICS + EXTRA_LOCALIZATION_METRICS)
        self.normalization, self.signed, self.binarize = normalization, signed, binarize
        self.true_positive_only, self.get_not_nans = true_positive_only, get_not_nans

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        values = localization_scores(y_pred, y, (self.score,), self.normalization, self.signed, self.binarize,
                                     self.true_positive_only)[self.score]
        return values[:, None]

    def aggregate(self):  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"the data to aggregate must be a PyTorch Tensor, got {type(data)}.")
        mean, not_nans = do_metric_reduction(data, "mean")
        # MONAI reduces an all-NaN buffer to 0; a score that is nowhere defined is NaN, never a silent 0
        mean = torch.where(not_nans > 0, mean, torch.full_like(mean, float("nan")))
        return (mean, not_nans) if self.get_not_nans else mean

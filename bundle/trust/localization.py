"""Localisation utility of saliency maps against ground-truth masks (TRUST_METRICS.md section 1).

Pure functions of batched tensors, plus MONAI ``CumulativeIterationMetric``
wrappers so that an Ignite evaluator can compute them per epoch.
"""

from __future__ import annotations

import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction

from bundle.trust.normalization import normalize_maps


def _flatten_pair(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, *spatial) maps and masks (a singleton channel on the masks is allowed) to (B, N)."""
    if masks.ndim == maps.ndim + 1 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if maps.ndim == masks.ndim + 1 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.shape != masks.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} must have the same shape")
    b = maps.shape[0]
    return maps.reshape(b, -1).to(torch.float64), (masks.reshape(b, -1) > 0.5).to(torch.float64)


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


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Hit (1) when the first arg-max pixel of the map lies inside the mask, else 0; NaN for an empty mask."""
    scores, labels = _flatten_pair(maps, masks)
    hit = torch.gather(labels, 1, scores.argmax(dim=1, keepdim=True))[:, 0]
    constant = scores.amax(dim=1) == scores.amin(dim=1)
    undefined = (labels.sum(dim=1) == 0) | constant
    return torch.where(undefined, torch.full_like(hit, float("nan")), hit).float()


def relevance_mass(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of the non-negative map mass inside the mask; NaN when the map has no mass or the mask is empty."""
    scores, labels = _flatten_pair(maps, masks)
    scores = scores.clamp_min(0.0)
    total = scores.sum(dim=1)
    inside = (scores * labels).sum(dim=1)
    undefined = (total <= 0) | (labels.sum(dim=1) == 0)
    return torch.where(undefined, torch.full_like(total, float("nan")), inside / total.clamp_min(1e-300)).float()


LOCALIZATION_FUNCTIONS = {
    "auprc": auprc,
    "ap": average_precision,
    "hit": pointing_game,
    "mass": relevance_mass,
}


class LocalizationMetric(CumulativeIterationMetric):
    """Accumulates a per-image localisation score over batches of (maps, masks).

    Maps are normalised with ``normalization`` first; an image whose map is
    degenerate (constant) scores NaN. ``aggregate()`` is the NaN-skipping mean;
    with ``get_not_nans`` it also returns how many images were defined, so
    skipped images are counted, never silently dropped.
    """

    def __init__(self, score: str = "auprc", normalization: str = "pair", get_not_nans: bool = False) -> None:
        super().__init__()
        if score not in LOCALIZATION_FUNCTIONS:
            raise ValueError(f"score must be one of {sorted(LOCALIZATION_FUNCTIONS)}, got {score!r}")
        self.score, self.normalization, self.get_not_nans = score, normalization, get_not_nans

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        maps, degenerate = normalize_maps(y_pred, self.normalization)
        if self.score in ("hit", "mass"):
            # the arg-max and the mass are read off the map itself: percentile clipping would create ties at 1
            maps = y_pred.to(maps.dtype)
        values = LOCALIZATION_FUNCTIONS[self.score](maps, y.to(maps.device))
        return torch.where(degenerate.to(values.device), torch.full_like(values, float("nan")), values)[:, None]

    def aggregate(self):  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"the data to aggregate must be a PyTorch Tensor, got {type(data)}.")
        mean, not_nans = do_metric_reduction(data, "mean")
        # MONAI reduces an all-NaN buffer to 0; a score that is nowhere defined is NaN, never a silent 0
        mean = torch.where(not_nans > 0, mean, torch.full_like(mean, float("nan")))
        return (mean, not_nans) if self.get_not_nans else mean


class LocalizationAUPRCMetric(LocalizationMetric):
    """Localisation AUPRC (the default localisation criterion) as a cumulative MONAI metric."""

    def __init__(self, normalization: str = "pair", get_not_nans: bool = False) -> None:
        super().__init__("auprc", normalization, get_not_nans)

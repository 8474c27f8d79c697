"""Agreement between two maps (or two annotations) of the same image (TRUST_METRICS.md section 4):
SSIM of the normalised maps, IoU and Dice of their binarisations. Pure functions of tensors."""

from __future__ import annotations

import torch

from bundle.passes import work
from bundle.trust.localization import binarize, parse_binarization
from bundle.trust.normalization import normalize_maps
from bundle.trust.similarity import ssim

AGREEMENT_METRICS = ("ssim", "iou", "dice")
EQUAL_AREA = "area"  # both maps of a pair binarised at the same area: the reference masks' mean area


def agreement_binarization(spec: str, area_percent: float | None) -> str:
    """The binarisation of each map of a pair: ``area`` -> ``area:<area_percent>`` (:func:`equal_area`: the same
    area for both maps, so two independent random maps agree at chance, IoU about k / (200 - k) for k percent); any
    localisation binarisation (:func:`bundle.trust.localization.parse_binarization`) as it is."""
    if spec != EQUAL_AREA:
        parse_binarization(spec)
        return spec
    if area_percent is None or not 0 < area_percent <= 100:
        raise ValueError(f"binarisation {EQUAL_AREA!r} needs the reference masks' mean area in (0, 100] percent, got "
                         f"{area_percent} (are the ground-truth masks of the study's images empty?)")
    return f"{EQUAL_AREA}:{area_percent}"


def equal_area(unit: torch.Tensor, percent: float) -> torch.Tensor:
    """Masks (B, *spatial) of the pixels at or above each map's k-th largest value, k = ``percent`` of its pixels:
    the top ``percent`` of a map without ties. Ties at the threshold are all kept, never split in pixel order, which
    would make two blocky maps (occlusion's windows) agree by their pixel order rather than by their content."""
    flat = unit.reshape(unit.shape[0], -1)
    k = max(1, int(round(percent / 100 * flat.shape[1])))
    threshold = flat.topk(k, dim=1).values[:, -1:]
    return (flat >= threshold).reshape(unit.shape)


def _binarize(unit: torch.Tensor, binarization: str) -> torch.Tensor:
    kind, _, value = binarization.partition(":")
    return equal_area(unit, float(value)) if kind == EQUAL_AREA else binarize(unit, binarization)[0]


@work("metrics")
def mask_overlap(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    """IoU and Dice of two binary masks (B, *spatial) per pair; NaN when either mask is empty."""
    a, b = a.reshape(a.shape[0], -1).bool(), b.reshape(b.shape[0], -1).bool()
    intersection = (a & b).sum(dim=1).double()
    area_a, area_b = a.sum(dim=1).double(), b.sum(dim=1).double()
    undefined = (area_a == 0) | (area_b == 0)
    nan = torch.full_like(intersection, float("nan"))
    iou = torch.where(undefined, nan, intersection / (area_a + area_b - intersection).clamp_min(1.0))
    dice = torch.where(undefined, nan, 2 * intersection / (area_a + area_b).clamp_min(1.0))
    return {"iou": iou.float(), "dice": dice.float()}


@work("metrics")
def map_agreement(a: torch.Tensor, b: torch.Tensor, signed: bool = True, normalization: str = "pair",
                  binarization: str = "otsu", data_range: float = 1.0) -> dict[str, torch.Tensor]:
    """SSIM of the normalised maps and IoU / Dice of their binarised masks (``binarization``: ``area:<percent>``,
    :func:`equal_area`, or a localisation binarisation), one value per pair of maps.

    A map that cannot be normalised (constant, not finite) makes every score of its pair NaN.
    """
    unit_a, flat_a = normalize_maps(a, normalization, signed)
    unit_b, flat_b = normalize_maps(b, normalization, signed)
    undefined = flat_a | flat_b
    # binarised without the p99 clip, like the localisation IoU
    mask_a = _binarize(normalize_maps(a, normalization, signed, clip=False)[0], binarization)
    mask_b = _binarize(normalize_maps(b, normalization, signed, clip=False)[0], binarization)
    scores = {"ssim": ssim(unit_a, unit_b, data_range), **mask_overlap(mask_a, mask_b)}
    return {k: torch.where(undefined.to(v.device), torch.full_like(v, float("nan")), v) for k, v in scores.items()}

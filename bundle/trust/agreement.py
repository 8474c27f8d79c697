"""Agreement between two maps (or two annotations) of the same image (TRUST_METRICS.md section 4):
SSIM of the normalised maps, IoU and Dice of their binarisations. Pure functions of tensors."""

from __future__ import annotations

import torch

from bundle.trust.localization import binarize
from bundle.trust.normalization import normalize_maps
from bundle.trust.similarity import ssim

AGREEMENT_METRICS = ("ssim", "iou", "dice")


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


def map_agreement(a: torch.Tensor, b: torch.Tensor, signed: bool = True, normalization: str = "pair",
                  binarization: str = "otsu", data_range: float = 1.0) -> dict[str, torch.Tensor]:
    """SSIM of the normalised maps and IoU / Dice of their binarised masks, one value per pair of maps.

    A map that cannot be normalised (constant, not finite) makes every score of its pair NaN.
    """
    unit_a, flat_a = normalize_maps(a, normalization, signed)
    unit_b, flat_b = normalize_maps(b, normalization, signed)
    undefined = flat_a | flat_b
    # binarised without the p99 clip, like the localisation IoU
    mask_a = binarize(normalize_maps(a, normalization, signed, clip=False)[0], binarization)[0]
    mask_b = binarize(normalize_maps(b, normalization, signed, clip=False)[0], binarization)[0]
    scores = {"ssim": ssim(unit_a, unit_b, data_range), **mask_overlap(mask_a, mask_b)}
    return {k: torch.where(undefined.to(v.device), torch.full_like(v, float("nan")), v) for k, v in scores.items()}

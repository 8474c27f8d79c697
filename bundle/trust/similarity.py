"""Similarity between two maps of the same image, one value per image pair (TRUST_METRICS.md sections 2-4)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps (B, *spatial), ties given their average rank.

    Equals ``scipy.stats.spearmanr`` per pair; NaN when either map is constant or not finite.
    All pairs are ranked at once (scipy's ``rankdata`` along an axis), then correlated as a batch.
    """
    if a.shape != b.shape:
        raise ValueError(f"maps to compare must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    x = a.detach().reshape(a.shape[0], -1).double().cpu().numpy()
    y = b.detach().reshape(b.shape[0], -1).double().cpu().numpy()
    finite = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    rx = rankdata(np.nan_to_num(x), axis=1)
    ry = rankdata(np.nan_to_num(y), axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denominator = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(finite & (denominator > 0), (rx * ry).sum(axis=1) / denominator, np.nan)
    return torch.as_tensor(rho, dtype=torch.float32)

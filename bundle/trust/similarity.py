"""Similarity between two maps of the same image, one value per image pair (TRUST_METRICS.md sections 2-4)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata

from bundle.passes import work


@work("metrics")
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


def box_mean(t: torch.Tensor, win_size: int) -> torch.Tensor:
    """Mean over every ``win_size``-wide window that fits inside the trailing spatial axes of (B, C, *spatial),
    separably, by differences of cumulative sums: O(1) per pixel and axis, where an average pool in float64
    costs ``win_size ** d`` per pixel on the CPU (slower than skimage's loop at 128 x 128)."""
    for axis in range(2, t.ndim):
        total = torch.nn.functional.pad(t.cumsum(axis).movedim(axis, -1), (1, 0)).movedim(-1, axis)
        t = (total.narrow(axis, win_size, t.shape[axis] - win_size + 1)
             - total.narrow(axis, 0, t.shape[axis] - win_size + 1)) / win_size
    return t


@work("metrics")
def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, win_size: int = 7) -> torch.Tensor:
    """Mean structural similarity of each pair of maps (B, *spatial), 2-D or 3-D, one value per pair.

    ``skimage.metrics.structural_similarity`` semantics: a ``win_size`` uniform window,
    sample covariances, K1 = 0.01, K2 = 0.03, the mean taken over the windows that fit
    inside the map (skimage's crop of the border). ``data_range`` is explicit: 1.0 for maps
    in [0, 1] (default); 2.0 reproduces the published randomisation code, which relied on
    an old skimage default. NaN when either map is not finite. Batched on tensors with a
    box filter instead of skimage's per-image filters (which would be a Python loop).
    """
    if a.shape != b.shape:
        raise ValueError(f"maps to compare must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    spatial = a.ndim - 1
    if spatial not in (2, 3) or min(a.shape[1:]) < win_size:
        raise ValueError(f"ssim needs 2-D or 3-D maps of at least {win_size} pixels per side, got {tuple(a.shape)}")
    x, y = a.detach().double(), b.detach().double()
    finite = torch.isfinite(x).flatten(1).all(dim=1) & torch.isfinite(y).flatten(1).all(dim=1)
    ux, uy, xx, yy, xy = box_mean(torch.stack([x, y, x * x, y * y, x * y], dim=1), win_size).unbind(1)
    cov_norm = win_size**spatial / (win_size**spatial - 1)  # sample covariance, as skimage's default
    vx, vy, vxy = cov_norm * (xx - ux * ux), cov_norm * (yy - uy * uy), cov_norm * (xy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    values = s.flatten(1).mean(dim=1)
    return torch.where(finite, values, torch.full_like(values, float("nan"))).float()

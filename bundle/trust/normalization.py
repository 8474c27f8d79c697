"""Saliency map normalisation conventions (TRUST_METRICS.md section 0).

Every metric normalises maps first. A map that cannot be normalised (constant,
or with nothing to normalise) becomes all zeros and is flagged, so metrics that
need variation return NaN for it instead of a silent score.
"""

from __future__ import annotations

import torch
from monai.utils import look_up_option

from bundle.passes import work

NORMALIZATIONS = ("pair", "minmax", "sum_to_one")


@work("metrics")
def normalize_maps(
    maps: torch.Tensor, method: str = "pair", signed: bool = True, clip: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise a batch of maps (B, *spatial); return (normalised maps, degenerate flags (B,)).

    - ``pair`` (default; PAIR saliency's VisualizeImageGrayscale): a signed attribution
      is folded by ``|.|`` (a ranking map such as a CAM or XRAI keeps its sign), then
      (m - min) / (p99 - min) clipped to [0, 1]. ``clip=False`` scales by the maximum
      instead of the 99th percentile: the hit and mass scores and binarisation use it,
      because the clip turns the top 1% of pixels into ties at 1.
    - ``minmax`` (cheXlocalize): (m - min) / (max - min).
    - ``sum_to_one`` (Zhang PSC): negative values clipped to 0, divided by the sum.
    """
    method = look_up_option(method, NORMALIZATIONS)
    flat = maps.reshape(maps.shape[0], -1).to(torch.float64)
    nonfinite = ~torch.isfinite(flat).all(dim=1)
    flat = torch.nan_to_num(flat, nan=0.0, posinf=0.0, neginf=0.0)
    if method == "sum_to_one":
        flat = flat.clamp_min(0.0)
        low, scale = torch.zeros_like(flat[:, :1]), flat.sum(dim=1, keepdim=True)
    else:
        if method == "pair" and signed:
            flat = flat.abs()
        high = flat.amax(dim=1, keepdim=True)
        if method == "pair" and clip:
            p99 = torch.quantile(flat, 0.99, dim=1, keepdim=True)
            # a sparse map (99th percentile at its minimum) is not constant: scale it by its maximum
            high = torch.where(p99 > flat.amin(dim=1, keepdim=True), p99, high)
        low = flat.amin(dim=1, keepdim=True)
        scale = high - low
    degenerate = (scale[:, 0] <= 0) | nonfinite
    out = ((flat - low) / torch.where(scale > 0, scale, torch.ones_like(scale))).clamp(0.0, None)
    if method == "pair":
        out = out.clamp(max=1.0)
    out[degenerate] = 0.0
    return out.reshape(maps.shape).to(maps.dtype if maps.is_floating_point() else torch.float32), degenerate

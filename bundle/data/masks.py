"""Ground-truth masks from boxes, following TRUST_METRICS.md section 1."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bundle.trust.baselines import mean_mask


def boxes_to_mask(
    boxes: Sequence[Sequence[float]],
    original_size: tuple[int, int],
    mask_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Rasterise (x, y, w, h) boxes given in pixels of ``original_size`` (H, W) onto ``mask_size``.

    Boxes are rescaled to the mask grid and drawn with inclusive ends,
    ``mask[y0:y1 + 1, x0:x1 + 1] = 1`` (the published convention); several boxes are OR-ed.
    """
    h, w = original_size
    mh, mw = mask_size or original_size
    sy, sx = mh / h, mw / w
    mask = np.zeros((mh, mw), dtype=bool)
    for box in boxes:
        x, y, bw, bh = (float(v) for v in box)
        x0, y0 = int(np.floor(x * sx)), int(np.floor(y * sy))
        x1, y1 = int(np.floor((x + bw) * sx)), int(np.floor((y + bh) * sy))
        if x1 < 0 or y1 < 0 or x0 >= mw or y0 >= mh:  # entirely outside the image
            continue
        mask[max(y0, 0) : min(y1, mh - 1) + 1, max(x0, 0) : min(x1, mw - 1) + 1] = True
    return mask


def location_prior(dataloader, mask_key: str = "mask") -> torch.Tensor:
    """Average ground-truth mask over a (training-split) dataloader: the location-prior baseline map."""
    total, count = 0.0, 0
    for batch in dataloader:
        masks = batch[mask_key]
        total = total + mean_mask(masks) * masks.shape[0]
        count += masks.shape[0]
    if not count:
        raise ValueError("cannot build a location prior from an empty dataloader")
    return total / count

"""Baseline maps every method must beat, and the oracle reference (TRUST_METRICS.md section 7).

They share the saliency interface, ``baseline(model, images, target) -> maps``,
so a study scores them exactly like a method; the model is ignored. They are
ranking maps (``signed = False``). The oracle alone needs the ground truth
(``needs_ground_truth``): it is a reference that shows each score's ceiling, not
a baseline to beat.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import torch
from scipy import ndimage
from torch import nn

from bundle.saliency.base import image_generators


class RandomMap:
    """A uniform random map per image, seeded by the seed and the image, so the same image gets the same map.

    Args:
        seed: seeds every image's map (with the image's content); :meth:`independent_draw` uses ``seed + 1``.
    """

    name = "random"
    signed = False
    ignores_model = True  # its maps are the same on any model (a randomised one included)

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def __repr__(self) -> str:
        return f"random(seed={self.seed})"

    def independent_draw(self) -> RandomMap:
        """Another uniform random map source (the next seed): the agreement criteria's chance level."""
        return RandomMap(self.seed + 1)

    def __call__(self, model: nn.Module | None, images: torch.Tensor, target=None) -> torch.Tensor:
        spatial = tuple(images.shape[2:])
        maps = [torch.rand(spatial, generator=g) for g in image_generators(images, self.seed)]
        return torch.stack(maps).to(images.device)


class PriorMap:
    """The average ground-truth mask of the training split: a location prior with no image content.

    A method that does not beat it has not localised anything beyond where lesions usually are.

    Args:
        prior: the (*spatial) mean ground-truth mask, at the images' grid (:func:`bundle.data.masks.location_prior`
            over the training split, in the configs).
    """

    name = "prior"
    signed = False
    ignores_model = True

    def __init__(self, prior: torch.Tensor) -> None:
        self.prior = torch.as_tensor(prior, dtype=torch.float32)

    def __repr__(self) -> str:
        # the digest makes the repr (an MLflow param and a map-cache key) change with the prior's content
        digest = hashlib.sha256(self.prior.detach().cpu().numpy().tobytes()).hexdigest()[:12]
        return f"prior(shape={tuple(self.prior.shape)}, sha256={digest})"

    def __call__(self, model: nn.Module | None, images: torch.Tensor, target=None) -> torch.Tensor:
        spatial = tuple(images.shape[2:])
        if tuple(self.prior.shape) != spatial:
            raise ValueError(f"prior map has shape {tuple(self.prior.shape)}, images have {spatial}")
        return self.prior.to(images.device).expand(images.shape[0], *spatial).clone()


class EdgeMap:
    """The Canny edge map of the image: 3 x 3 mean blur, then hysteresis thresholds 30 / 90 on uint8 intensities.

    TRUST_METRICS section 7, in OpenCV's semantics (``cv2.blur``, ``cv2.Canny`` with its
    default L1 gradient), where those settings come from. A map that only follows edges
    has not localised a lesion.

    Args:
        low_threshold: Canny's lower hysteresis threshold, in uint8 gradient units (30, TRUST_METRICS section 7).
        high_threshold: Canny's upper hysteresis threshold, in uint8 gradient units (90, TRUST_METRICS section 7).
    """

    name = "edge"
    signed = False
    ignores_model = True
    spatial_dims = (2,)  # Canny is 2-D: the study leaves it out on volumes, saying so

    def __init__(self, low_threshold: float = 30, high_threshold: float = 90) -> None:
        self.low_threshold, self.high_threshold = low_threshold, high_threshold

    def __repr__(self) -> str:
        return f"edge(blur=3x3, low_threshold={self.low_threshold}, high_threshold={self.high_threshold})"

    def __call__(self, model: nn.Module | None, images: torch.Tensor, target=None) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError("the edge baseline is defined for 2-D images only")
        maps = [edge_map(image, self.low_threshold, self.high_threshold)  # scikit-image's Canny: CPU only
                for image in images.mean(dim=1).detach().cpu().numpy()]
        return torch.as_tensor(np.stack(maps), dtype=torch.float32, device=images.device)


def edge_map(image: np.ndarray, low_threshold: float = 30, high_threshold: float = 90) -> np.ndarray:
    """Canny edges (0/1) of a 2-D image in [0, 1]: uint8 levels, 3 x 3 mean blur, Canny."""
    levels = np.clip(np.round(255 * image), 0, 255).astype(np.uint8)
    return (cv2.Canny(cv2.blur(levels, (3, 3)), low_threshold, high_threshold) > 0).astype(np.float32)


class OracleMap:
    """A reference, not a baseline: the ground-truth mask blurred by a Gaussian of ``sigma`` pixels.

    It shows each score's ceiling on this data (a map that knows the answer but is
    not binary, as a saliency map is not).

    Args:
        sigma: the Gaussian blur's standard deviation, in pixels (voxels in 3-D) (2.0).
    """

    name = "oracle"
    signed = False
    needs_ground_truth = True
    ignores_model = True

    def __init__(self, sigma: float = 2.0) -> None:
        self.sigma = sigma

    def __repr__(self) -> str:
        return f"oracle(sigma={self.sigma})"

    def __call__(self, model: nn.Module | None, images: torch.Tensor, target=None,
                 masks: torch.Tensor | None = None) -> torch.Tensor:
        if masks is None:
            raise ValueError("the oracle map needs the ground-truth masks")
        masks = masks[:, 0] if masks.ndim == images.ndim else masks
        # scipy's Gaussian filter, the published oracle's, on the CPU (masks only: no pass of the model waits on it)
        blurred = [ndimage.gaussian_filter(m.astype(np.float64), self.sigma) for m in masks.cpu().numpy() > 0.5]
        return torch.as_tensor(np.stack(blurred), dtype=torch.float32, device=images.device)


def mean_mask(masks: torch.Tensor) -> torch.Tensor:
    """Average of (N, [1,] *spatial) binary masks: the location prior of a split."""
    if masks.ndim >= 3 and masks.shape[1] == 1:
        masks = masks[:, 0]
    return (masks > 0.5).float().mean(dim=0)

"""Baseline maps every method must beat (TRUST_METRICS.md section 7).

They share the saliency interface, ``baseline(model, images, target) -> maps``,
so a study scores them exactly like a method; the model is ignored.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from bundle.saliency.base import image_generators


class RandomMap:
    """A uniform random map per image, seeded by the seed and the image, so the same image gets the same map."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def __repr__(self) -> str:
        return f"random(seed={self.seed})"

    def __call__(self, model: nn.Module | None, images: torch.Tensor, target=None) -> torch.Tensor:
        spatial = tuple(images.shape[2:])
        maps = [torch.rand(spatial, generator=g) for g in image_generators(images, self.seed)]
        return torch.stack(maps).to(images.device)


class PriorMap:
    """The average ground-truth mask of the training split: a location prior with no image content.

    A method that does not beat it has not localised anything beyond where lesions usually are.
    """

    name = "prior"

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


def mean_mask(masks: torch.Tensor) -> torch.Tensor:
    """Average of (N, [1,] *spatial) binary masks: the location prior of a split."""
    if masks.ndim >= 3 and masks.shape[1] == 1:
        masks = masks[:, 0]
    return (masks > 0.5).float().mean(dim=0)

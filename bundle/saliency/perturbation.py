"""Perturbation methods on captum: occlusion and KernelSHAP."""

from __future__ import annotations

import torch
from captum.attr import KernelShap as CaptumKernelShap
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn

from bundle.saliency.base import SaliencyMethod, image_seed, scoring_function


class Occlusion(SaliencyMethod):
    """Occlusion (Zeiler & Fergus 2014): score drop when a window is set to ``baseline``, averaged over windows.

    ``window`` and ``stride`` are in pixels (voxels in 3-D); ``perturbations_per_eval``
    occluded copies go through the network per pass (the memory budget).
    """

    name = "occlusion"

    def __init__(
        self, window: int = 16, stride: int = 8, baseline: float = 0.0, perturbations_per_eval: int = 64,
        output: str = "logit",
    ) -> None:
        super().__init__(output)
        if window < 1 or stride < 1:
            raise ValueError(f"window and stride must be positive, got {window}, {stride}")
        self.window, self.stride, self.baseline = window, stride, baseline
        self.perturbations_per_eval = perturbations_per_eval

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        spatial_dims = images.ndim - 2
        channels = images.shape[1]
        return CaptumOcclusion(scoring_function(model, self.output)).attribute(
            images,
            sliding_window_shapes=(channels, *([self.window] * spatial_dims)),
            strides=(channels, *([self.stride] * spatial_dims)),
            baselines=self.baseline,
            target=target,
            perturbations_per_eval=max(1, self.perturbations_per_eval // images.shape[0]),
        )


def grid_feature_mask(spatial: tuple[int, ...], cell: int, device: torch.device) -> torch.Tensor:
    """(1, 1, *spatial) integer mask of square (cubic) cells of side ``cell``: KernelSHAP's features."""
    axes = [torch.arange(s, device=device) // cell for s in spatial]
    counts = [(s + cell - 1) // cell for s in spatial]
    ids = torch.zeros(spatial, dtype=torch.long, device=device)
    stride = 1
    for dim in reversed(range(len(spatial))):
        shape = [1] * len(spatial)
        shape[dim] = spatial[dim]
        ids = ids + axes[dim].reshape(shape) * stride
        stride *= counts[dim]
    return ids[None, None]


class KernelShap(SaliencyMethod):
    """KernelSHAP (Lundberg & Lee 2017) over a grid of ``cell``-pixel features, ``n_samples`` coalitions per image.

    Each pixel gets its cell's Shapley estimate. Seeded per image (seed and image
    content), so a map does not depend on the other images in the batch.
    """

    name = "kernelshap"

    def __init__(
        self, n_samples: int = 200, cell: int = 16, baseline: float = 0.0, perturbations_per_eval: int = 64,
        seed: int = 0, output: str = "logit",
    ) -> None:
        super().__init__(output)
        self.n_samples, self.cell, self.baseline = n_samples, cell, baseline
        self.perturbations_per_eval, self.seed = perturbations_per_eval, seed

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = grid_feature_mask(tuple(images.shape[2:]), self.cell, images.device)
        shap = CaptumKernelShap(scoring_function(model, self.output))
        maps = []
        with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
            for i in range(images.shape[0]):  # captum's KernelSHAP explains one input at a time
                torch.manual_seed(image_seed(images[i], self.seed))
                maps.append(shap.attribute(
                    images[i : i + 1], baselines=self.baseline, target=target[i : i + 1], feature_mask=mask,
                    n_samples=self.n_samples, perturbations_per_eval=self.perturbations_per_eval,
                ))
        return torch.cat(maps)

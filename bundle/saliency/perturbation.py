"""Perturbation methods: occlusion on captum, and a batched KernelSHAP with captum's estimator."""

from __future__ import annotations

import torch
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn

from bundle.saliency.base import SaliencyMethod, budget_inputs, image_generators, scoring_function


class Occlusion(SaliencyMethod):
    """Occlusion (Zeiler & Fergus 2014): score drop when a window is set to ``baseline``, averaged over windows.

    ``window`` and ``stride`` are in pixels (voxels in 3-D); ``perturbations_per_eval``
    occluded inputs go through the network per pass (the memory budget; ``None``
    sizes passes by ``PASS_VOXELS``).

    Args:
        window: side of the square (cubic in 3-D) occluding window, in pixels (16, as published).
        stride: step between windows, in pixels (8, as published).
        baseline: the intensity the occluded window is set to (0.0, black).
        perturbations_per_eval: occluded inputs per forward pass, over the whole batch (``None``: sized by
            ``PASS_VOXELS``).
        output: the class score explained: ``logit`` (default) or ``probability`` (softmax).
    """

    name = "occlusion"
    published = {"window": 16, "stride": 8}

    def __init__(
        self, window: int = 16, stride: int = 8, baseline: float = 0.0, perturbations_per_eval: int | None = None,
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
            perturbations_per_eval=max(1, budget_inputs(images, self.perturbations_per_eval) // images.shape[0]),
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

    Captum's estimator (the full and the empty coalition with weight 1e6, the
    others drawn with the Shapley kernel's size distribution, a weighted linear
    fit with intercept), but own code: captum's KernelShap explains one input per
    call, while here the coalitions of every image in the batch share passes of
    ``perturbations_per_eval`` inputs (``None``: sized by ``PASS_VOXELS``). Each
    pixel gets its cell's Shapley estimate. Coalitions are seeded per image (seed and image content), so a map does not
    depend on the other images in the batch.

    The fit has one unknown per cell plus the intercept: with ``n_samples`` not above
    the number of cells it is under-determined (an exact minimum-norm fit, not a Shapley
    estimate), so such a configuration is refused. 200 coalitions of 16-pixel cells is
    the published setting here (no paper fixes one); captum's own default is 25
    coalitions, the SHAP library's ``2 M + 2048``.

    Args:
        n_samples: coalitions per image, the full and the empty one included (200); must exceed the number of
            cells (at least 3).
        cell: side of the square (cubic in 3-D) feature cells, in pixels (16).
        baseline: the intensity of the pixels of the cells a coalition leaves out (0.0, black).
        perturbations_per_eval: perturbed inputs per forward pass, over the whole batch (``None``: sized by
            ``PASS_VOXELS``).
        seed: seeds each image's coalitions (with the image's content), so a seed gives the same maps.
        output: the class score explained: ``logit`` (default) or ``probability`` (softmax).
    """

    name = "kernelshap"
    published = {"n_samples": 200, "cell": 16}
    INF_WEIGHT = 1e6  # captum's weight for the full and the empty coalition

    def __init__(
        self, n_samples: int = 200, cell: int = 16, baseline: float = 0.0, perturbations_per_eval: int | None = None,
        seed: int = 0, output: str = "logit",
    ) -> None:
        super().__init__(output)
        if n_samples < 3 or cell < 1:
            raise ValueError(f"need n_samples >= 3 and a positive cell, got {n_samples}, {cell}")
        self.n_samples, self.cell, self.baseline = n_samples, cell, baseline
        self.perturbations_per_eval, self.seed = perturbations_per_eval, seed

    def coalitions(self, n_features: int, generator: torch.Generator) -> torch.Tensor:
        """(n_samples, n_features) 0/1 coalitions: all features, none, then sizes k with p(k) ∝ (M-1)/(k(M-k))."""
        k = torch.arange(1, n_features, dtype=torch.float64)
        size_probs = (n_features - 1) / (k * (n_features - k))
        draws = self.n_samples - 2
        sizes = torch.multinomial(size_probs, draws, replacement=True, generator=generator) + 1
        ranks = torch.rand(draws, n_features, generator=generator).argsort(dim=1).argsort(dim=1)
        sampled = (ranks < sizes[:, None]).to(torch.float32)  # a uniform subset of each drawn size
        return torch.cat([torch.ones(1, n_features), torch.zeros(1, n_features), sampled])

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        features = grid_feature_mask(tuple(images.shape[2:]), self.cell, images.device)[0, 0]
        n_features = int(features.max()) + 1
        if n_features < 2:
            raise ValueError(f"cell {self.cell} leaves fewer than 2 features in a {tuple(images.shape[2:])} image")
        if self.n_samples <= n_features:
            raise ValueError(
                f"kernelshap: n_samples={self.n_samples} coalitions cannot determine {n_features + 1} unknowns "
                f"({n_features} cells of {self.cell} px in a {tuple(images.shape[2:])} image, plus the intercept); "
                f"set n_samples above {n_features} or a larger cell")
        scorer = scoring_function(model, self.output)
        b, n = images.shape[0], self.n_samples
        masks = torch.stack([self.coalitions(n_features, g) for g in image_generators(images, self.seed)])
        masks = masks.to(images.device)  # (B, n, M)
        scores = torch.empty(b * n, device=images.device)
        pairs = torch.arange(b * n, device=images.device)  # (image, coalition) pairs of every image share passes
        with torch.no_grad():
            for chunk in pairs.split(budget_inputs(images, self.perturbations_per_eval)):
                rows, cols = chunk // n, chunk % n
                keep = masks[rows, cols][:, features].unsqueeze(1)  # (chunk, 1, *spatial)
                perturbed = images[rows] * keep + self.baseline * (1 - keep)
                scores[chunk] = scorer(perturbed).gather(1, target[rows][:, None])[:, 0]
        weights = torch.ones(b, n, dtype=torch.float64, device=images.device)
        weights[:, :2] = self.INF_WEIGHT
        design = torch.cat([torch.ones(b, n, 1, device=images.device), masks], dim=2).to(torch.float64)
        root = weights.sqrt()
        # weighted least squares with intercept; gelsd gives sklearn's minimum-norm solution if repeated coalitions
        # leave the design rank-deficient
        driver = "gelsd" if images.device.type == "cpu" else None
        solution = torch.linalg.lstsq(design * root[..., None], (scores.reshape(b, n).double() * root)[..., None],
                                      driver=driver).solution
        return solution[:, 1:, 0].to(images.dtype)[:, features]

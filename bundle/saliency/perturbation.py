"""Perturbation methods: occlusion on captum; batched KernelSHAP (captum's estimator) and LIME (lime_image's)."""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn

from bundle.saliency.base import SaliencyMethod, budget_inputs, image_generators, scoring_function
from bundle.saliency.xrai import superpixels


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


def coalition_scores(
    scorer: nn.Module, images: torch.Tensor, features: torch.Tensor, masks: torch.Tensor,
    fill: float | torch.Tensor, target: torch.Tensor, per_pass: int,
) -> torch.Tensor:
    """(B, n) class scores of every image with the features its n coalitions leave out set to ``fill``.

    ``features`` (B, *spatial) holds each pixel's feature index, ``masks`` (B, n, M) each coalition's kept
    features, ``fill`` is a constant or a (B, C, *spatial) image; the (image, coalition) pairs of the whole batch
    share passes of ``per_pass`` inputs.
    """
    b, n = masks.shape[:2]
    scores = torch.empty(b * n, device=images.device)
    pairs = torch.arange(b * n, device=images.device)
    with torch.no_grad():
        for chunk in pairs.split(per_pass):
            rows, cols = chunk // n, chunk % n
            keep = masks[rows, cols].gather(1, features[rows].flatten(1)).reshape(len(chunk), 1, *images.shape[2:])
            perturbed = images[rows] * keep + (fill[rows] if torch.is_tensor(fill) else fill) * (1 - keep)
            scores[chunk] = scorer(perturbed).gather(1, target[rows][:, None])[:, 0]
    return scores.reshape(b, n)


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
        b, n = images.shape[0], self.n_samples
        masks = torch.stack([self.coalitions(n_features, g) for g in image_generators(images, self.seed)])
        masks = masks.to(images.device)  # (B, n, M)
        scores = coalition_scores(scoring_function(model, self.output), images, features.expand(b, *features.shape),
                                  masks, self.baseline, target, budget_inputs(images, self.perturbations_per_eval))
        weights = torch.ones(b, n, dtype=torch.float64, device=images.device)
        weights[:, :2] = self.INF_WEIGHT
        design = torch.cat([torch.ones(b, n, 1, device=images.device), masks], dim=2).to(torch.float64)
        root = weights.sqrt()
        # weighted least squares with intercept; gelsd gives sklearn's minimum-norm solution if repeated coalitions
        # leave the design rank-deficient
        driver = "gelsd" if images.device.type == "cpu" else None
        solution = torch.linalg.lstsq(design * root[..., None], (scores.double() * root)[..., None],
                                      driver=driver).solution
        return solution[:, 1:, 0].to(images.dtype)[:, features]


def segment_means(images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) images with every pixel set to its feature's mean intensity (lime_image's ``hide_color``
    ``None``: a left-out superpixel shows its own mean colour)."""
    b, c = images.shape[:2]
    flat, ids = images.flatten(2), features.flatten(1)
    n = int(ids.max()) + 1
    sums = torch.zeros(b, c, n, dtype=images.dtype, device=images.device).scatter_add_(
        2, ids[:, None].expand(b, c, -1), flat)
    counts = torch.zeros(b, n, dtype=images.dtype, device=images.device).scatter_add_(
        1, ids, torch.ones_like(ids, dtype=images.dtype))
    means = sums / counts.clamp(min=1)[:, None]
    return means.gather(2, ids[:, None].expand(b, c, -1)).reshape(images.shape)


def weighted_ridge(design: torch.Tensor, scores: torch.Tensor, weights: torch.Tensor, alpha: float) -> torch.Tensor:
    """(B, M) coefficients of B weighted ridge fits with an unpenalised intercept, as scikit-learn's ``Ridge`` fits
    with ``sample_weight``: the data centred on their weighted means, then ``(X'WX + alpha I) b = X'Wy``."""
    x, y, w = design.double(), scores.double(), weights.double()
    total = w.sum(dim=1, keepdim=True)
    xc = x - (w[..., None] * x).sum(dim=1, keepdim=True) / total[..., None]
    yc = y - (w * y).sum(dim=1, keepdim=True) / total
    gram = xc.transpose(1, 2) @ (w[..., None] * xc) + alpha * torch.eye(x.shape[2], dtype=x.dtype, device=x.device)
    return torch.linalg.solve(gram, (xc.transpose(1, 2) @ (w * yc)[..., None]))[..., 0]


class Lime(SaliencyMethod):
    """LIME (Ribeiro et al. 2016) with lime_image's settings: superpixels switched off at random, a ridge fit.

    Each image's superpixels are its Felzenszwalb segments at ``scale``, segmented as XRAI segments (2-D;
    volumes use cubic cells of ``cell`` voxels, as KernelSHAP does). Per image, ``n_samples`` coalitions keep each
    superpixel with probability 1/2 (the first keeps all, as lime_image's); a left-out superpixel shows its own
    mean intensity (lime_image's ``hide_color=None``) or the constant ``baseline``. Each coalition z is weighted
    by ``sqrt(exp(-d^2 / kernel_width^2))`` with d the cosine distance of z to the all-kept coalition, and the
    scores are fitted by weighted ridge regression (``alpha`` 1, intercept unpenalised; lime_image's ``Ridge``).
    Each pixel gets its superpixel's coefficient (signed). Own code because captum's ``Lime`` explains one image
    per call; here the coalitions of the whole batch share passes of ``perturbations_per_eval`` inputs.
    Coalitions are seeded per image (seed and content), so a map does not depend on its batch.

    Args:
        n_samples: coalitions per image, the all-kept one included (1000, lime_image's ``num_samples``).
        kernel_width: width of the exponential kernel on the cosine distance (0.25, lime_image's).
        alpha: the ridge penalty (1.0, lime_image's ``Ridge(alpha=1)``).
        scale: Felzenszwalb's scale of the superpixels, on XRAI's 224 x 224 segmentation input (100: about 40
            superpixels of a 128 x 128 radiograph; lime_image's own segmenter, quickshift, has no such knob).
        cell: side of the cubic cells that are a volume's features, in voxels (16).
        baseline: ``"mean"`` (each left-out superpixel at its own mean intensity) or a constant intensity.
        perturbations_per_eval: perturbed inputs per forward pass, over the whole batch (``None``: sized by
            ``PASS_VOXELS``).
        seed: seeds each image's coalitions (with the image's content), so a seed gives the same maps.
        output: the class score explained: ``logit`` (default) or ``probability`` (softmax).
    """

    name = "lime"
    published = {"n_samples": 1000, "kernel_width": 0.25}

    def __init__(
        self, n_samples: int = 1000, kernel_width: float = 0.25, alpha: float = 1.0, scale: int = 100,
        cell: int = 16, baseline: str | float = "mean", perturbations_per_eval: int | None = None, seed: int = 0,
        output: str = "logit",
    ) -> None:
        super().__init__(output)
        if n_samples < 2 or kernel_width <= 0 or alpha <= 0:
            raise ValueError(f"need n_samples >= 2, kernel_width > 0 and alpha > 0, got {n_samples}, "
                             f"{kernel_width}, {alpha}")
        if baseline != "mean" and not isinstance(baseline, (int, float)):
            raise ValueError(f"baseline must be 'mean' or a number, got {baseline!r}")
        self.n_samples, self.kernel_width, self.alpha, self.scale, self.cell = n_samples, kernel_width, alpha, scale, cell
        self.baseline, self.perturbations_per_eval, self.seed = baseline, perturbations_per_eval, seed

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, *spatial) superpixel index of every pixel: Felzenszwalb segments of each image, or a volume's cells."""
        if images.ndim != 4:
            cells = grid_feature_mask(tuple(images.shape[2:]), self.cell, images.device)[0, 0]
            return cells.expand(images.shape[0], *cells.shape)
        # scikit-image's Felzenszwalb segmentation runs on the CPU, one image at a time (no GPU version)
        labels = [superpixels(image.transpose(1, 2, 0), self.scale) for image in images.detach().cpu().numpy()]
        return torch.as_tensor(np.stack(labels), dtype=torch.long, device=images.device)

    def coalitions(self, n_features: int, generator: torch.Generator) -> torch.Tensor:
        """(n_samples, n_features) 0/1 coalitions: all features kept, then each kept with probability 1/2."""
        drawn = (torch.rand(self.n_samples - 1, n_features, generator=generator) < 0.5).to(torch.float32)
        return torch.cat([torch.ones(1, n_features), drawn])

    def kernel(self, masks: torch.Tensor, n_features: torch.Tensor) -> torch.Tensor:
        """lime_image's weights of (B, n, M) coalitions, each image with its own number of features: the cosine
        distance to the all-kept coalition is ``1 - sqrt(k / M)`` for k kept features (1 for none)."""
        distance = 1.0 - (masks.sum(dim=2) / n_features[:, None]).sqrt()
        return torch.exp(-distance**2 / self.kernel_width**2).sqrt()

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        features = self.features(images)
        counts = features.flatten(1).amax(dim=1) + 1  # superpixels per image
        width = int(counts.max())
        masks = torch.zeros(images.shape[0], self.n_samples, width)  # features an image lacks stay 0: no weight
        for i, (n_features, generator) in enumerate(zip(counts.tolist(), image_generators(images, self.seed))):
            masks[i, :, :n_features] = self.coalitions(n_features, generator)
        masks = masks.to(images.device)
        fill = segment_means(images, features) if self.baseline == "mean" else float(self.baseline)
        scores = coalition_scores(scoring_function(model, self.output), images, features, masks, fill, target,
                                  budget_inputs(images, self.perturbations_per_eval))
        weights = self.kernel(masks, counts.to(masks.dtype))
        coefficients = weighted_ridge(masks, scores, weights, self.alpha).to(images.dtype)
        return coefficients.gather(1, features.flatten(1)).reshape(features.shape).unsqueeze(1)

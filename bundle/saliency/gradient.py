"""Gradient-family methods on captum: gradient, SmoothGrad, Integrated Gradients, Smooth IG, guided backprop."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import Saliency
from torch import nn

from bundle.saliency.base import (
    SaliencyMethod,
    image_generators,
    inputs_per_pass,
    require_relu_modules,
    scoring_function,
)


class Gradient(SaliencyMethod):
    """Gradient of the class score with respect to the input (GRAD; Simonyan et al. 2014), signed."""

    name = "grad"

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return Saliency(scoring_function(model, self.output)).attribute(images, target=target, abs=False)


class IntegratedGradients(SaliencyMethod):
    """Integrated Gradients (Sundararajan et al. 2017) from a baseline (a constant, 0 = black, or a tensor).

    ``internal_batch_size`` bounds how many interpolated images go through the
    network at once (the memory budget); ``None`` sizes passes by ``PASS_VOXELS``.

    Args:
        n_steps: integration points along the path from the baseline to the image (50, as published).
        baseline: where the path starts: a constant intensity (0.0, black) or a tensor of the images' shape.
        integration: captum's integration rule: ``gausslegendre`` (default) or ``riemann_left``, ``riemann_right``,
            ``riemann_middle``, ``riemann_trapezoid``.
        internal_batch_size: interpolated inputs per pass (``None``: sized by ``PASS_VOXELS``, at least the batch).
        output: the class score explained: ``logit`` (default) or ``probability`` (softmax).
    """

    name = "ig"
    published = {"n_steps": 50}

    def __init__(
        self,
        n_steps: int = 50,
        baseline: float | torch.Tensor = 0.0,
        integration: str = "gausslegendre",
        internal_batch_size: int | None = None,
        output: str = "logit",
    ) -> None:
        super().__init__(output)
        if n_steps < 1:
            raise ValueError(f"n_steps must be positive, got {n_steps}")
        self.n_steps, self.baseline, self.integration = n_steps, baseline, integration
        self.internal_batch_size = internal_batch_size

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ig = CaptumIG(scoring_function(model, self.output))
        return ig.attribute(
            images,
            baselines=self.baseline,
            target=target,
            n_steps=self.n_steps,
            method=self.integration,
            internal_batch_size=inputs_per_pass(images, self.internal_batch_size),
        )


class SmoothGrad(SaliencyMethod):
    """SmoothGrad (Smilkov et al. 2017): mean gradient over noisy copies of the input.

    The noise standard deviation is ``noise_level`` times each image's intensity
    range (PAIR's ``stdev_spread``, default 0.15); ``nt_samples_batch_size``
    noisy copies of every image share a pass. Own noise loop instead of captum's
    ``NoiseTunnel``, which draws one noise stream for the whole batch: here each
    image's noise comes from its own seeded generator, so its map does not
    depend on the other images in the batch.

    Args:
        nt_samples: noisy copies averaged per image (50, as published).
        noise_level: the noise standard deviation as a fraction of each image's intensity range (0.15, PAIR's
            ``stdev_spread``).
        nt_samples_batch_size: noisy copies of every image per pass (4; ``None``: all ``nt_samples`` at once).
        seed: seeds each image's noise (with the image's content), so a seed gives the same maps.
        output: the class score explained: ``logit`` (default) or ``probability`` (softmax).
    """

    name = "smoothgrad"
    published = {"nt_samples": 50, "noise_level": 0.15}

    def __init__(
        self, nt_samples: int = 50, noise_level: float = 0.15, nt_samples_batch_size: int | None = 4,
        seed: int = 0, output: str = "logit",
    ) -> None:
        super().__init__(output)
        if nt_samples < 1 or noise_level < 0:
            raise ValueError(f"need nt_samples >= 1 and noise_level >= 0, got {nt_samples}, {noise_level}")
        self.nt_samples, self.noise_level, self.nt_samples_batch_size, self.seed = (
            nt_samples, noise_level, nt_samples_batch_size, seed)

    def _base(self, model: nn.Module):
        return Saliency(scoring_function(model, self.output))

    def _base_kwargs(self, inputs: torch.Tensor) -> dict:
        return {"abs": False}

    def noisy_copies(self, images: torch.Tensor) -> Iterator[torch.Tensor]:
        """The noisy copies of a batch, ``nt_samples_batch_size`` per image at a time, as (k, B, *image shape);
        each image's noise comes from its own generator (seeded by the method's seed and the image)."""
        b, shape = images.shape[0], tuple(images.shape[1:])
        dims = tuple(range(1, images.ndim))
        detached = images.detach()
        sigma = self.noise_level * (detached.amax(dim=dims, keepdim=True) - detached.amin(dim=dims, keepdim=True))
        generators = image_generators(detached, self.seed)
        chunk = self.nt_samples_batch_size or self.nt_samples
        for start in range(0, self.nt_samples, chunk):
            k = min(chunk, self.nt_samples - start)
            noise = torch.stack([torch.randn((k, *shape), generator=g) for g in generators], dim=1).to(images.device)
            yield images[None] + noise * sigma[None]

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        base = self._base(model)
        total = torch.zeros_like(images)
        for noisy in self.noisy_copies(images):
            k = noisy.shape[0]
            flat = noisy.reshape(k * images.shape[0], *images.shape[1:])
            attributions = base.attribute(flat, target=target.repeat(k), **self._base_kwargs(flat))
            total += attributions.reshape(noisy.shape).sum(dim=0)
        return total / self.nt_samples


class SmoothIntegratedGradients(SmoothGrad):
    """Smooth IG (SIG): Integrated Gradients averaged over noisy copies of the input, as SmoothGrad does.

    Args:
        nt_samples: noisy copies averaged per image (20, as published).
        noise_level: the noise standard deviation as a fraction of each image's intensity range (0.15, PAIR's
            ``stdev_spread``).
        n_steps: integration points of each noisy copy's Integrated Gradients (20, as published).
        baseline: the constant intensity each path starts from (0.0, black).
        nt_samples_batch_size: noisy copies of every image per pass (4; ``None``: all ``nt_samples`` at once).
        internal_batch_size: interpolated inputs per Integrated Gradients pass (``None``: sized by ``PASS_VOXELS``,
            at least the inputs it integrates).
        seed: seeds each image's noise (with the image's content), so a seed gives the same maps.
        output: the class score explained: ``logit`` (default) or ``probability`` (softmax).
    """

    name = "smoothig"
    published = {"nt_samples": 20, "n_steps": 20, "noise_level": 0.15}

    def __init__(
        self, nt_samples: int = 20, noise_level: float = 0.15, n_steps: int = 20, baseline: float = 0.0,
        nt_samples_batch_size: int | None = 4, internal_batch_size: int | None = None, seed: int = 0,
        output: str = "logit",
    ) -> None:
        super().__init__(nt_samples, noise_level, nt_samples_batch_size, seed, output)
        self.n_steps, self.baseline, self.internal_batch_size = n_steps, baseline, internal_batch_size

    def _base(self, model: nn.Module):
        return CaptumIG(scoring_function(model, self.output))

    def _base_kwargs(self, inputs: torch.Tensor) -> dict:
        return {"n_steps": self.n_steps, "baselines": self.baseline,
                "internal_batch_size": inputs_per_pass(inputs, self.internal_batch_size)}


class GuidedBackprop(SaliencyMethod):
    """Guided backpropagation (Springenberg et al. 2015): only positive gradients pass each ReLU module.

    Works on ``nn.ReLU`` modules (MONAI DenseNet121, and InceptionV3 as
    ``bundle.networks`` builds it). ReLUs called as functions cannot be hooked:
    a model without any ``nn.ReLU`` is refused; one that mixes both is guided
    only at its modules.
    """

    name = "gbp"

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        require_relu_modules(model)
        return CaptumGuidedBackprop(scoring_function(model, self.output)).attribute(images, target=target)

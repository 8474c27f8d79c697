"""Gradient-family methods on captum: gradient, SmoothGrad, Integrated Gradients, Smooth IG, guided backprop."""

from __future__ import annotations

import torch
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import NoiseTunnel, Saliency
from torch import nn

from bundle.saliency.base import SaliencyMethod, scoring_function


class Gradient(SaliencyMethod):
    """Gradient of the class score with respect to the input (GRAD; Simonyan et al. 2014), signed."""

    name = "grad"

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return Saliency(scoring_function(model, self.output)).attribute(images, target=target, abs=False)


class IntegratedGradients(SaliencyMethod):
    """Integrated Gradients (Sundararajan et al. 2017) from a constant baseline (0 = black).

    ``internal_batch_size`` bounds how many interpolated images go through the
    network at once (the memory budget).
    """

    name = "ig"

    def __init__(
        self,
        n_steps: int = 50,
        baseline: float = 0.0,
        integration: str = "gausslegendre",
        internal_batch_size: int | None = 64,
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
            internal_batch_size=self.internal_batch_size,
        )


class SmoothGrad(SaliencyMethod):
    """SmoothGrad (Smilkov et al. 2017): mean gradient over noisy copies of the input.

    The noise standard deviation is ``noise_level`` times the input's intensity
    range (PAIR's ``stdev_spread``, default 0.15); ``nt_samples_batch_size``
    bounds how many noisy copies share a pass.
    """

    name = "smoothgrad"

    def __init__(
        self, nt_samples: int = 50, noise_level: float = 0.15, nt_samples_batch_size: int | None = 64,
        seed: int = 0, output: str = "logit",
    ) -> None:
        super().__init__(output)
        if nt_samples < 1 or noise_level < 0:
            raise ValueError(f"need nt_samples >= 1 and noise_level >= 0, got {nt_samples}, {noise_level}")
        self.nt_samples, self.noise_level, self.nt_samples_batch_size, self.seed = (
            nt_samples, noise_level, nt_samples_batch_size, seed)

    def _base(self, model: nn.Module):
        return Saliency(scoring_function(model, self.output))

    def _base_kwargs(self) -> dict:
        return {"abs": False}

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        spread = float(images.max() - images.min()) or 1.0
        with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
            torch.manual_seed(self.seed)
            return NoiseTunnel(self._base(model)).attribute(
                images, nt_type="smoothgrad", nt_samples=self.nt_samples,
                nt_samples_batch_size=self.nt_samples_batch_size, stdevs=self.noise_level * spread,
                target=target, **self._base_kwargs(),
            )


class SmoothIntegratedGradients(SmoothGrad):
    """Smooth IG (SIG): Integrated Gradients averaged over noisy copies of the input, as SmoothGrad does."""

    name = "smoothig"

    def __init__(
        self, nt_samples: int = 20, noise_level: float = 0.15, n_steps: int = 20, baseline: float = 0.0,
        nt_samples_batch_size: int | None = 4, seed: int = 0, output: str = "logit",
    ) -> None:
        super().__init__(nt_samples, noise_level, nt_samples_batch_size, seed, output)
        self.n_steps, self.baseline = n_steps, baseline

    def _base(self, model: nn.Module):
        return CaptumIG(scoring_function(model, self.output))

    def _base_kwargs(self) -> dict:
        return {"n_steps": self.n_steps, "baselines": self.baseline}


class GuidedBackprop(SaliencyMethod):
    """Guided backpropagation (Springenberg et al. 2015): only positive gradients pass each ReLU module.

    Works on ``nn.ReLU`` modules (MONAI DenseNet121); ReLUs called as functions
    (torchvision InceptionV3) are not guided, which :meth:`attribute` reports.
    """

    name = "gbp"

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not any(isinstance(m, nn.ReLU) for m in model.modules()):
            raise ValueError(f"{type(model).__name__} has no nn.ReLU modules: guided backpropagation cannot guide it")
        return CaptumGuidedBackprop(scoring_function(model, self.output)).attribute(images, target=target)

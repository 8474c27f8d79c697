"""Gradient-family methods on captum: vanilla gradient and Integrated Gradients."""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import Saliency
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

"""Saliency methods behind one interface, registered by the short names used in configs and tables."""

from __future__ import annotations

from bundle.saliency.attention import AttentionRollout, GradientWeightedRollout
from bundle.saliency.base import SaliencyMethod
from bundle.saliency.cam import GradCAM, GradCAMPlusPlus, GuidedGradCAM, ScoreCAM
from bundle.saliency.gradient import (
    ExpectedGradients,
    Gradient,
    GuidedBackprop,
    IntegratedGradients,
    ReferenceImages,
    SmoothGrad,
    SmoothIntegratedGradients,
    TrainingImages,
)
from bundle.saliency.inferer import SaliencyInferer
from bundle.saliency.lrp import LRP
from bundle.saliency.perturbation import KernelShap, Lime, Occlusion
from bundle.saliency.xrai import XRAI

METHODS: dict[str, type[SaliencyMethod]] = {
    cls.name: cls
    for cls in (
        Gradient, SmoothGrad, IntegratedGradients, SmoothIntegratedGradients, GradCAM, GradCAMPlusPlus, ScoreCAM,
        GuidedBackprop, GuidedGradCAM, XRAI, Occlusion, KernelShap, Lime, ExpectedGradients, LRP, AttentionRollout,
        GradientWeightedRollout,
    )
}


def get_method(name: str, **params) -> SaliencyMethod:
    """Build a registered saliency method by name, e.g. ``get_method("ig", n_steps=32)``."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown saliency method {name!r} (a name under methods); available: {sorted(METHODS)}") from None
    return cls(**params)


__all__ = ["METHODS", "ReferenceImages", "SaliencyInferer", "SaliencyMethod", "TrainingImages", "get_method"]

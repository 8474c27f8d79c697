"""Saliency methods behind one interface, registered by the short names used in configs and tables."""

from __future__ import annotations

from bundle.saliency.base import SaliencyMethod
from bundle.saliency.cam import GradCAM
from bundle.saliency.gradient import Gradient, IntegratedGradients
from bundle.saliency.inferer import SaliencyInferer

METHODS: dict[str, type[SaliencyMethod]] = {cls.name: cls for cls in (Gradient, IntegratedGradients, GradCAM)}


def get_method(name: str, **params) -> SaliencyMethod:
    """Build a registered saliency method by name, e.g. ``get_method("ig", n_steps=32)``."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown saliency method {name!r}; available: {sorted(METHODS)}") from None
    return cls(**params)


__all__ = ["METHODS", "SaliencyInferer", "SaliencyMethod", "get_method"]

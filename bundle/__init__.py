"""Saliency trust bundle: everything the configs instantiate."""

from bundle import criteria, data, handlers, models, networks, profiles, saliency, study, summary, tracking, trust

__version__ = "0.6.0"
__all__ = [
    "criteria", "data", "handlers", "models", "networks", "profiles", "saliency", "study", "summary", "tracking", "trust",
]

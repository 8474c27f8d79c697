"""Saliency trust bundle: everything the configs instantiate."""

from bundle import (criteria, data, handlers, mirror, models, networks, profiles, saliency, study, summary, switches,
                    tracking, trust)

__version__ = "0.6.0"
__all__ = [
    "criteria", "data", "handlers", "mirror", "models", "networks", "profiles", "saliency", "study", "summary",
    "switches", "tracking", "trust",
]

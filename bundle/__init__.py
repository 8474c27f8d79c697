"""Saliency trust bundle: everything the configs instantiate."""

from bundle import data, handlers, networks, saliency, study, tracking, trust

__version__ = "0.2.1"
__all__ = ["data", "handlers", "networks", "saliency", "study", "tracking", "trust"]

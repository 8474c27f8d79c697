"""Saliency trust bundle: everything the configs instantiate."""

from bundle import (criteria, data, distributed, errors, findings, handlers, inference, mirror, models, networks,
                    profiles, saliency, study, summary, switches, tracking, trust)

errors.install_excepthook()  # a failed `monai.bundle run` ends with its cause, not MONAI's wrapper

__version__ = "0.11.0"
__all__ = [
    "criteria", "data", "distributed", "errors", "findings", "handlers", "inference", "mirror", "models", "networks",
    "profiles", "saliency", "study", "summary", "switches", "tracking", "trust",
]

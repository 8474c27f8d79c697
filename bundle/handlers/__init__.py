"""Ignite handlers: a localisation metric handler, and the trust of a model's maps during training."""

from bundle.handlers.localization import LocalizationScore
from bundle.handlers.trust import EPOCH_TRUST_METRICS, EpochTrust

__all__ = ["EPOCH_TRUST_METRICS", "EpochTrust", "LocalizationScore"]

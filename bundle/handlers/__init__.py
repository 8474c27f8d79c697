"""Ignite handlers: a localisation metric handler, the trust of a model's maps during training, and the time an engine
waits for its batches."""

from bundle.handlers.data_time import DataTimer
from bundle.handlers.localization import LocalizationScore
from bundle.handlers.trust import EPOCH_TRUST_METRICS, EpochTrust

__all__ = ["EPOCH_TRUST_METRICS", "DataTimer", "EpochTrust", "LocalizationScore"]

"""Ignite handlers: localisation metric handlers and per-image record collection."""

from bundle.handlers.localization import LocalizationAUPRC, LocalizationScore
from bundle.handlers.records import PerImageRecords

__all__ = ["LocalizationAUPRC", "LocalizationScore", "PerImageRecords"]

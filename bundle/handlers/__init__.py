"""Ignite handlers: localisation metric handler for per-epoch evaluation."""

from bundle.handlers.localization import LocalizationScore

__all__ = ["LocalizationScore"]

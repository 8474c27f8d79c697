"""Trust criteria: pure functions of maps and masks, plus cumulative MONAI metric wrappers."""

from bundle.trust.baselines import PriorMap, RandomMap, mean_mask
from bundle.trust.localization import (
    LocalizationAUPRCMetric,
    LocalizationMetric,
    auprc,
    average_precision,
    pointing_game,
    relevance_mass,
)
from bundle.trust.normalization import normalize_maps
from bundle.trust.stats import Summary, bootstrap_summary

__all__ = [
    "LocalizationAUPRCMetric", "LocalizationMetric", "PriorMap", "RandomMap", "Summary", "auprc",
    "average_precision", "bootstrap_summary", "mean_mask", "normalize_maps", "pointing_game", "relevance_mass",
]

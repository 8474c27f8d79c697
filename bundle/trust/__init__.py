"""Trust criteria: pure functions of maps and masks, plus cumulative MONAI metric wrappers."""

from bundle.trust.baselines import EdgeMap, OracleMap, PriorMap, RandomMap, mean_mask
from bundle.trust.localization import (
    LOCALIZATION_METRICS,
    LocalizationMetric,
    auprc,
    average_precision,
    binarize,
    dice,
    hit,
    iou,
    localization_scores,
    mass_accuracy,
)
from bundle.trust.normalization import normalize_maps
from bundle.trust.similarity import spearman
from bundle.trust.stats import PairedComparison, Summary, bootstrap_summary, holm, paired_comparison

__all__ = [
    "LOCALIZATION_METRICS", "EdgeMap", "LocalizationMetric", "OracleMap", "PairedComparison", "PriorMap",
    "RandomMap", "Summary", "auprc", "average_precision", "binarize", "bootstrap_summary", "dice", "hit", "holm",
    "iou", "localization_scores", "mass_accuracy", "mean_mask", "normalize_maps", "paired_comparison", "spearman",
]

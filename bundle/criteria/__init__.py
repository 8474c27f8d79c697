"""Trust criteria, one module each, registered by the names used in configs, tables and MLflow keys.

Adding a criterion is a new module here plus an entry in ``configs/evaluate.json``'s ``criteria``.
"""

from __future__ import annotations

from bundle.criteria.agreement import Repeatability, Reproducibility
from bundle.criteria.architecture import ArchitectureLocalization
from bundle.criteria.base import FAIL, INCONCLUSIVE, PASS, RECORD_COLUMNS, Criterion, Record
from bundle.criteria.context import StudyContext
from bundle.criteria.faithfulness import Faithfulness
from bundle.criteria.fidelity import FidelityToPublished
from bundle.criteria.lesion_reliance import LesionReliance
from bundle.criteria.localization import Localization
from bundle.criteria.psc import PredictionSaliencyCorrelation
from bundle.criteria.randomization import CascadingRandomization, LabelRandomization

CRITERIA: dict[str, type[Criterion]] = {
    cls.name: cls for cls in (Localization, FidelityToPublished, LesionReliance, CascadingRandomization,
                              LabelRandomization, Repeatability, Reproducibility, Faithfulness,
                              PredictionSaliencyCorrelation, ArchitectureLocalization)
}


def get_criterion(name: str, **settings) -> Criterion:
    """Build a registered criterion by name, e.g. ``get_criterion("localization", binarize="bbox")``."""
    try:
        cls = CRITERIA[name]
    except KeyError:
        raise ValueError(f"unknown criterion {name!r} (a name under criteria); available: {sorted(CRITERIA)}") from None
    return cls(**settings)


__all__ = [
    "CRITERIA", "FAIL", "INCONCLUSIVE", "PASS", "RECORD_COLUMNS", "ArchitectureLocalization", "CascadingRandomization",
    "Criterion", "Faithfulness", "FidelityToPublished", "LabelRandomization", "LesionReliance", "Localization",
    "PredictionSaliencyCorrelation", "Record", "Repeatability", "Reproducibility", "StudyContext", "get_criterion",
]

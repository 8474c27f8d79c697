"""The one value a study produces: the report, the figures, the files and the MLflow run are each made from it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class StudyResult:
    """Everything one study found and how to present it.

    Args:
        title: the report's first line (model, dataset, split, images, target class).
        summary: one row per (model, method, criterion, metric, step): mean, bootstrap CI, n, NaN count.
        verdicts: one row per (criterion, method): verdict, rule, calibration, stability, images needed.
        order: the map sources in the order their rows are shown (methods, baselines, references).
        kinds: each source's kind (``method``, ``baseline``, ``reference``).
        headlines: each criterion's headline metric (its cell in the verdict table).
        notes: each criterion's settings line.
        records: the per-image records the summary and verdicts were computed from.
        comparisons: every paired test, with its Holm-adjusted p-value.
        failures: the sources and criteria not scored, each with its reason.
        aucs: each model's classification AUC on the labelled validation images.
        seconds: each criterion's time.
        tabled: the metrics of each criterion's table (all when missing).
        data_issues: the study images skipped or repaired where they entered, by action and reason.
        trust: the calibration the verdicts rest on and the settings behind their stability and power hints
            (``None``: no section).
        replicate: whether each verdict is given again with the next seed's model (``None``: not replicated).
        timing: the study's seconds up to its report beside the floor of its network passes
            (:mod:`bundle.passes`: ``measured_s``, ``floor_s``, ``images`` by kind, ``per_image_s``; ``None``: not
            measured).
        figures: caption -> PNG of every figure drawn (filled when the study saves its outputs).
        paths: every file the study wrote (filled when it saves its outputs).
    """

    title: str
    summary: pd.DataFrame
    verdicts: pd.DataFrame
    order: Sequence[str]
    kinds: Mapping[str, str]
    headlines: Mapping[str, str]
    notes: Mapping[str, str] = field(default_factory=dict)
    records: pd.DataFrame = field(default_factory=pd.DataFrame)
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)
    failures: Sequence[Mapping] = field(default_factory=list)
    aucs: Mapping[str, float] = field(default_factory=dict)
    seconds: Mapping[str, float] = field(default_factory=dict)
    tabled: Mapping[str, Sequence[str] | None] = field(default_factory=dict)
    data_issues: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    trust: Mapping | None = None
    replicate: pd.DataFrame | None = None
    timing: Mapping | None = None
    figures: dict[str, Path] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)

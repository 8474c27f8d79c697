"""Ignite metric handlers for localisation scores, as MONAI wraps its metrics (e.g. ``ROCAUC``).

Attach one to an evaluator whose inferer returns saliency maps
(``bundle.saliency.SaliencyInferer``) and whose output holds the ground-truth
mask; the value lands in ``engine.state.metrics`` (so ``StatsHandler`` and
``MLFlowHandler`` log it) and the per-image values in ``engine.state.metric_details``.
"""

from __future__ import annotations

from collections.abc import Callable

from monai.handlers.ignite_metric import IgniteMetricHandler

from bundle.trust.localization import LocalizationAUPRCMetric, LocalizationMetric


class LocalizationScore(IgniteMetricHandler):
    """Mean per-image localisation ``score`` (auprc, ap, hit, mass) of (maps, masks) over an epoch."""

    def __init__(
        self, score: str = "auprc", normalization: str = "pair", output_transform: Callable = lambda x: x
    ) -> None:
        super().__init__(
            metric_fn=LocalizationMetric(score, normalization), output_transform=output_transform, save_details=True
        )


class LocalizationAUPRC(IgniteMetricHandler):
    """Mean per-image localisation AUPRC (trapezoid over the PR curve) of (maps, masks) over an epoch."""

    def __init__(self, normalization: str = "pair", output_transform: Callable = lambda x: x) -> None:
        super().__init__(
            metric_fn=LocalizationAUPRCMetric(normalization), output_transform=output_transform, save_details=True
        )

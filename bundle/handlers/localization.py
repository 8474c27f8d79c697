"""An Ignite metric handler for localisation scores, as MONAI wraps its metrics (e.g. ``ROCAUC``).

Attach one to an evaluator whose inferer returns saliency maps
(``bundle.saliency.SaliencyInferer``) and whose output holds the ground-truth
mask; the value lands in ``engine.state.metrics`` (so ``StatsHandler`` and
``MLFlowHandler`` log it) and the per-image values in ``engine.state.metric_details``.
"""

from __future__ import annotations

from collections.abc import Callable

from monai.handlers.ignite_metric import IgniteMetricHandler

from bundle.trust.localization import LocalizationMetric


class LocalizationScore(IgniteMetricHandler):
    """Mean per-image localisation ``score`` (auprc, ap, hit, mass, iou, dice) of (maps, masks) over an epoch.

    Args:
        score: which score of :data:`bundle.trust.LOCALIZATION_METRICS`.
        normalization: ``pair``, ``minmax`` or ``sum_to_one`` (TRUST_METRICS section 0).
        signed: whether the maps are signed attributions (folded by ``|.|`` under ``pair``) or ranking maps.
        binarize: binarisation behind ``iou`` and ``dice`` (``otsu``, ``threshold:t``, ``topk:p``, ``bbox``).
        true_positive_only: IoU and Dice are NaN when either mask is empty (cheXlocalize).
        output_transform: picks (maps, masks) from the engine output.
    """

    def __init__(
        self, score: str = "auprc", normalization: str = "pair", signed: bool = True, binarize: str = "otsu",
        true_positive_only: bool = True, output_transform: Callable = lambda x: x,
    ) -> None:
        metric = LocalizationMetric(score, normalization, signed, binarize, true_positive_only)
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=True)

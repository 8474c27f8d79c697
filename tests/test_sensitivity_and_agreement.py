"""The randomisation and agreement criteria: which models they need, and their verdicts from records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bundle.criteria import CascadingRandomization, LabelRandomization, Repeatability, Reproducibility, get_criterion
from bundle.criteria.agreement import SECOND_READER
from bundle.criteria.randomization import UNRELATED
from bundle.models import ModelSpec
from bundle.study import SaliencyStudy
from bundle.summary import adjust_across_grid, summarise

PRIMARY = ModelSpec("densenet121", 0)
KINDS = {"grad": "method", "gbp": "method", "edge": "baseline", "random": "baseline"}


def _rows(criterion, method, metric, step, values, model="densenet121_seed0", ids=None):
    ids = ids or [f"img{i}" for i in range(len(values))]
    return [{"image_id": i, "model": model, "method": method, "criterion": criterion, "metric": metric,
             "step": step, "value": v} for i, v in zip(ids, values)]


def test_models_each_criterion_needs_and_a_study_without_them_trains_none():
    assert CascadingRandomization(["densenet121", "inception_v3"]).models(PRIMARY) == [
        PRIMARY, ModelSpec("inception_v3", 0)]
    assert LabelRandomization().models(PRIMARY) == [PRIMARY, ModelSpec("densenet121", 0, permuted_labels=True)]
    assert ModelSpec("densenet121", 0, permuted_labels=True).name == "densenet121_seed0_permuted_labels"
    assert Repeatability().models(PRIMARY) == [PRIMARY, ModelSpec("densenet121", 1)]
    assert Reproducibility().models(PRIMARY) == [PRIMARY, ModelSpec("inception_v3", 0)]
    with pytest.raises(ValueError, match="must differ"):
        Repeatability(other={"seed": 0}).models(PRIMARY)

    def study(*names):
        criteria = {n: get_criterion(n) for n in names}
        return SaliencyStudy(None, {"architecture": "densenet121", "seed": 0}, None, {"grad": object()}, {},
                             criteria, "out", "sqlite://", "e", "r", "models")

    assert study("localization").required_models() == [PRIMARY]
    everything = study("localization", "cascading_randomization", "label_randomization", "repeatability",
                       "reproducibility")
    assert [s.name for s in everything.required_models()] == [
        "densenet121_seed0", "densenet121_seed0_permuted_labels", "densenet121_seed1", "inception_v3_seed0"]


def test_cascade_verdicts_follow_the_one_sided_t_test_against_unrelated_pairs():
    criterion = CascadingRandomization(["densenet121"])
    name = criterion.name
    rows = []
    # grad: the randomised maps drift away from the trained ones, ending well below the unrelated-pairs baseline
    rows += _rows(name, "grad", "ssim", "cascading:class_layers", [0.5, 0.55, 0.45, 0.5, 0.52])
    rows += _rows(name, "grad", "ssim", "cascading:conv0", [0.05, 0.1, 0.08, 0.02, 0.06])
    rows += _rows(name, "grad", UNRELATED, "trained", [0.3, 0.35, 0.25, 0.3], ids=["a|b", "a|c", "b|c", "c|d"])
    # gbp: stays at the baseline level (not below it)
    rows += _rows(name, "gbp", "ssim", "cascading:class_layers", [0.9, 0.95, 0.85, 0.9, 0.92])
    rows += _rows(name, "gbp", "ssim", "cascading:conv0", [0.31, 0.29, 0.33, 0.3, 0.32])
    rows += _rows(name, "gbp", UNRELATED, "trained", [0.3, 0.3], ids=["a|b", "a|c"])
    # edge: ignores the model, SSIM 1 at every step
    rows += _rows(name, "edge", "ssim", "cascading:class_layers", [1.0] * 5)
    rows += _rows(name, "edge", "ssim", "cascading:conv0", [1.0] * 5)
    rows += _rows(name, "edge", UNRELATED, "trained", [0.4, 0.5], ids=["a|b", "a|c"])
    records = pd.DataFrame(rows)
    comparisons = adjust_across_grid(criterion.comparisons(records, KINDS, 200, 0))
    last = comparisons[comparisons.decides]
    assert set(last.step) == {"cascading:conv0"} and comparisons.p_holm[~comparisons.in_grid].isna().all()
    # Holm's family is the methods' deciding tests; the baseline's sanity row keeps its raw p
    assert set(comparisons[comparisons.in_grid].method) == {"grad", "gbp"} and (comparisons.n_tests == 2).all()
    grad = last[last.method == "grad"].iloc[0]
    from scipy import stats

    expected = stats.ttest_1samp([0.05, 0.1, 0.08, 0.02, 0.06], 0.3, alternative="less").pvalue
    assert grad.p_value == pytest.approx(expected, rel=1e-10) and grad.baseline_value == pytest.approx(0.3)
    verdicts = criterion.verdicts(summarise(records, KINDS, 200), comparisons).set_index("method")
    assert verdicts.verdict.to_dict() == {"grad": "PASS", "gbp": "FAIL", "edge": "FAIL"}
    assert "below the unrelated-pairs baseline" in verdicts.rule["grad"]
    assert ", p_Holm " in verdicts.rule["grad"] and "t-test p 1) FAIL" in verdicts.rule["edge"]
    # independent randomisation has no fully randomised step: reported, not judged
    independent = CascadingRandomization(["densenet121"], mode="independent")
    rows = records.assign(criterion=independent.name, step=records.step.str.replace("cascading", "independent"))
    judged = independent.verdicts(summarise(rows, KINDS, 200),
                                  adjust_across_grid(independent.comparisons(rows, KINDS, 200, 0)))
    assert set(judged.verdict) == {"INCONCLUSIVE"} and "one block at a time" in judged.rule.iloc[0]


def test_a_cascade_that_stops_before_the_input_block_is_refused():
    with pytest.raises(ValueError, match="must end at 'conv0'"):
        CascadingRandomization(["densenet121"], steps={"densenet121": ["class_layers", "denseblock4"]})
    assert Reproducibility().models(ModelSpec("inception_v3", 2))[1] == ModelSpec("densenet121", 2)


def test_agreement_verdicts_weak_strong_and_against_the_random_baseline():
    criterion = Repeatability(min_images=3)
    name = criterion.name
    ids = [f"img{i}" for i in range(8)]
    good = [0.7, 0.75, 0.8, 0.72, 0.68, 0.77, 0.74, 0.71]
    poor = [0.2, 0.25, 0.3, 0.22, 0.18, 0.27, 0.24, 0.21]
    rows = _rows(name, "grad", "iou", "trained", good, ids=ids) + _rows(name, "gbp", "iou", "trained", poor, ids=ids)
    rows += _rows(name, "random", "iou", "trained", [v - 0.3 for v in good], ids=ids)
    rows += _rows(name, SECOND_READER, "iou", "trained", [0.9] * 8, ids=ids)
    records = pd.DataFrame(rows)
    comparisons = adjust_across_grid(criterion.comparisons(records, KINDS, 200, 0))
    assert set(comparisons.test) == {"weak", "strong", "baseline"}
    assert set(comparisons.method) == {"grad", "gbp"}  # the random baseline is compared against, not judged
    verdicts = criterion.verdicts(summarise(records, KINDS, 200), comparisons).set_index("method")
    assert verdicts.verdict.to_dict() == {"grad": "PASS", "gbp": "FAIL"}
    assert "strong: FAILS, significantly below the readers' 0.900" in verdicts.rule["grad"]
    assert "vs random: diff +0.300" in verdicts.rule["grad"]
    # no second reader: the strong rule cannot be tested and says so
    without = adjust_across_grid(criterion.comparisons(records[records.method != SECOND_READER], KINDS, 200, 0))
    rule = criterion.verdicts(summarise(records, KINDS, 200), without).set_index("method").rule["grad"]
    assert "strong: no second reader in this data" in rule
    assert np.isfinite(without.p_holm).all()

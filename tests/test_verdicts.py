"""How far a verdict can be trusted: stability over bootstrap resamples of the images, the images an INCONCLUSIVE
would need, and a calibration's mark on the verdicts (records only: no model, no map)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bundle.calibration import control_fingerprints
from bundle.criteria import get_criterion
from bundle.criteria.lesion_reliance import LesionReliance
from bundle.trust.stats import (
    WILCOXON_EFFICIENCY, clopper_pearson, images_for_correlation, images_for_mean_test, images_for_sign_test,
    one_sample_test, paired_comparison, signed_rank_p,
)
from bundle.verdicts import (
    CALIBRATION_SUFFIX, ImageResampler, apply_calibration, calibration_status, judge, latest_calibration,
    verdict_stability,
)


def _rows(criterion, method, metric, values, step="trained", model="m"):
    return [{"image_id": f"img{i}", "model": model, "method": method, "criterion": criterion, "metric": metric,
             "step": step, "value": float(v)} for i, v in enumerate(values)]


def _lesion(higher) -> tuple[dict, pd.DataFrame]:
    criterion = LesionReliance("synthetic", "unused", transform=None)
    rows = _rows("lesion_reliance", "model", "positive_higher", higher)
    rows += _rows("lesion_reliance", "model", "logit_difference", [1.0 if h else -1.0 for h in higher])
    return {"lesion_reliance": criterion}, pd.DataFrame(rows)


def test_stability_of_a_sign_test_verdict_equals_the_binomial_share_computed_by_hand():
    """7 of 8 positives above their twins: PASS (one-sided sign test p = 9/256). A resample keeps PASS exactly when
    it draws the one tie-breaking image at most once: P = (7/8)^8 + 8 (1/8) (7/8)^7 = 0.7361."""
    criteria, records = _lesion([1, 1, 1, 1, 1, 1, 1, 0])
    verdicts = judge(criteria, records, {}, 200, 0).verdicts
    assert verdicts.verdict.tolist() == ["PASS"]
    share = verdict_stability(criteria, records, {}, verdicts, n_resamples=400, seed=0).stability.item()
    by_hand = (7 / 8) ** 8 + 8 * (1 / 8) * (7 / 8) ** 7
    assert share == pytest.approx(by_hand, abs=3 * np.sqrt(by_hand * (1 - by_hand) / 400))
    all_above, records_above = _lesion([1] * 8)
    stable = verdict_stability(all_above, records_above, {}, judge(all_above, records_above, {}, 200, 0).verdicts,
                               n_resamples=50)
    assert stable.stability.item() == 1.0 and not stable.unstable.item()
    again = verdict_stability(criteria, records, {}, verdicts, n_resamples=50, seed=3)
    assert again.equals(verdict_stability(criteria, records, {}, verdicts, n_resamples=50, seed=3)), "seeded"
    assert again.unstable.item() == (again.stability.item() < 0.8)


def test_a_resample_draws_whole_images_and_keeps_them_paired():
    """Every record of a drawn image is copied under the draw's number: two sources of one draw stay paired, pair
    records (the unrelated-pairs baseline) are drawn among themselves, and the draw is the rng's."""
    records = pd.DataFrame(_rows("localization", "grad", "auprc", [1, 2, 3, 4])
                           + _rows("localization", "prior", "auprc", [10, 20, 30, 40])
                           + [{"image_id": "img0|img1", "model": "m", "method": "grad", "criterion": "localization",
                               "metric": "unrelated_ssim", "step": "trained", "value": 7.0}])
    resampled = ImageResampler(records).resample(np.random.default_rng(5))
    drawn = np.random.default_rng(5).integers(0, 4, 4)  # the images' draw comes first
    wide = resampled[resampled.metric == "auprc"].pivot(index="image_id", columns="method", values="value")
    assert wide.grad.tolist() == [float(d + 1) for d in drawn]
    assert (wide.prior == 10 * wide.grad).all(), "the two sources of a drawn image stay paired"
    assert resampled[resampled.metric == "unrelated_ssim"].value.tolist() == [7.0]


def test_judging_the_deciding_records_gives_the_verdicts_of_all_records():
    rng = np.random.default_rng(0)
    rows = []
    prior = rng.uniform(0.2, 0.4, 12)
    wobble = np.where(np.arange(12) % 2, 1, -1) * rng.uniform(0.001, 0.01, 12)  # signs alternate: no direction
    for method, values in (("grad", prior + 0.3 + wobble), ("gbp", prior + wobble), ("prior", prior),
                           ("random", prior - 0.1)):
        for metric in ("auprc", "hit", "iou"):
            rows += _rows("localization", method, metric, values)
    records = pd.DataFrame(rows)
    criteria = {"localization": get_criterion("localization")}
    kinds = {"grad": "method", "gbp": "method", "prior": "baseline", "random": "baseline"}
    full = judge(criteria, records, kinds, 200, 0)
    fast = judge(criteria, criteria["localization"].deciding(records), kinds, 200, 0, intervals=False)
    assert fast.verdicts.verdict.tolist() == full.verdicts.verdict.tolist() == ["PASS", "INCONCLUSIVE"]
    assert fast.comparisons.p_holm.tolist() == full.comparisons.p_holm.tolist()
    assert fast.comparisons.ci_low.isna().all() and full.comparisons.ci_low.notna().all()


def test_images_needed_equal_the_hand_computed_normal_approximations():
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)  # 1.959964 + 0.841621
    assert images_for_mean_test(0.5, 1.0, 0.05, sides=2) == np.ceil((z * 2) ** 2) == 32
    assert images_for_mean_test(0.5, 1.0, 0.05, sides=2, efficiency=WILCOXON_EFFICIENCY) == 33  # 31.39 / 0.9549
    assert images_for_mean_test(-0.5, 1.0, 0.05, sides=2, family=10) == np.ceil(
        ((stats.norm.ppf(1 - 0.05 / 20) + stats.norm.ppf(0.8)) * 2) ** 2)  # Bonferroni over the Holm family
    assert images_for_mean_test(0.0, 1.0, 0.05) == np.inf
    assert images_for_correlation(0.3, 0.5, 0.05) == np.ceil((z / (np.arctanh(0.5) - np.arctanh(0.3))) ** 2 + 3) == 140
    assert images_for_sign_test(0.8, 0.05) == 15  # ((1.6449 x 0.5 + 0.8416 x 0.4) / 0.3)^2 = 14.93
    assert images_for_sign_test(0.5, 0.05) == np.inf


def test_a_one_sample_t_test_at_the_images_needed_rejects_with_about_80_percent_power():
    n = int(images_for_mean_test(0.3, 1.0, 0.05, sides=1))
    draws = np.random.default_rng(1).normal(0.3, 1.0, size=(4000, n))
    power = np.mean([one_sample_test(d, 0.0, "greater").p_value < 0.05 for d in draws])
    assert power == pytest.approx(0.8, abs=0.03)


def test_fast_tests_equal_scipy():
    rng = np.random.default_rng(2)
    for alternative in ("less", "greater"):
        values = rng.normal(0.2, 0.5, 9)
        ours, scipys = one_sample_test(values, 0.1, alternative), stats.ttest_1samp(values, 0.1, alternative=alternative)
        assert ours.p_value == pytest.approx(scipys.pvalue, rel=1e-12)
        assert ours.statistic == pytest.approx(scipys.statistic, rel=1e-12)
    for _ in range(20):  # ties among at most 13 differences: scipy's exhaustive permutation test
        d = rng.choice([-2.0, -1.0, 0.5, 1.0, 1.5, 3.0], rng.integers(3, 14))
        assert signed_rank_p(d, stats.rankdata(np.abs(d))) == pytest.approx(stats.wilcoxon(d).pvalue, rel=1e-12)
    c = paired_comparison([1, 2, 3, 5], [0, 0, 0, 0])
    assert c.sd_diff == pytest.approx(np.std([1, 2, 3, 5], ddof=1))


def test_clopper_pearson_by_its_beta_quantiles():
    low, high = clopper_pearson(1, 20)
    assert low == pytest.approx(stats.beta.ppf(0.025, 1, 20), rel=1e-9)
    assert high == pytest.approx(stats.beta.ppf(0.975, 2, 19), rel=1e-9)
    assert clopper_pearson(0, 20) == (0.0, pytest.approx(1 - 0.025 ** (1 / 20), rel=1e-9))


def test_an_uncalibrated_criterion_makes_its_verdicts_inconclusive_by_rule(tmp_path):
    criteria = {"localization": get_criterion("localization"), "psc": get_criterion("psc")}
    params = {"dataset": "synthetic"}
    controls = control_fingerprints((0.25, 0.5), (0.5,))
    record = {"date": "2026-12-05T10:00:00", "params": {"dataset": "synthetic"}, "controls": controls,
              "settings": {n: repr(c) for n, c in criteria.items()},
              "criteria": [{"criterion": "localization", "calibrated": True, "why": "every control as expected"},
                           {"criterion": "psc", "calibrated": False, "why": "prediction tracking: PASS in 0.40"}]}
    (tmp_path / f"old{CALIBRATION_SUFFIX}").write_text(json.dumps({**record, "date": "2026-12-01T00:00:00",
                                                                   "criteria": []}))
    (tmp_path / f"new{CALIBRATION_SUFFIX}").write_text(json.dumps(record))
    (tmp_path / f"broken{CALIBRATION_SUFFIX}").write_text("{")
    found, path = latest_calibration(tmp_path)
    assert path.name == f"new{CALIBRATION_SUFFIX}", "the newest by date; a broken file is not a calibration"
    status = calibration_status(found, criteria, params, controls)
    assert status == {"localization": {"calibrated": True, "why": "every control as expected"},
                      "psc": {"calibrated": False, "why": "prediction tracking: PASS in 0.40"}}
    other = calibration_status(found, {"psc": get_criterion("psc", n_images=64)}, params, controls)
    assert other["psc"]["calibrated"] is None and "other settings" in other["psc"]["why"]
    assert calibration_status(None, criteria, params, None)["psc"]["calibrated"] is None
    # a calibration made before PSC's graded control was repaired (0.18.0) vouches for the other criteria only
    old = {**controls, "psc": [line.replace("prediction_tracking(logit_noise=0.25, seed=1000)",
                                            "degraded(prediction_tracking(), noise=0.25, seed=1000)")
                               for line in controls["psc"]]}
    assert old["psc"] != controls["psc"]
    stale = calibration_status({**found, "controls": old}, criteria, params, controls)
    assert stale["localization"] == status["localization"] and stale["psc"] == {
        "calibrated": None, "why": "calibrated with controls that have changed since (an earlier version's): run "
                                   "calibrate again"}
    unrecorded = calibration_status({k: v for k, v in found.items() if k != "controls"}, criteria, params, controls)
    assert {v["calibrated"] for v in unrecorded.values()} == {None}, "a calibration that recorded no controls"
    verdicts = pd.DataFrame([{"criterion": "localization", "method": "grad", "verdict": "PASS", "rule": "r1",
                              "images_needed": np.nan},
                             {"criterion": "psc", "method": "grad", "verdict": "FAIL", "rule": "r2",
                              "images_needed": np.nan}])
    marked = apply_calibration(verdicts, status)
    assert marked.verdict.tolist() == ["PASS", "INCONCLUSIVE"] and marked.calibrated.tolist() == [True, False]
    assert marked.rule[1] == "uncalibrated criterion (prediction tracking: PASS in 0.40): its rule alone said FAIL: r2"


def test_the_calibration_console_table_prints_every_label_whole():
    """``run calibrate``'s table: a graded level's label is printed whole (it lost its last digit at 30 characters,
    so 0.25 read as 0.2), the columns aligned under the header."""
    from bundle.report.tables import format_calibration

    row = {"criterion": "psc", "model": "study", "expected": "graded", "pass_rate": 1.0, "pass_low": 0.8315665,
           "pass_high": 1.0, "fail": 0, "inconclusive": 0, "score": 0.99987, "met": None}
    record = {"date": "2026-12-06T23:30:00", "draws": 20, "power_target": 0.8, "family": 1, "seconds": 23.4,
              "table": [{**row, "label": "prediction tracking+noise@0.25"}, {**row, "label": "random", "met": True,
                                                                             "expected": "FAIL", "score": 0.131}],
              "criteria": []}
    lines = format_calibration(record).splitlines()
    assert lines[2].startswith("criterion               control                         model      expected")
    assert lines[4] == ("psc                     prediction tracking+noise@0.25  study      graded    "
                        "1.00 [0.83, 1.00]          0        0    1.000")
    assert lines[5].endswith("FAIL      1.00 [0.83, 1.00]          0        0    0.131  yes")


def test_the_report_says_what_the_verdicts_rest_on_and_what_would_decide_them():
    """The report's section: the calibration's lines for the criteria it covers, the unstable verdicts, and each
    INCONCLUSIVE's images as the override (the study's images widened when a criterion needs more than them)."""
    from bundle.report.tables import trust_lines

    verdicts = pd.DataFrame([
        {"criterion": "psc", "method": "grad", "verdict": "INCONCLUSIVE", "rule": "r", "images_needed": 120.0,
         "stability": 0.6, "unstable": True, "calibrated": True},
        {"criterion": "localization", "method": "grad", "verdict": "INCONCLUSIVE", "rule": "r",
         "images_needed": np.inf, "stability": 0.9, "unstable": False, "calibrated": None},
        {"criterion": "psc", "method": "ig", "verdict": "PASS", "rule": "r", "images_needed": np.nan,
         "stability": 1.0, "unstable": False, "calibrated": True}])
    record = {"date": "2026-12-05T10:00:00", "draws": 20, "family": 108, "criteria": [
        {"criterion": "psc", "calibrated": True, "why": "every control as expected", "false_pass_rate": 0.0,
         "false_pass_high": 0.17, "power": 1.0, "power_low": 0.83, "spearman:prediction tracking+noise": -0.94,
         "resolution:prediction tracking+noise": 0.25}]}
    lines = trust_lines(verdicts, {
        "record": record, "file": "/out/cal_calibration.json", "image_settings": {"psc": "saliency#psc_images"},
        "status": {"psc": {"calibrated": True, "why": "every control as expected"},
                   "localization": {"calibrated": None, "why": "not calibrated"},
                   "faithfulness": {"calibrated": None, "why": "calibrated with controls that have changed since (an "
                                                               "earlier version's): run calibrate again"}},
        "stability_resamples": 200, "study_images": 64})
    text = "\n".join(lines)
    assert lines[1] == "Can these verdicts be trusted?"
    assert ("Calibration: cal_calibration.json, 2026-12-05T10:00:00, 20 draws, each control judged as one of the "
            "study's 108 tests (every control's row: cal_calibration.txt)") in text
    assert ("  psc                      calibrated      false-PASS at most 0.00 [0.00, 0.17], power at least 1.00 "
            "[0.83, 1.00]; prediction tracking+noise: Spearman with the level -0.94, PASS lost at 0.25") in lines
    assert "Not calibrated for these settings (localization)" in text
    assert "  faithfulness             calibrated with controls that have changed since (an earlier version's): run " \
           "calibrate again" in lines
    assert "2 of 3 verdicts are stable" in text and "  psc                      grad         INCONCLUSIVE  0.60" in lines
    assert "  psc                      grad         about 120 images: --saliency#psc_images 120 --saliency#n_images " \
           "120" in lines
    assert "  localization             grad         no effect observed: more images would not decide it" in lines

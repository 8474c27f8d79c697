"""The study on a small model in-process: records keyed by image id, NaN counted and named, a failing method
reported while the study goes on, verdicts from Holm-adjusted paired tests, outputs on disk and in MLflow."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from warm_python import run_python

from bundle.criteria import CascadingRandomization, FidelityToPublished, Localization
from bundle.errors import last_line
from bundle.saliency import get_method
from bundle.study import SaliencyStudy
from bundle.tracking import sqlite_uri
from bundle.trust import OracleMap, PriorMap, RandomMap

ROOT = Path(__file__).resolve().parents[1]


class SpotNet(nn.Module):
    """Class 1 logit = mean of a conv response: gradients and CAMs concentrate where the image is bright."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


class MisshapenMap:
    """A map source that returns maps on the wrong grid (an extra axis)."""

    def __repr__(self) -> str:
        return "misshapen()"

    def __call__(self, model, images, target):
        return torch.rand(images.shape[0], 2, *images.shape[2:])


class ConstantMap:
    """A map source whose maps carry nothing: every score of it is undefined (``value`` 0: not even mass)."""

    signed = False

    def __init__(self, value: float = 1.0) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"constant({self.value})"

    def __call__(self, model, images, target):
        return torch.full((images.shape[0], *images.shape[2:]), self.value)


def make_batches(n: int = 10, size: int = 24, order=None) -> list[dict]:
    """Images with a bright square lesion and its mask; image 3 has an empty mask (no lesion drawn)."""
    g = torch.Generator().manual_seed(0)
    images, masks = 0.2 * torch.rand(n, 1, size, size, generator=g), torch.zeros(n, 1, size, size)
    for i in range(n):
        if i == 3:
            continue
        y, x = 2 + 3 * (i % 5), 2 + 2 * (i % 7)
        images[i, 0, y : y + 6, x : x + 6] += 0.8
        masks[i, 0, y : y + 6, x : x + 6] = 1
    ids = [f"img{i:02d}" for i in range(n)]
    order = list(order if order is not None else range(n))
    return [{"image": images[order[i : i + 4]], "mask": masks[order[i : i + 4]],
             "image_id": [ids[j] for j in order[i : i + 4]]} for i in range(0, n, 4)]


def make_study(tmp_path, batches, methods=None, run_name="study", criteria=None,
               stability_resamples=20, cache=True) -> SaliencyStudy:
    """A study of SpotNet; 20 stability resamples (the study's 200 took 4 s of every study here): these tests read
    the stability column, tests/test_verdicts.py checks its values by hand."""
    net = SpotNet()
    (tmp_path / "models").mkdir(parents=True, exist_ok=True)
    if not (tmp_path / "models" / "spotnet_seed0.pt").exists():  # torch.save writes a new digest: keep the cache keys
        torch.save(net.state_dict(), tmp_path / "models" / "spotnet_seed0.pt")
    masks = torch.cat([b["mask"] for b in batches])
    return SaliencyStudy(
        network=net, model={"architecture": "spotnet", "seed": 0}, dataloader=batches,
        methods=methods or {"grad": get_method("grad"), "gradcam": get_method("gradcam", layer="act"),
                            "ig": get_method("ig", n_steps=4)},
        baselines={"random": RandomMap(), "prior": PriorMap(masks[:, 0].mean(dim=0))},
        references={"oracle": OracleMap(sigma=1.0)},
        criteria=criteria or {"localization": Localization(binarize="topk:10"),
                              "fidelity_to_published": FidelityToPublished(n_images=3)},
        output_dir=str(tmp_path / "eval"), tracking_uri=f"sqlite:///{tmp_path / 'eval' / 'mlruns.db'}",
        experiment_name="study_test", run_name=run_name, ckpt_dir=str(tmp_path / "models"),
        params={"dataset": "squares", "split": "test", "n_images": 10}, n_resamples=200,
        cache_dir=str(tmp_path / "eval" / "cache") if cache else None, gallery_images=2,
        stability_resamples=stability_resamples,
    )


class CountedGradient:
    """The gradient, counting the images it is asked to explain."""

    def __init__(self) -> None:
        self.images = 0

    def __repr__(self) -> str:
        return "counted_grad()"

    def __call__(self, model, images, target):
        self.images += images.shape[0]
        return get_method("grad")(model, images, target)


def test_each_checkpoint_is_read_once(tmp_path, monkeypatch):
    """The check for damaged checkpoints before training loads each model; the criteria use that one."""
    import bundle.study

    reads = []
    load = bundle.study.load_checkpoint
    monkeypatch.setattr(bundle.study, "load_checkpoint", lambda net, path, **k: reads.append(path) or load(net, path, **k))
    make_study(tmp_path, make_batches(), stability_resamples=2).run()
    assert reads == [str(tmp_path / "models" / "spotnet_seed0.pt")]


def test_without_a_map_cache_each_map_is_still_computed_once(tmp_path):
    """The cascade's baseline across images reuses the trained maps of its per-image scores, as with a cache; the
    run's temporary cache is gone at the end."""
    counts = {}
    for cache in (True, False):
        method = CountedGradient()
        make_study(tmp_path / str(cache), make_batches(), methods={"grad": method}, stability_resamples=2,
                   criteria={"cascading_randomization": CascadingRandomization()}, cache=cache).run()
        counts[cache] = method.images
    assert counts[False] == counts[True] == 10 * 3  # the trained model, then its two cascade steps (fc, conv)
    assert not list((tmp_path / "False" / "eval").glob("map_cache_*"))


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    """A study with a method that cannot run (no such CAM layer) and one whose maps are constant."""
    tmp = tmp_path_factory.mktemp("study")
    methods = {"grad": get_method("grad"), "broken": get_method("gradcam", layer="nope"), "flat": ConstantMap(),
               "misshapen": MisshapenMap(), "ig": get_method("ig", n_steps=4)}
    study = make_study(tmp, make_batches(), methods=methods)
    summary = study.run().summary
    return tmp, study, summary


def test_a_failing_method_is_reported_and_the_study_goes_on(broken_run):
    tmp, study, summary = broken_run
    records = pd.read_csv(tmp / "eval" / "study_records.csv")
    assert set(records.method) == {"grad", "flat", "ig", "random", "prior", "oracle"}
    verdicts = pd.read_csv(tmp / "eval" / "study_verdicts.csv")
    broken = verdicts[verdicts.method == "broken"].iloc[0]
    assert broken.verdict == "INCONCLUSIVE" and "SpotNet has no layer 'nope'" in broken.rule
    misshapen = verdicts[verdicts.method == "misshapen"].iloc[0].rule
    assert ("misshapen() returned maps of shape (4, 2, 24, 24) for images ['img00', 'img01', 'img02', 'img03']; "
            "expected (4, 24, 24)") in misshapen
    run = mlflow.MlflowClient(study.tracking_uri).search_runs(
        [mlflow.MlflowClient(study.tracking_uri).get_experiment_by_name("study_test").experiment_id])[0]
    assert "no layer 'nope'" in run.data.tags["error/localization/broken"]
    assert run.info.status == "FINISHED"


def test_undefined_scores_are_nan_and_counted(broken_run):
    _, _, summary = broken_run
    rows = summary[(summary.criterion == "localization") & (summary.metric == "auprc")].set_index("method")
    assert rows.loc["grad", "n_nan"] == 1 and rows.loc["grad", "n"] == 9  # img03 has an empty mask
    assert rows.loc["flat", "n_nan"] == 10 and np.isnan(rows.loc["flat", "mean"])


def test_nan_messages_name_the_image(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        make_study(tmp_path, make_batches(), methods={"flat": ConstantMap()},
                   criteria={"localization": Localization()}).run()
    assert "img03: empty ground-truth mask" in caplog.text
    assert "the flat map of img00 is constant or not finite" in caplog.text


def test_records_are_keyed_by_image_id_whatever_the_order(tmp_path):
    """Permuting the images permutes the records: every value stays with its image id."""
    first = make_study(tmp_path, make_batches(), run_name="a").run().summary
    order = [7, 2, 9, 0, 5, 3, 1, 8, 6, 4]
    again = make_study(tmp_path, make_batches(order=order), run_name="b").run().summary
    a = pd.read_csv(tmp_path / "eval" / "a_records.csv").set_index(["image_id", "method", "criterion", "metric"])
    b = pd.read_csv(tmp_path / "eval" / "b_records.csv").set_index(["image_id", "method", "criterion", "metric"])
    fidelity = "fidelity_to_published"  # compares the first three images, which the permutation changes
    a_loc, b_loc = a[a.index.get_level_values(2) != fidelity], b[b.index.get_level_values(2) != fidelity]
    assert list(b_loc.index.get_level_values(0)[:10]) != list(a_loc.index.get_level_values(0)[:10])
    pd.testing.assert_series_equal(a_loc["value"].sort_index(), b_loc["value"].sort_index(), rtol=1e-5)
    pd.testing.assert_frame_equal(first[first.criterion != fidelity].reset_index(drop=True),
                                  again[again.criterion != fidelity].reset_index(drop=True), rtol=1e-5)
    # the paired tests too: differences, their intervals and p-values follow the images, not their order
    tests = [pd.read_csv(tmp_path / "eval" / f"{run}_comparisons.csv").set_index("method").sort_index()
             for run in ("a", "b")]
    pd.testing.assert_frame_equal(tests[0], tests[1], rtol=1e-5)


def test_verdicts_follow_the_holm_adjusted_paired_test(tmp_path):
    from scipy import stats

    from bundle.trust import holm

    make_study(tmp_path, make_batches(20), criteria={"localization": Localization(binarize="topk:10")}).run()
    records = pd.read_csv(tmp_path / "eval" / "study_records.csv")
    comparisons = pd.read_csv(tmp_path / "eval" / "study_comparisons.csv").set_index("method")
    verdicts = pd.read_csv(tmp_path / "eval" / "study_verdicts.csv").set_index("method")
    auprc = records[records.metric == "auprc"].pivot(index="image_id", columns="method", values="value")
    baseline = auprc[["random", "prior"]].mean().idxmax()
    assert set(comparisons.baseline) == {baseline}  # the strongest baseline; the oracle is a reference
    p = {m: stats.wilcoxon((auprc[m] - auprc[baseline]).dropna()).pvalue for m in ("grad", "gradcam", "ig")}
    adjusted = dict(zip(p, holm(list(p.values()))))
    for method in p:
        assert comparisons.loc[method, "p_holm"] == pytest.approx(adjusted[method])
        better = (auprc[method] - auprc[baseline]).median() > 0
        expected = "INCONCLUSIVE" if adjusted[method] >= 0.05 else "PASS" if better else "FAIL"
        assert verdicts.loc[method, "verdict"] == expected, verdicts.loc[method, "rule"]
        assert f"Holm over 3 tests p {adjusted[method]:.2g}" in verdicts.loc[method, "rule"]


def test_fidelity_compares_cut_methods_with_their_published_counts(broken_run):
    tmp, _, summary = broken_run
    fidelity = summary[summary.criterion == "fidelity_to_published"]
    assert list(fidelity.method) == ["ig"]  # grad has no pass count to cut; the others are not library methods
    rows = pd.read_csv(tmp / "eval" / "study_records.csv")
    assert len(rows[rows.criterion == "fidelity_to_published"]) == 3
    assert 0.5 < fidelity["mean"].iloc[0] <= 1.0


class StoreBreakingLocalization(Localization):
    """Localization that damages the MLflow store while it scores: the store worked when the study started."""

    def __init__(self, store: Path) -> None:
        super().__init__()
        self.store = store

    def evaluate(self, ctx):
        self.store.write_bytes(b"this is not a database" * 100)
        yield from super().evaluate(ctx)


def test_a_store_that_breaks_during_the_study_loses_nothing(tmp_path):
    """Every record, table and figure is on disk, the run is in a fallback store beside them, and the last line
    says so with the command that copies it into the intended store once that works again."""
    store = tmp_path / "eval" / "broken.db"
    study = make_study(tmp_path, make_batches(), criteria={"localization": StoreBreakingLocalization(store)})
    study.tracking_uri = sqlite_uri(tmp_path / "eval").replace("mlruns.db", "broken.db")
    with pytest.raises(ValueError) as caught:
        study.run()
    line = last_line(caught.value)
    fallback = f"sqlite:///{(tmp_path / 'eval' / 'study_mlruns.db').resolve()}"
    assert line.startswith(f"error: {study.tracking_uri}: the MLflow store failed at the end of the study (")
    assert f"nothing is lost: records, summary, report and figures are in {tmp_path / 'eval'}" in line
    assert line.endswith(f"copy it with: python scripts/log_to_mlflow.py {tmp_path / 'eval'} --from {fallback} "
                         f"--tracking-uri {study.tracking_uri}")
    records = pd.read_csv(tmp_path / "eval" / "study_records.csv")
    assert len(records) == 6 * 6 * 10  # 3 methods, 2 baselines, 1 reference x 6 metrics x 10 images
    for part in ("summary.csv", "verdicts.csv", "report.txt", "report.html", "maps.png"):
        assert (tmp_path / "eval" / f"study_{part}").is_file(), part
    repaired = study.tracking_uri.replace("broken.db", "repaired.db")  # the store the user sets up instead
    result = run_python([sys.executable, str(ROOT / "scripts" / "log_to_mlflow.py"), str(tmp_path / "eval"),
                         "--from", fallback, "--tracking-uri", repaired])
    assert result.returncode == 0, result.stderr
    copied = mlflow.MlflowClient(repaired).search_runs(
        [mlflow.MlflowClient(repaired).get_experiment_by_name(study.experiment_name).experiment_id])
    kept = mlflow.MlflowClient(fallback).search_runs(
        [mlflow.MlflowClient(fallback).get_experiment_by_name(study.experiment_name).experiment_id])
    assert [r.info.run_name for r in copied] == [r.info.run_name for r in kept] == ["study"]
    assert copied[0].data.metrics == kept[0].data.metrics and len(kept[0].data.metrics) > 100


def test_a_damaged_store_stops_the_study_before_any_work(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "mlruns.db").write_bytes(b"this is not a database" * 100)
    study = make_study(tmp_path, make_batches(), criteria={"localization": Localization()})
    study.tracking_uri = f"sqlite:///{tmp_path / 'eval' / 'mlruns.db'}"
    with pytest.raises(ValueError) as caught:
        study.run()
    assert last_line(caught.value) == (f"error: {tmp_path / 'eval' / 'mlruns.db'}: not a usable MLflow store "
                                       "((sqlite3.DatabaseError) file is not a database): move it away, or set "
                                       "local_tracking_uri to another store")
    assert not (tmp_path / "eval" / "study_records.csv").exists()


def test_repeated_image_ids_are_refused_before_any_map(tmp_path):
    batches = make_batches()
    batches[2]["image_id"] = ["img00", "img01"]  # two images that would share cached maps and records
    with pytest.raises(ValueError, match=r"must be unique among the study's images; repeated: \['img00', 'img01'\]"):
        make_study(tmp_path, batches).run()
    assert not (tmp_path / "eval" / "cache").exists()


def test_a_failed_baseline_leaves_the_verdicts_inconclusive(tmp_path):
    study = make_study(tmp_path, make_batches(), criteria={"localization": Localization(binarize="topk:10")})
    study.sources["prior"] = PriorMap(torch.zeros(5, 5))  # the wrong grid: this baseline fails
    study.run()
    verdicts = pd.read_csv(tmp_path / "eval" / "study_verdicts.csv").set_index("method")
    assert "prior" not in verdicts.index, "baselines get no verdict, even a failed one"
    for method in ("grad", "gradcam", "ig"):
        assert verdicts.loc[method, "verdict"] == "INCONCLUSIVE"
        assert "baseline(s) prior not scored" in verdicts.loc[method, "rule"]


def test_nothing_malformed_is_cached_and_derived_models_come_with_their_step(broken_run):
    tmp, study, _ = broken_run
    descriptions = [p.read_text() for p in (tmp / "eval" / "cache").rglob("key.json")]
    assert descriptions and not any("misshapen()" in d for d in descriptions)
    ctx = study.context()
    batch = make_batches()[0]
    with pytest.raises(ValueError, match="derived model together with its step"):
        ctx.maps(study.primary, "grad", batch, step="cascade:conv")
    with pytest.raises(ValueError, match="derived model together with its step"):
        ctx.maps(study.primary, "grad", batch, model=SpotNet())


def test_fidelity_without_a_defined_correlation_is_inconclusive():
    summary = pd.DataFrame([{"model": "m", "method": "ig", "criterion": "fidelity_to_published",
                             "metric": "spearman", "step": "trained", "kind": "method", "mean": float("nan"),
                             "ci_low": float("nan"), "ci_high": float("nan"), "n": 0, "n_nan": 4}])
    verdict = FidelityToPublished().verdicts(summary, pd.DataFrame()).iloc[0]
    assert verdict.verdict == "INCONCLUSIVE" and "no defined correlation on 4 images" in verdict.rule


def attacked_methods() -> dict:
    return {"grad": get_method("grad"), "gradcam": get_method("gradcam", layer="act"),
            "occlusion": get_method("occlusion", window=6, stride=6), "flat": ConstantMap(0.0)}


@pytest.fixture(scope="module")
def attacked_run(tmp_path_factory):
    """Faithfulness and PSC in the study: SpotNet (class 1 follows the bright lesion), two directly attacked
    methods, one that transfers (occlusion), a map with no mass (counted, never a crash)."""
    from bundle.criteria import Faithfulness, PredictionSaliencyCorrelation

    tmp = tmp_path_factory.mktemp("attacked")
    with torch.no_grad():  # a min_score between the scores of the (quantised) images: some are skipped for it
        quantised = [torch.round(255 * b["image"]) / 255 for b in make_batches(12)]
        scores = torch.cat([torch.softmax(SpotNet()(x), dim=1)[:, 1] for x in quantised])
    criteria = {"faithfulness": Faithfulness(min_score=float(scores.quantile(0.3)), workers=2, min_pairs=3),
                "psc": PredictionSaliencyCorrelation(iterations=4, lr=0.01, epsilon=0.05, min_images=3)}
    study = make_study(tmp, make_batches(12), methods=attacked_methods(), criteria=criteria)
    return tmp, study, study.run().summary


def test_faithfulness_records_curves_and_skips_by_reason(attacked_run):
    tmp, study, summary = attacked_run
    records = pd.read_csv(tmp / "eval" / "study_records.csv")
    mine = records[records.criterion == "faithfulness"]
    assert set(mine.method) == {"model", "grad", "gradcam", "occlusion", "flat", "random", "oracle"}  # no prior
    reasons = mine[(mine.method == "model") & mine.metric.str.startswith("sic_skipped_")].pivot(
        index="image_id", columns="metric", values="value")
    assert (reasons.sum(axis=1) <= 1).all() and 0 < reasons.sic_skipped_min_score.sum()  # one reason per image
    skipped = reasons.sum(axis=1)
    auc = mine[(mine.method == "grad") & (mine.metric == "sic_auc")].set_index("image_id").value
    assert len(auc) == 12 and (auc.isna() == (skipped == 1)).all() and skipped.sum() < 12
    rows = summary[summary.criterion == "faithfulness"].set_index(["method", "metric", "step"])
    oracle, random = rows.loc[("oracle", "sic_median_auc", "trained")], rows.loc[("random", "sic_median_auc", "trained")]
    assert oracle["mean"] > random["mean"] and oracle.n == 12 - skipped.sum()
    curve = rows.loc["oracle"].loc["sic_median_curve"]["mean"]
    assert curve.iloc[0] == 0 and curve.iloc[-1] == 1 and len(curve) == 51
    verdicts = pd.read_csv(tmp / "eval" / "study_verdicts.csv")
    grad = verdicts[(verdicts.criterion == "faithfulness") & (verdicts.method == "grad")].iloc[0]
    assert f"skipped: min_score {int(reasons.sic_skipped_min_score.sum())}" in grad.rule and "vs random" in grad.rule
    client = mlflow.MlflowClient(study.tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("study_test").experiment_id])[0]
    history = client.get_metric_history(run.info.run_id, "faithfulness/sic_median_curve/oracle")
    assert sorted(m.step for m in history) == list(range(1, 52))  # the median curve, its 51 points as MLflow steps
    assert run.data.metrics["faithfulness/sic_median_auc/oracle"] == pytest.approx(oracle["mean"])
    flat = rows.loc[("flat", "sic_auc", "trained")]  # a constant map ranks no pixel first: NaN, counted
    assert flat.n == 0 and flat.n_nan == 12
    assert (tmp / "eval" / "study_faithfulness.png").is_file()


def test_a_rerun_reads_the_curves_from_the_cache_without_scoring_an_image(attacked_run):
    """The blurred images' information and logits are cached like maps: the same faithfulness settings again in
    the same folder give the same records without one forward pass; other reveal fractions are measured anew."""
    from bundle.criteria import Faithfulness

    tmp, study, _ = attacked_run
    faithfulness = study.criteria["faithfulness"]
    calls = []

    def study_of(faithfulness, run_name):
        study = make_study(tmp, make_batches(12), methods=attacked_methods(), run_name=run_name,
                           criteria={"faithfulness": faithfulness})
        study.network.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
        return study.run()

    study_of(faithfulness, "rerun")
    records = [pd.read_csv(tmp / "eval" / f"{name}_records.csv") for name in ("study", "rerun")]
    first = records[0][records[0].criterion == "faithfulness"].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, records[1].reset_index(drop=True))
    assert not calls
    study_of(Faithfulness(fractions=(0.1, 0.5), min_score=faithfulness.min_score, min_pairs=3), "fewer")
    # the kept images are scored again at the two new fractions only: the ends (the fully blurred image and the
    # original) depend on the image alone and are the model row's, from the cache
    fewer = pd.read_csv(tmp / "eval" / "fewer_records.csv")
    fewer = fewer[fewer.criterion == "faithfulness"]
    model = fewer[fewer.method == "model"].assign(kind=lambda r: r.metric.str.split("_").str[0])
    unscored = model.groupby(["image_id", "kind"]).value.max().groupby("image_id").min() == 1  # every kind skips it
    sources = fewer[fewer.method != "model"].method.nunique()
    assert 0 < sum(calls) == 2 * sources * int((~unscored).sum())


def test_psc_records_attack_within_epsilon_and_counts_what_it_cannot_judge(attacked_run):
    tmp, study, summary = attacked_run
    records = pd.read_csv(tmp / "eval" / "study_records.csv")
    mine = records[records.criterion == "psc"]
    assert set(mine.method) == {"grad", "gradcam", "occlusion", "flat", "random", "prior"}  # no oracle
    assert (mine[mine.metric.str.endswith("_linf")].value <= 0.05 + 1e-7).all()
    direct = mine[mine.metric == "attacked_directly"].groupby("method").value.mean().to_dict()
    assert direct == {"grad": 1, "gradcam": 1, "occlusion": 0, "flat": 0, "random": 0, "prior": 0}
    # a transfer source is scored on grad's attacked images: the same prediction change, image by image
    pred = mine[mine.metric == "sensitivity_jsd_pred"].pivot(index="image_id", columns="method", values="value")
    pd.testing.assert_series_equal(pred["occlusion"], pred["grad"], check_names=False)
    rows = summary[summary.criterion == "psc"].set_index(["method", "metric"])
    psc_grad = rows.loc[("grad", "sensitivity")]
    jsd = mine[mine.method == "grad"].pivot(index="image_id", columns="metric", values="value")
    from scipy import stats

    assert psc_grad["mean"] == pytest.approx(stats.pearsonr(jsd.sensitivity_jsd_pred, jsd.sensitivity_jsd_map)[0])
    assert rows.loc[("flat", "sensitivity"), "n_nan"] == 12 and np.isnan(rows.loc[("flat", "sensitivity"), "mean"])
    assert np.isnan(rows.loc[("prior", "robustness"), "mean"])  # a map that never changes: PSC undefined
    verdicts = pd.read_csv(tmp / "eval" / "study_verdicts.csv")
    psc_verdicts = verdicts[verdicts.criterion == "psc"].set_index("method")
    assert psc_verdicts.loc["flat", "verdict"] == "INCONCLUSIVE" and "undefined" in psc_verdicts.loc["flat", "rule"]
    assert "transfer attack" in psc_verdicts.loc["occlusion", "rule"]
    assert "attacked directly" in psc_verdicts.loc["grad", "rule"]
    changed = mine[(mine.method == "grad") & (mine.metric == "sensitivity_class_changed")].value.mean()
    assert f"class changed in {changed:.0%}" in psc_verdicts.loc["grad", "rule"]  # counted, whether or not it did
    assert (tmp / "eval" / "study_psc.png").is_file()


def test_records_of_several_processes_merge_into_one_process_order():
    """Two ranks' shares (batches 0 and 2 on rank 0, batch 1 on rank 1): the merged records are in the order one
    process writes (criterion, source, image; each image's records in their own order), a failure both ranks met is
    reported once, and a source that failed on one rank only is left out of that criterion entirely."""
    from bundle.records import merge_shares

    def rec(criterion, method, image, metric):
        return {"image_id": image, "model": "m", "method": method, "criterion": criterion, "metric": metric,
                "step": "trained", "value": 0.0}

    skipped = {"criterion": "all", "method": "xrai", "error": "2-D only"}
    rank0 = [rec("loc", "grad", i, m) for i in ("a", "e") for m in ("auprc", "hit")] + \
        [rec("loc", "cam", "a", "auprc"), rec("rand", "grad", "a", "ssim"), rec("loc", "random", "a", "auprc")]
    rank1 = [rec("loc", "grad", "c", m) for m in ("auprc", "hit")] + [rec("rand", "grad", "c", "ssim")]
    failed = {"criterion": "loc", "method": "cam", "error": "no layer"}
    rows, failures = merge_shares([(rank0, [skipped]), (rank1, [skipped, failed])], ["loc", "rand"],
                                  ["grad", "cam", "random"], ["a", "c", "e"])
    assert [(r["criterion"], r["method"], r["image_id"], r["metric"]) for r in rows] == [
        ("loc", "grad", "a", "auprc"), ("loc", "grad", "a", "hit"), ("loc", "grad", "c", "auprc"),
        ("loc", "grad", "c", "hit"), ("loc", "grad", "e", "auprc"), ("loc", "grad", "e", "hit"),
        ("loc", "random", "a", "auprc"), ("rand", "grad", "a", "ssim"), ("rand", "grad", "c", "ssim")]
    assert failures == [skipped, failed]


def test_a_study_reads_its_calibration_and_says_how_stable_each_verdict_is(tmp_path):
    """The newest calibration in the output folder, made with the criterion's settings on the same data, marks an
    uncalibrated criterion: its verdicts INCONCLUSIVE by rule, `calibrated` False, MLflow tag `no`; every verdict
    carries its stability (CSV column and MLflow tag)."""
    import json

    import mlflow

    from bundle.calibration import control_fingerprints
    from bundle.verdicts import CALIBRATION_SUFFIX

    localization = Localization(binarize="topk:10")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / f"cal{CALIBRATION_SUFFIX}").write_text(json.dumps({
        "date": "2026-12-05T10:00:00", "draws": 20, "family": 3, "noise_levels": [0.25], "shift_fractions": [0.5],
        "controls": control_fingerprints([0.25], [0.5]),
        "params": {"dataset": "squares", "split": "test", "n_images": "10"},
        "settings": {"localization": repr(localization)},
        "criteria": [{"criterion": "localization", "calibrated": False, "why": "oracle: PASS in 0.40 of draws < 0.8",
                      "false_pass_rate": 0.0, "false_pass_high": 0.17, "power": 0.4, "power_low": 0.19}]}))
    make_study(tmp_path, make_batches(20), criteria={"localization": localization}).run()
    verdicts = pd.read_csv(tmp_path / "eval" / "study_verdicts.csv").set_index("method")
    assert (verdicts.verdict == "INCONCLUSIVE").all() and (~verdicts.calibrated.astype(bool)).all()
    assert verdicts.rule.str.startswith("uncalibrated criterion (oracle: PASS in 0.40 of draws < 0.8): its rule alone "
                                        "said ").all()
    assert verdicts.stability.between(0, 1).all() and (verdicts.unstable == (verdicts.stability < 0.8)).all()
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'eval' / 'mlruns.db'}").search_runs(
        [mlflow.MlflowClient(f"sqlite:///{tmp_path / 'eval' / 'mlruns.db'}").get_experiment_by_name(
            "study_test").experiment_id])[0]
    assert run.data.tags["calibrated/localization"] == "no"
    assert float(run.data.tags["stability/localization/grad"]) == pytest.approx(verdicts.stability["grad"], abs=1e-3)
    assert run.data.metrics["calibration/localization/power"] == 0.4
    assert "UNCALIBRATED" in (tmp_path / "eval" / "study_report.txt").read_text()

"""``run calibrate``: every criterion's verdict rule on controls whose verdict is known (TRUST_METRICS.md section 10).

A verdict rule is an instrument. Before its verdicts are trusted, it must PASS what is known to be good (the
oracle; the exact gradient of a glass-box model; a map built to follow the prediction), never
PASS what is known to be bad (random, edge, prior, shuffled maps, maps that ignore the model), and lose its PASS
gradually as a known-good map is degraded. The calibration runs the study's own criteria (same models, map cache
and images) on those controls over independent draws (control seeds and bootstrap resamples of the images), and
reports per criterion the false-PASS rate of each known-bad control with its exact interval, the PASS rate
(power) of each known-good one at the profile's number of images, and the Spearman correlation of the score with
the degradation level and the level where PASS is lost. The study reads the newest calibration in its output
folder: a criterion that failed its calibration is marked uncalibrated and its verdicts become INCONCLUSIVE.

The expected verdicts (:data:`CONTROLS`) are fixed here and in docs/calibration.md before any calibration run.
Calibration runs in one process.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from bundle.criteria.base import FAIL, INCONCLUSIVE, PASS, Criterion, Record
from bundle.models import ModelSpec, ensure_trained
from bundle.networks import IntensityModel
from bundle.report.tables import format_calibration
from bundle.tracking import log_calibration, unique_run_name
from bundle.trust.baselines import EdgeMap, RandomMap
from bundle.trust.controls import CutOf, DegradedMap, PredictionTrackingMap, RankedMap, ShiftedMap, ShuffledMap
from bundle.trust.stats import clopper_pearson
from bundle.verdicts import CALIBRATION_SUFFIX, MONOTONE, POWER_TARGET, ImageResampler, judge

logger = logging.getLogger(__name__)

GRADED = "graded"  # a series of degradations of a known-good control: no expected verdict, a trend and a resolution
STUDY, GLASS_BOX = "study", "glass_box"  # the model a control is judged on: the study's, or the glass box
INTENSITY_MODELS = {"brighter": 1, "darker": -1, "constant": 0}  # lesion reliance's fixed models (sign of the logit)
SEED_OFFSET = 1000  # control seeds start here, apart from the study's baselines (random: seed, seed + 1)
SHUFFLED_METHOD = "gradcam"  # the method whose maps the shuffled control permutes, by default
CONTROL = "control:"  # the prefix of a control's source label: a control named like a baseline is not the baseline


@dataclass(frozen=True)
class Control:
    """One cell of the expected-verdict table: a control under one criterion, judged on ``model``."""

    criterion: str
    name: str
    expected: str  # PASS, FAIL (must never PASS), or GRADED (levels of a degradation)
    reason: str
    model: str = STUDY
    requires: str | None = None  # a criterion the model under study must PASS for the expected verdict to hold


def _controls(criteria: Sequence[str], name: str, expected: str, reason: str, model: str = STUDY) -> list[Control]:
    return [Control(c, name, expected, reason, model) for c in criteria]


AGREEMENT = ("repeatability", "reproducibility")
RANDOMISATION = ("cascading_randomization", "label_randomization")
IGNORES_MODEL = "the map ignores the model"
CONTROLS: tuple[Control, ...] = (
    Control("localization", "oracle", PASS, "the lesion itself, blurred"),
    Control("localization", "oracle+noise", GRADED, "the oracle plus Gaussian noise"),
    Control("localization", "oracle shifted", GRADED, "the oracle moved by fractions of the lesion's diameter"),
    Control("localization", "random", FAIL, "no information"),
    Control("localization", "edge", FAIL, "image edges, not the lesion"),
    Control("localization", "prior", FAIL, "the strongest baseline itself: it cannot beat itself"),
    Control("localization", "shuffled oracle", FAIL, "a lesion of another image"),
    Control("localization", "shuffled gradcam", FAIL, "a realistic map of another image"),
    Control("fidelity_to_published", "gradcam as its own cut", PASS, "the published maps themselves"),
    Control("fidelity_to_published", "gradcam+noise as its cut", GRADED, "the published maps plus noise"),
    Control("fidelity_to_published", "random as a cut of gradcam", FAIL, "unrelated to the published maps"),
    Control("lesion_reliance", "brighter", PASS, "logit = mean intensity: a lesion adds attenuation, shown brighter",
            "brighter"),
    Control("lesion_reliance", "darker", FAIL, "logit = minus the mean intensity", "darker"),
    Control("lesion_reliance", "constant", FAIL, "the same logit for every image: no pair decides", "constant"),
    *_controls(RANDOMISATION, "grad", PASS, "a linear model's gradient is its weights: new weights, a new map",
               GLASS_BOX),
    *_controls(RANDOMISATION, "grad+noise", GRADED, "that gradient plus noise that ignores the model", GLASS_BOX),
    *[c for name in ("random", "edge", "prior", "oracle") for c in _controls(RANDOMISATION, name, FAIL, IGNORES_MODEL)],
    *_controls(AGREEMENT, "oracle", PASS, "the same lesion whichever the model"),
    *_controls(AGREEMENT, "oracle+noise", GRADED, "the oracle plus noise drawn independently for each model"),
    *_controls(AGREEMENT, "random", FAIL, "two independent random maps: chance agreement"),
    *_controls(AGREEMENT, "shuffled oracle", FAIL, "lesions of two other images, never the same one"),
    Control("faithfulness", "oracle", PASS, "the lesion revealed first, on a model whose score rests on it (lesion "
            "reliance: each positive above its lesion-free twin)", requires="lesion_reliance"),
    Control("faithfulness", "oracle+noise", GRADED, "the oracle plus Gaussian noise", requires="lesion_reliance"),
    Control("faithfulness", "oracle reversed", FAIL, "the lesion revealed last"),
    Control("faithfulness", "random", FAIL, "another draw of the random baseline it is compared with"),
    Control("psc", "prediction tracking", PASS, "p x lesion + (1 - p) x rest: the map's divergence is the "
            "prediction's, PSC 1 by construction"),
    Control("psc", "prediction tracking+noise", GRADED, "that map tracking its logit plus an error, the same "
            "for an image and its attacked version"),
    *[Control("psc", name, FAIL, "the map ignores the prediction") for name in ("random", "edge", "prior", "oracle")],
)
GRADED_FROM = {  # the known-good control each graded series degrades: its level 0
    "oracle+noise": "oracle", "oracle shifted": "oracle", "gradcam+noise as its cut": "gradcam as its own cut",
    "grad+noise": "grad", "prediction tracking+noise": "prediction tracking",
}
NOT_APPLICABLE = {  # controls a criterion cannot judge, with the reason (the docs' table shows them as n/a)
    **{(criterion, name): "identical on both models with no independent draw: agreement cannot tell"
       for criterion in AGREEMENT for name in ("edge", "prior")},
    ("cascading_randomization", "shuffled gradcam"): "Grad-CAM's own sensitivity, permuted: not known",
    ("faithfulness", "edge"): "whether edges restore the score first depends on the model: not known",
    ("faithfulness", "prior"): "where lesions usually are may restore a lesion-reliant model's score: not known",
}


@dataclass
class ControlSources:
    """What the controls are made of: the study's map sources and the degradation levels."""

    sources: Mapping[str, object]
    noise_levels: Sequence[float]
    shift_fractions: Sequence[float]
    shuffled_method: str = SHUFFLED_METHOD

    def build(self, name: str, draw: int) -> dict[str, object]:
        """The sources of one control at draw ``draw``: ``{label: source}``, one label per level for a graded one."""
        seed = SEED_OFFSET + 2 * (draw + 1)  # +1 is its independent draw (agreement): never another draw's seed
        s = self.sources
        levels = {"noise": self.noise_levels, "shifted": self.shift_fractions}
        # a degradation keeps one noise draw (seed SEED_OFFSET) whatever the draw: its levels stay comparable, and its
        # maps and curves are computed once; the draws resample its images
        graded = {
            "oracle+noise": ("noise", lambda v: DegradedMap(s["oracle"], v, SEED_OFFSET)),
            "oracle shifted": ("shifted", lambda v: ShiftedMap(s["oracle"], v)),
            "gradcam+noise as its cut": ("noise", lambda v: CutOf(DegradedMap(s["gradcam"], v, SEED_OFFSET),
                                                                  s["gradcam"])),
            "grad+noise": ("noise", lambda v: DegradedMap(s["grad"], v, SEED_OFFSET)),
            "prediction tracking+noise": ("noise", lambda v: PredictionTrackingMap(v, SEED_OFFSET)),
        }
        if name in graded:
            kind, make = graded[name]
            return {f"{CONTROL}{name}@{level:g}": make(level) for level in levels[kind]}
        single = {
            "oracle": lambda: s["oracle"], "random": lambda: RandomMap(seed), "edge": EdgeMap, "prior": lambda: s["prior"],
            "shuffled oracle": lambda: ShuffledMap(s["oracle"], seed),
            "shuffled gradcam": lambda: ShuffledMap(s[self.shuffled_method], seed),
            "gradcam as its own cut": lambda: CutOf(s["gradcam"], s["gradcam"]),
            "random as a cut of gradcam": lambda: CutOf(RandomMap(seed), s["gradcam"]),
            "grad": lambda: s["grad"], "oracle reversed": lambda: RankedMap(s["oracle"], -1),
            "prediction tracking": PredictionTrackingMap,
        }
        return {f"{CONTROL}{name}": single[name]()} if name in single else {}


class _StandIn:
    """A map source known by its name alone: what a control is made of, for :func:`control_fingerprints`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def control_fingerprints(noise_levels: Sequence[float], shift_fractions: Sequence[float],
                         shuffled_method: str = SHUFFLED_METHOD) -> dict[str, list[str]]:
    """Per criterion, what each of its controls is (name, model, expected verdict, and the repr of every source it
    builds at draw 0 from stand-ins for the study's sources). A calibration records them, and a study rests on it
    only while its criteria's controls are still these: a control repaired since (PSC's graded one in 0.19.0) makes
    an earlier calibration of that criterion say nothing."""
    names = ("oracle", "prior", "gradcam", "grad", shuffled_method)
    parts = ControlSources({n: _StandIn(n) for n in names}, noise_levels, shift_fractions, shuffled_method)
    fingerprints: dict[str, list[str]] = {}
    for c in CONTROLS:
        sources = ", ".join(repr(source) for source in parts.build(c.name, 0).values())
        fingerprints.setdefault(c.criterion, []).append(f"{c.name} on {c.model}, {c.expected}"
                                                        + (f": {sources}" if sources else ""))
    return fingerprints


def controls_now(calibration: Mapping) -> dict[str, list[str]]:
    """What the controls of a calibration record are in this version (:func:`control_fingerprints` at its levels),
    to compare with what it recorded."""
    return control_fingerprints(calibration.get("noise_levels", ()), calibration.get("shift_fractions", ()),
                                calibration.get("shuffled_method", SHUFFLED_METHOD))


def level_of(label: str) -> float:
    """The degradation level of a graded control's label (``control:name@level``); NaN for a single control."""
    return float(label.rpartition("@")[2]) if "@" in label else float("nan")


def control_of(label: str) -> str:
    """The control's name in :data:`CONTROLS` of a source label (``control:name`` or ``control:name@level``)."""
    return label.removeprefix(CONTROL).partition("@")[0]


def adjusted_as_expected(expected_fail: set[tuple[str, str]], family: int) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The study's Holm step, as least favourable to each control meeting its expectation: a control that must not
    PASS keeps its raw p-value (Holm's adjustment of the family's largest p-value, its most lenient case), the
    others get Bonferroni's ``family`` x p (Holm's strictest case), ``family`` being the study's number of tests."""
    def adjust(comparisons: pd.DataFrame) -> pd.DataFrame:
        comparisons = comparisons.reset_index(drop=True).copy()
        if not len(comparisons):
            return comparisons.assign(p_holm=np.array([]), n_tests=0)
        lenient = np.array([(c, control_of(m)) in expected_fail
                            for c, m in zip(comparisons.criterion, comparisons.method)], dtype=bool)
        p = comparisons.p_value.to_numpy(dtype=np.float64)
        comparisons["p_holm"] = np.where(lenient, p, np.minimum(1.0, family * p))
        comparisons["in_grid"] = comparisons["in_grid"].fillna(True).astype(bool) if "in_grid" in comparisons \
            else True
        comparisons["n_tests"] = family
        return comparisons
    return adjust


def for_controls(criterion: Criterion, primary: ModelSpec) -> Criterion:
    """A copy of a study criterion that scores controls: every source it is given (no method subset), and on the
    glass box only the glass box is randomised."""
    criterion = copy.copy(criterion)
    for subset in ("methods", "attacked"):
        if hasattr(criterion, subset):
            setattr(criterion, subset, None)
    if hasattr(criterion, "architectures") and primary.architecture == GLASS_BOX:
        criterion.architectures = ()
    return criterion


def score_in_one_process(criteria: Mapping[str, Criterion], ctx) -> pd.DataFrame:
    """Every criterion's records on ``ctx`` (its per-image records, then those that pair images), one process."""
    rows: list[Record] = []
    for name, criterion in criteria.items():
        for records in criterion.evaluate(ctx):
            rows += records
        for source in dict.fromkeys(r.method for r in rows if r.criterion == name):
            try:
                rows += criterion.evaluate_across_images(ctx, source)
            except Exception as error:  # as in the study: the source's records are left out, the failure reported
                ctx.report_failure(name, source, error)
                rows = [r for r in rows if (r.criterion, r.method) != (name, source)]
    return pd.DataFrame([asdict(r) for r in rows], columns=[f for f in Record.__dataclass_fields__])


class Calibration:
    """The verdict rules of a study's criteria on controls with known verdicts (``run calibrate``).

    Args:
        study: the configured study (``@study``): its criteria, map sources, models, images and map cache.
        draws: independent draws (control seeds and bootstrap resamples of the images; at least 20).
        noise_levels: the Gaussian noise levels of the graded controls (units of the map's maximum).
        shift_fractions: the shifts of the oracle, in lesion diameters.
        glass_box: the glass-box model, ``{"architecture": "glass_box", "seed": ...}``, trained when missing
            with ``glass_box_overrides`` on top of the study's training settings.
        glass_box_overrides: training settings for the glass boxes only (e.g. ``learning_rate``), applied over the
            study's ``train_overrides``; nothing extra when ``None``.
        shuffled_method: the method whose maps the shuffled control permutes.
        family: the study's number of Holm-adjusted tests (``None``: read from the newest comparisons table in
            the output folder, else the number of methods times the number of criteria).
        seed: seeds the resamples of the images.
    """

    def __init__(self, study, draws: int = 20, noise_levels: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
                 shift_fractions: Sequence[float] = (0.25, 0.5, 1.0, 2.0), glass_box: Mapping | None = None,
                 glass_box_overrides: Mapping | None = None, shuffled_method: str = SHUFFLED_METHOD,
                 family: int | None = None, seed: int = 0) -> None:
        if draws < 1:
            raise ValueError(f"draws must be positive, got {draws}")
        self.study, self.draws, self.seed = study, draws, seed
        self.noise_levels, self.shift_fractions = tuple(noise_levels), tuple(shift_fractions)
        self.glass_box = ModelSpec(**{"architecture": GLASS_BOX, "seed": study.primary.seed, **dict(glass_box or {})})
        self.glass_box_overrides, self.shuffled_method = dict(glass_box_overrides or {}), shuffled_method
        self.family, self._unmet = family, {}

    def controls(self) -> list[Control]:
        """The expected-verdict table rows of the study's criteria whose preconditions hold (:meth:`preconditions`)."""
        return [c for c in CONTROLS if c.criterion in self.study.criteria and c.requires not in self._unmet]

    def preconditions(self) -> dict[str, str]:
        """Why a control's expected verdict does not hold for this model, per criterion it requires the model under
        study to PASS (lesion reliance: the oracle restores the score only of a model that uses the lesion)."""
        unmet = {}
        for name in dict.fromkeys(c.requires for c in CONTROLS if c.requires and c.criterion in self.study.criteria):
            if name not in self.study.criteria:
                unmet[name] = f"{name} is not among the study's criteria"
                continue
            ctx = self.study.context()
            criterion = {name: self.study.criteria[name]}
            verdicts = judge(criterion, score_in_one_process(criterion, ctx), {}, self.study.n_resamples,
                             self.seed).verdicts
            if not (verdicts.verdict == PASS).all() or not len(verdicts):
                said = "; ".join(f"{v.verdict}: {v.rule}" for v in verdicts.itertuples(index=False)) or "no verdict"
                unmet[name] = f"{self.study.primary.name} does not PASS {name} ({said})"
        return unmet

    def _family(self) -> int:
        if self.family is not None:
            return self.family
        tables = sorted(self.study.output_dir.glob("*_comparisons.csv"), key=lambda p: p.stat().st_mtime)
        if tables:
            n = pd.read_csv(tables[-1]).get("n_tests")
            if n is not None and len(n.dropna()):
                return int(n.dropna().iloc[0])
        methods = sum(kind == "method" for kind in self.study.kinds.values())
        return max(1, methods * len(self.study.criteria))

    def _models(self) -> dict[str, ModelSpec]:
        """The model of each setting, the glass boxes trained when missing (as the study trains its models)."""
        study = self.study
        study._ensure_models()
        needed = [self.glass_box] + [ModelSpec(GLASS_BOX, self.glass_box.seed, permuted_labels=True)] * (
            "label_randomization" in study.criteria)
        for spec in needed:
            ensure_trained(spec, study.ckpt_dir, study.train_config,
                           {**study.train_overrides, **self.glass_box_overrides})
        return {STUDY: study.primary, GLASS_BOX: self.glass_box,
                **{name: ModelSpec(name) for name in INTENSITY_MODELS}}

    def _context(self, primary: ModelSpec, base):
        """The study's context with ``primary`` as the model under study (a fixed intensity model has no file)."""
        def load(spec: ModelSpec):
            if spec.architecture in INTENSITY_MODELS:
                return IntensityModel(INTENSITY_MODELS[spec.architecture], self.study.target)
            return base.load_model(spec)

        def digest(spec: ModelSpec) -> str:
            return f"fixed:{spec.architecture}" if spec.architecture in INTENSITY_MODELS else base.checkpoint_digest(spec)

        fixed = primary.architecture in INTENSITY_MODELS
        return replace(base, primary=primary, load_model=load, checkpoint_digest=digest, failures=[],
                       _digests={} if fixed else base._digests, _models={} if fixed else base._models)

    def verdicts_of_draws(self) -> tuple[pd.DataFrame, list[dict]]:
        """Per draw, criterion and control label: the verdict and the criterion's headline score. Each criterion
        scores only its own controls (beside the study's baselines), on the model of their setting."""
        study, family = self.study, self._family()
        models, base = self._models(), study.context()
        self._unmet = self.preconditions()
        parts = ControlSources({**study.sources}, self.noise_levels, self.shift_fractions, self.shuffled_method)
        baselines = {n: s for n, s in study.sources.items() if study.kinds[n] == "baseline"}
        adjust = adjusted_as_expected({(c.criterion, c.name) for c in self.controls() if c.expected == FAIL}, family)
        rows, failures = [], []
        for setting in dict.fromkeys(c.model for c in self.controls()):
            controls = [c for c in self.controls() if c.model == setting]
            criteria = {n: for_controls(study.criteria[n], models[setting])
                        for n in dict.fromkeys(c.criterion for c in controls)}
            for draw in range(self.draws):
                start, records, kinds = time.perf_counter(), [], {n: "baseline" for n in baselines}
                for name, criterion in criteria.items():
                    sources = {label: source for c in controls if c.criterion == name
                               for label, source in parts.build(c.name, draw).items()}
                    ctx = self._context(models[setting], base)
                    ctx.sources = {**sources, **baselines}
                    ctx.kinds = {**{n: "method" for n in sources}, **{n: "baseline" for n in baselines}}
                    records.append(score_in_one_process({name: criterion}, ctx))
                    kinds.update(ctx.kinds)
                    failures += [{**f, "model": setting, "draw": draw} for f in ctx.failures]
                resampled = ImageResampler(pd.concat(records, ignore_index=True)).resample(
                    np.random.default_rng([self.seed, draw]))
                judged = judge(criteria, resampled, kinds, study.n_resamples, self.seed, adjust, intervals=False)
                scores = self._scores(criteria, judged.summary)
                for v in judged.verdicts.itertuples(index=False):
                    label = v.method if v.method != "model" else CONTROL + setting  # lesion reliance: the model
                    if label.startswith(CONTROL) and any(c.criterion == v.criterion and c.name == control_of(label)
                                                         for c in controls):  # the baselines' sanity rows are not
                        rows.append({"draw": draw, "criterion": v.criterion, "label": label, "verdict": v.verdict,
                                     "score": scores.get((v.criterion, v.method), np.nan)})
                logger.info("calibration: %s model, draw %d of %d, %.1f s", setting, draw + 1, self.draws,
                            time.perf_counter() - start)
        return pd.DataFrame(rows, columns=["draw", "criterion", "label", "verdict", "score"]), failures

    @staticmethod
    def _scores(criteria: Mapping[str, Criterion], summary: pd.DataFrame) -> dict[tuple[str, str], float]:
        """Each criterion's headline score per source (a cascade's last step, the model under study's row)."""
        out = {}
        for name, criterion in criteria.items():
            rows = summary[(summary.criterion == name) & (summary.metric == criterion.headline)]
            for method, group in rows.groupby("method", sort=False):
                out[(name, method)] = float(group["mean"].iloc[-1])
        return out

    def table(self, draws: pd.DataFrame) -> pd.DataFrame:
        """Per criterion and control label: verdict counts over the draws, the PASS rate with its exact 95 %
        interval, the mean score, and whether the control met its expected verdict (a graded level has none)."""
        expected = {(c.criterion, c.name): c for c in self.controls()}
        rows = []
        for (criterion, label), group in draws.groupby(["criterion", "label"], sort=False):
            control = expected[(criterion, control_of(label))]
            counts = group.verdict.value_counts()
            passed, n = int(counts.get(PASS, 0)), self.draws  # a draw with no verdict (a failure) is not a PASS
            low, high = clopper_pearson(passed, n)
            alpha = getattr(self.study.criteria[criterion], "alpha", 0.05)
            met = (passed / n >= POWER_TARGET if control.expected == PASS else passed / n <= alpha
                   if control.expected == FAIL else None)
            rows.append({"criterion": criterion, "control": control.name, "label": label.removeprefix(CONTROL),
                         "level": level_of(label),
                         "model": control.model, "expected": control.expected, "draws": n, "pass": passed,
                         "fail": int(counts.get(FAIL, 0)), "inconclusive": int(counts.get(INCONCLUSIVE, 0)),
                         "pass_rate": passed / n, "pass_low": low, "pass_high": high,
                         "score": float(group.score.mean()), "met": met, "reason": control.reason})
        return pd.DataFrame(rows)

    def criteria_table(self, table: pd.DataFrame, draws: pd.DataFrame) -> pd.DataFrame:
        """Per criterion: the worst false-PASS rate of its known-bad controls, the lowest power of its known-good
        ones, each graded series' Spearman correlation of its mean score with the level (level 0: the known-good
        control it degrades) and the level where PASS is lost (the first level below the power target), and
        whether it is calibrated (every control met its expected verdict and every graded mean score worsens with
        the level, Spearman at least 0.8)."""
        rows = []
        for criterion, mine in table.groupby("criterion", sort=False):
            bad, good, graded = (mine[mine.expected == kind] for kind in (FAIL, PASS, GRADED))
            problems = [f"{r.control}: PASS in {r.pass_rate:.2f} of draws" + (
                f" > alpha {getattr(self.study.criteria[criterion], 'alpha', 0.05)}" if r.expected == FAIL else
                f" < {POWER_TARGET}") for r in mine[mine.met.eq(False)].itertuples(index=False)]
            row = {"criterion": criterion,
                   "false_pass_rate": float(bad.pass_rate.max()) if len(bad) else np.nan,
                   "false_pass_high": float(bad.pass_high.max()) if len(bad) else np.nan,
                   "power": float(good.pass_rate.min()) if len(good) else np.nan,
                   "power_low": float(good.pass_low.min()) if len(good) else np.nan}
            lower_is_better = not getattr(self.study.criteria[criterion], "higher_is_better", True)
            for control, series in graded.groupby("control", sort=False):
                # the mean score per level, from the known-good control (level 0) to the strongest degradation
                drawn = draws[draws.criterion == criterion]
                points = drawn[drawn.label.map(control_of).isin([control, GRADED_FROM[control]])]
                means = points.groupby(points.label.map(level_of).fillna(0.0)).score.mean().dropna()
                rho = float(stats.spearmanr(means.index, means).statistic) if means.nunique() > 1 else np.nan
                lost = series[series.pass_rate < POWER_TARGET].level
                row[f"spearman:{control}"] = rho
                row[f"resolution:{control}"] = float(lost.min()) if len(lost) else np.inf
                if not (rho >= MONOTONE if lower_is_better else rho <= -MONOTONE):
                    problems.append(f"{control}: the score does not worsen steadily with the level (Spearman "
                                    f"{rho:+.2f})")
            row["calibrated"], row["why"] = not problems, "; ".join(problems) or "every control as expected"
            unmet = {self._unmet[c.requires] for c in CONTROLS if c.criterion == criterion and c.requires in self._unmet}
            if not len(good) and unmet:  # nothing known to be good to PASS: neither calibrated nor failed
                row["calibrated"], row["why"] = None, "no known-good control: " + "; ".join(sorted(unmet))
            rows.append(row)
        return pd.DataFrame(rows)

    def run(self) -> pd.DataFrame:
        """Run the controls, print the calibration table, write it beside the study's results (CSV and JSON, read
        by the next study) and log it to MLflow; return the per-criterion table."""
        from bundle import distributed

        if distributed.several_processes():
            raise ValueError("calibrate runs in one process: start it with python -m monai.bundle, not torchrun")
        study, start = self.study, time.perf_counter()
        draws, failures = self.verdicts_of_draws()
        table = self.table(draws)
        summary = self.criteria_table(table, draws)
        run_name = unique_run_name("calibrate", study.primary.name)
        record = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "run_name": run_name,
                  "draws": self.draws, "power_target": POWER_TARGET, "family": self._family(), "seed": self.seed,
                  "noise_levels": list(self.noise_levels), "shift_fractions": list(self.shift_fractions),
                  "shuffled_method": self.shuffled_method,
                  "controls": control_fingerprints(self.noise_levels, self.shift_fractions, self.shuffled_method),
                  "glass_box": self.glass_box.name, "seconds": round(time.perf_counter() - start, 1),
                  "params": {k: str(v) for k, v in study.params.items()},
                  "settings": {n: repr(c) for n, c in study.criteria.items()},
                  "criteria": json.loads(summary.to_json(orient="records")),
                  "table": json.loads(table.to_json(orient="records")), "failures": failures}
        study.output_dir.mkdir(parents=True, exist_ok=True)
        path = study.output_dir / f"{run_name}{CALIBRATION_SUFFIX}"
        path.write_text(json.dumps(record, indent=1))
        table.to_csv(study.output_dir / f"{run_name}_calibration.csv", index=False)
        report = format_calibration(record)
        print(report, flush=True)
        (study.output_dir / f"{run_name}_calibration.txt").write_text(report + "\n")
        log_calibration(study.tracking_uri, study.experiment_name, run_name, study.output_dir, record,
                        [path, study.output_dir / f"{run_name}_calibration.csv"], report)
        return summary

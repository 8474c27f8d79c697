"""The console report of a study: verdicts per method and criterion, the rules that decided them, and every
metric's mean with its CI. Formatting only: every number comes from the summary and verdict tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bundle.result import StudyResult
from bundle.verdicts import SAID_ONE_BY_ONE


def _cell(row) -> str:
    if row is None or pd.isna(row.mean):
        return "n/a"
    return f"{row.mean:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"


def _lookup(summary: pd.DataFrame) -> dict:
    """Summary rows by (source, criterion, metric): of the first model seen, its last step (a cascade's fully
    randomised model); the other models and steps are in :func:`step_table`, the figures and the CSVs."""
    cells: dict = {}
    for r in summary.itertuples(index=False):
        key = (r.method, r.criterion, r.metric)
        if key not in cells or cells[key].model == r.model:
            cells[key] = r
    return cells


def step_table(summary: pd.DataFrame, criterion: str, metric: str, order: Sequence[str]) -> list[str]:
    """Mean ``metric`` per step (columns) for each model and source (rows): a cascade read left to right."""
    rows = summary[(summary.criterion == criterion) & (summary.metric == metric) & (summary.step != "trained")]
    lines = []
    for model, group in rows.groupby("model", sort=False):
        steps = list(dict.fromkeys(group.step))
        if len(steps) < 2:
            continue
        names = [s.split(":")[-1][:11] for s in steps]
        header = f"{model[:24]:<24}" + "".join(f"{n:>12}" for n in names)
        lines += ["", f"{metric} per step (mean over images)", header, "-" * len(header)]
        values = {(r.method, r.step): r.mean for r in group.itertuples(index=False)}
        for name in order:
            if any((name, s) in values for s in steps):
                lines.append(f"{name:<24}" + "".join(f"{values.get((name, s), float('nan')):>12.3f}" for s in steps))
    return lines


def verdict_cells(summary: pd.DataFrame, verdicts: pd.DataFrame, kinds: Mapping[str, str]) -> dict:
    """The verdict table's cells (:func:`_lookup`) less a method's cell in a criterion that gave it no verdict: a
    method scored there only as the other model's competitor (architecture_localization)."""
    judged = {(v.method, v.criterion) for v in verdicts.itertuples(index=False)}
    return {k: r for k, r in _lookup(summary).items() if kinds.get(k[0]) != "method" or (k[0], k[1]) in judged}


def model_cells(summary: pd.DataFrame, criterion: str, metric: str) -> tuple[list[str], dict]:
    """The trained models a criterion scored the same sources on and its ``metric``'s summary rows by (source,
    model), when there are two or more (architecture_localization); no models otherwise."""
    rows = summary[(summary.criterion == criterion) & (summary.metric == metric) & (summary.step == "trained")]
    models = list(dict.fromkeys(rows.model))
    return (models, {(r.method, r.model): r for r in rows.itertuples(index=False)}) if len(models) > 1 else ([], {})


def model_table(summary: pd.DataFrame, criterion: str, metric: str, order: Sequence[str]) -> list[str]:
    """Mean [95% CI] of ``metric`` per source (rows) on each model (columns) (:func:`model_cells`); empty for a
    criterion of one model."""
    models, cells = model_cells(summary, criterion, metric)
    if not models:
        return []
    header = f"{metric:<12}" + "".join(f"{m[:28]:<30}" for m in models)
    lines = [header.rstrip(), "-" * len(header.rstrip())]
    for name in order:
        if any((name, m) in cells for m in models):
            lines.append((f"{name:<12}" + "".join(f"{_cell(cells[(name, m)]) if (name, m) in cells else '-':<30}"
                                                   for m in models)).rstrip())
    return lines


FIDELITY = "fidelity_to_published"


UNSTABLE, UNCALIBRATED = "~", "?"  # marks of a verdict: reproduced by too few resamples; its criterion failed calibration


def verdict_mark(v) -> str:
    """``~`` after an unstable verdict, ``?`` after one of an uncalibrated criterion (INCONCLUSIVE by rule)."""
    return (UNCALIBRATED if getattr(v, "calibrated", None) is False else "") + \
        (UNSTABLE if getattr(v, "unstable", None) is True else "")


def verdict_table(summary: pd.DataFrame, verdicts: pd.DataFrame, order: Sequence[str], kinds: Mapping[str, str],
                  headlines: Mapping[str, str]) -> list[str]:
    """Methods x criteria: each criterion's headline metric, mean [95% CI], and the method's verdict.

    A method whose cut pass counts change its maps (``fidelity_to_published`` FAIL) is marked ``!``; an unstable
    verdict ``~`` and a verdict of an uncalibrated criterion ``?`` (:func:`verdict_mark`).
    """
    cells = verdict_cells(summary, verdicts, kinds)
    verdict_of = {(v.method, v.criterion): v.verdict + verdict_mark(v) for v in verdicts.itertuples(index=False)}
    columns = [(c, m) for c, m in headlines.items() if any(k[1] == c and k[0] in kinds for k in cells)]
    widths = [max(36, len(f"{c} ({m})")) for c, m in columns]
    header = f"{'method':<12}{'kind':<10}" + "".join(f"{f'{c} ({m})':<{w + 2}}" for (c, m), w in zip(columns, widths))
    lines = [header.rstrip(), "-" * len(header.rstrip())]
    for name in order:
        parts = []
        for (criterion, metric), width in zip(columns, widths):
            row = cells.get((name, criterion, metric))
            text = "-" if row is None else f"{_cell(row)} {verdict_of.get((name, criterion), '')}".rstrip()
            parts.append(f"{text:<{width + 2}}")
        flag = "!" if verdict_of.get((name, FIDELITY), "").startswith("FAIL") else ""
        lines.append((f"{name + flag:<12}{kinds[name]:<10}" + "".join(parts)).rstrip())
    if any(verdict_of.get((name, FIDELITY), "").startswith("FAIL") for name in order):
        lines.append("! its cut pass counts change its maps (fidelity_to_published FAIL): confirm its verdicts with "
                     "the published counts (configs/published.json)")
    return lines


def metric_table(summary: pd.DataFrame, criterion: str, order: Sequence[str], kinds: Mapping[str, str],
                 metrics: Sequence[str] | None = None) -> list[str]:
    """The metrics of one criterion (``metrics``, or all): rows are map sources, cells mean [95% CI]; NaN counts
    at the end."""
    rows = summary[summary.criterion == criterion]
    metrics = [m for m in (metrics or dict.fromkeys(rows.metric)) if m in set(rows.metric)]
    cells = _lookup(rows)
    widths = [max(24, len(m) + 2) for m in metrics]
    header = (f"{'method':<12}{'kind':<10}" + "".join(f"{m:<{w}}" for m, w in zip(metrics, widths))
              + "NaN (" + "/".join(metrics) + ")")
    lines = [header, "-" * len(header)]
    for name in order:
        if not any((name, criterion, m) in cells for m in metrics):
            continue
        found = [cells.get((name, criterion, m)) for m in metrics]
        nans = "/".join("-" if r is None else str(r.n_nan) for r in found)
        lines.append(f"{name:<12}{kinds[name]:<10}" + "".join(f"{_cell(r):<{w}}" for r, w in zip(found, widths))
                     + nans)
    return lines


def _listed(values: Sequence) -> str:
    """``8, 16 and 32``; ``8``."""
    words = [str(v) for v in values]
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words)


def time_against_floor(timing: Mapping) -> str:
    """One line: the study's time beside the floor of the network passes it made, and the work besides its passes,
    timed apart by kind (:mod:`bundle.passes`)."""
    from bundle.console import duration
    from bundle.passes import WORK

    images, batches = timing["images"], timing["batches"]
    sweep = f", a larger one where its timing takes at most {timing['budget_s']:g} s" if len(batches) > 1 else ""
    worked = [f"{WORK[kind]} {duration(seconds)}" for kind, seconds in timing.get("work_s", {}).items()
              if seconds >= 0.5]
    besides = f"; besides its passes, {_listed(worked)}" if worked else ""
    return (f"Time: {duration(timing['measured_s'])} up to this report against a floor of "
            f"{duration(timing['floor_s'])} ({timing['measured_s'] / timing['floor_s']:.2f}x): the {images['forward']:,}"
            f" forward, {images['backward']:,} backward, {images['second_order']:,} second-order and {images['train']:,}"
            " training images this run put through its networks, each at the best per-image time of its kind on this "
            f"machine (timed at batches of {_listed(batches)}{sweep}){besides}; scripts/benchmark_study.py breaks it "
            "down by stage")


def data_issue_line(data_issues: Mapping[str, Mapping[str, int]] | None) -> str | None:
    """``Data: N study images skipped (reason n, ...); M repaired (...)``, or None when nothing was."""
    parts = [f"{sum(counts.values())} study image(s) {action} ("
             + ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())) + ")"
             for action, counts in (data_issues or {}).items() if counts]
    return "Data: " + "; ".join(parts) + ", each named in the run's warnings" if parts else None


def _rate(rate: float, low: float, high: float) -> str:
    return "-" if rate is None or pd.isna(rate) else f"{rate:.2f} [{low:.2f}, {high:.2f}]"


def calibration_lines(record: Mapping) -> list[str]:
    """Per criterion: calibrated or not (why), the worst false-PASS rate and the lowest power with their exact
    intervals, and each graded control's trend and the level where PASS is lost."""
    lines = []
    for c in record["criteria"]:
        graded = [(k.split(":", 1)[1], v, c.get(f"resolution:{k.split(':', 1)[1]}")) for k, v in c.items()
                  if k.startswith("spearman:")]
        trends = "; ".join(f"{name}: Spearman with the level {rho:+.2f}, PASS lost at "
                           + ("no level tried" if lost is None or not np.isfinite(lost) else f"{lost:g}")
                           for name, rho, lost in graded if rho is not None)
        state = {True: "calibrated", False: "UNCALIBRATED"}.get(c["calibrated"], "not calibrated")
        lines.append(f"  {c['criterion']:<24} {state:<15} "
                     f"false-PASS at most {_rate(c['false_pass_rate'], 0, c['false_pass_high'])}, "
                     f"power at least {_rate(c['power'], c['power_low'], 1)}" + (f"; {trends}" if trends else "")
                     + ("" if c["calibrated"] is True else f"; {c['why']}"))
    return lines


def format_calibration(record: Mapping) -> str:
    """The console report of ``run calibrate``: every control's verdicts over the draws, then per criterion."""
    lines = [f"Calibration of the verdict rules ({record['date']}, {record['draws']} draws of the control seeds and of "
             f"bootstrap resamples of the images; a known-good control must PASS in at least {record['power_target']} "
             f"of them, a known-bad one in at most alpha; p-values adjusted as Holm would least favour each control "
             f"over the study's {record['family']} tests; {record['seconds']:.0f} s)", ""]
    wide = max([len("control")] + [len(r["label"]) for r in record["table"]]) + 2  # a level's label whole
    header = (f"{'criterion':<24}{'control':<{wide}}{'model':<11}{'expected':<10}{'PASS rate [95% CI]':<22}"
              f"{'FAIL':>6}{'INCONCL':>9}{'score':>9}  met")
    lines += [header, "-" * len(header)]
    for r in record["table"]:
        met = {True: "yes", False: "NO"}.get(r["met"], "")
        lines.append(f"{r['criterion']:<24}{r['label']:<{wide}}{r['model']:<11}{r['expected']:<10}"
                     f"{_rate(r['pass_rate'], r['pass_low'], r['pass_high']):<22}{r['fail']:>6}{r['inconclusive']:>9}"
                     f"{np.nan if r['score'] is None else r['score']:>9.3f}  {met}".rstrip())
    lines += ["", "Per criterion"] + calibration_lines(record)
    if record.get("failures"):
        lines += ["", "Controls not scored in some draws (counted as not PASS):"]
        lines += sorted({f"  {f['criterion']}: {f['method']}: {f['error']}" for f in record["failures"]})
    return "\n".join(lines)


def trust_lines(verdicts: pd.DataFrame, trust: Mapping) -> list[str]:
    """The report's "Can these verdicts be trusted?" section: the calibration the verdicts rest on, each verdict's
    stability, and what would decide each INCONCLUSIVE."""
    lines = ["", "Can these verdicts be trusted?"]
    record, status = trust.get("record"), trust.get("status", {})
    if record is not None and any(s["calibrated"] is not None for s in status.values()):
        name = Path(str(trust.get("file"))).name
        lines.append(f"Calibration: {name}, {record['date']}, {record['draws']} draws, each control judged as one of "
                     f"the study's {record['family']} tests (every control's row: "
                     f"{name.replace('.json', '.txt')}); ? marks the verdicts of an uncalibrated criterion, "
                     "INCONCLUSIVE by rule")
        lines += [line for line in calibration_lines(record)
                  if status.get(line.split()[0], {}).get("calibrated") is not None]
    others = sorted(n for n, s in status.items() if s["calibrated"] is None and record is not None
                    and s["why"].startswith(SAID_ONE_BY_ONE))
    lines += [f"  {n:<24} {status[n]['why']}" for n in others]  # could not calibrate it, or its controls changed
    missing = sorted(n for n, s in status.items() if s["calibrated"] is None and n not in others)
    if missing:
        lines.append(f"Not calibrated for these settings ({', '.join(missing)}): their verdict rules have not been "
                     "checked on controls with known answers; run the calibration with the same config files: "
                     "python -m monai.bundle run calibrate --config_file <the same files and overrides>")
    judged = verdicts[verdicts.get("stability", pd.Series(dtype=float)).notna()] if "stability" in verdicts \
        else verdicts.iloc[:0]
    if len(judged):
        unstable = judged[judged.unstable.eq(True)]
        lines.append(f"Stability: the share of {trust.get('stability_resamples')} bootstrap resamples of the images "
                     f"that give each verdict again; {len(judged) - len(unstable)} of {len(judged)} verdicts are stable "
                     f"(~ marks those below 0.8)" + (":" if len(unstable) else ""))
        lines += [f"  {v.criterion:<24} {v.method:<12} {v.verdict:<13} {v.stability:.2f}"
                  for v in unstable.itertuples(index=False)]
    replicate = trust.get("replicate")
    if replicate is not None:
        compared = replicate[replicate.agree.notna()]
        differ = compared[~compared.agree.astype(bool)]
        lines.append(f"Replicate: the criteria again with {replicate.model.iloc[0] if len(replicate) else '?'} as the "
                     f"model under study: {len(compared) - len(differ)} of {len(compared)} verdicts agree"
                     + (":" if len(differ) else ""))
        lines += [f"  {r.criterion:<24} {r.method:<12} {r.verdict:<13} replicate {r.replicate}"
                  for r in differ.itertuples(index=False)]
        lines += [f"  {c}: {why}" for c, why in dict(zip(replicate.criterion[replicate.agree.isna()],
                                                         replicate.replicate[replicate.agree.isna()])).items()]
    undecided = verdicts[verdicts.verdict.eq("INCONCLUSIVE") & verdicts.get(
        "images_needed", pd.Series(np.nan, index=verdicts.index)).notna()]
    if len(undecided):
        settings = trust.get("image_settings", {})
        lines.append("What would decide each INCONCLUSIVE: the images its deciding test needs at 80 % power if the "
                     "observed effect and spread hold (normal approximation of the test, Bonferroni over its Holm "
                     "family; Fisher's z for PSC's correlation)")
        for v in undecided.itertuples(index=False):
            if not np.isfinite(v.images_needed):
                lines.append(f"  {v.criterion:<24} {v.method:<12} no effect observed: more images would not decide it")
                continue
            n, setting = int(v.images_needed), settings.get(v.criterion)
            study = trust.get("study_images")  # a criterion's images are the first of the study's
            widen = f" --saliency#n_images {n}" if setting and setting != "saliency#n_images" and study and n > study \
                else ""
            override = f": --{setting} {n}{widen}" if setting else ""
            lines.append(f"  {v.criterion:<24} {v.method:<12} about {int(v.images_needed)} images{override}")
    return lines


def format_report(result: StudyResult) -> str:
    """The whole console report of a study's result: title, models, the verdict table, whether the verdicts can be
    trusted (:func:`trust_lines`), every rule, each criterion's table (per-step curves are in the CSVs, the figures
    and MLflow), times and what was not scored."""
    r = result
    title, summary, verdicts, failures, order, kinds = r.title, r.summary, r.verdicts, r.failures, r.order, r.kinds
    headlines, notes, aucs, seconds, tabled, data_issues, trust = (r.headlines, r.notes, r.aucs, r.seconds, r.tabled,
                                                                   r.data_issues, r.trust)
    lines = [title] + [line for line in [data_issue_line(data_issues)] if line]
    if aucs:
        lines += ["", "Models (classification AUC on the labelled validation images; agreement only means something "
                      "between models of similar AUC, a label-permuted model should be near 0.5)"]
        lines += [f"  {name:<36} AUC {auc:.3f}" for name, auc in aucs.items()]
    model_rows = verdicts[~verdicts.method.isin(list(kinds))]  # about the model itself
    lines += [""] * (len(model_rows) > 0) + [f"{v.criterion} ({v.method}): {v.verdict}: {v.rule}"
                                              for v in model_rows.itertuples(index=False)]
    lines += ["", "Verdicts (mean [95% bootstrap CI] over images; baselines are judged only by the criteria that "
                  "change the model or the input (randomisation, PSC), where a map that ignores the model must not "
                  "PASS)"]
    lines += verdict_table(summary, verdicts, order, kinds, headlines)
    if trust is not None:
        lines += trust_lines(verdicts, trust)
    lines += ["", "Deciding rules"]
    for v in verdicts[verdicts.method.isin(list(kinds))].itertuples(index=False):
        lines.append(f"  {v.criterion:<22} {v.method:<11} {v.verdict + verdict_mark(v):<13} {v.rule}")
    for criterion in dict.fromkeys(summary[summary.method.isin(list(kinds))].criterion):
        lines += ["", f"{criterion}: {notes.get(criterion, '')}".rstrip(": ")]
        lines += (model_table(summary, criterion, headlines.get(criterion, ""), order)
                  or metric_table(summary, criterion, order, kinds, (tabled or {}).get(criterion)))
        lines += step_table(summary, criterion, headlines.get(criterion, ""), order)
    if seconds:
        lines += ["", "Time per criterion: " + ", ".join(f"{n} {s:.0f} s" for n, s in seconds.items())]
    if r.timing:
        lines.append(time_against_floor(r.timing))
    if failures:
        lines += ["", "Not scored (the study went on without them):"]
        lines += [f"  {f['criterion']}: {f['method']}: {f['error']}" for f in failures]
    return "\n".join(lines)

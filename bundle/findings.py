"""The study once per finding of a multi-label dataset (CheXlocalize's ten findings, NIH's eight boxed ones), with one
table and one MLflow run over all of them.

Each finding is a study of its own, exactly as ``run evaluate --dataset_options#finding <finding>`` would run it: a
binary model trained for the finding (its checkpoints under ``models/<dataset>/<finding>``), the finding's positives and
masks, its own records, report and MLflow run (named ``<run_name>_<finding>``, tagged ``finding``). This driver then
prints every finding's verdicts side by side, writes them to ``<run_name>_findings.csv`` (the summaries with their
finding to ``<run_name>_findings_summary.csv``) and logs a parent MLflow run
whose keys carry the finding (``<finding>/localization/auprc/gradcam``, tags ``verdict/<finding>/<criterion>/<method>``)
with the finding studies nested under it.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Sequence
from copy import deepcopy
from pathlib import Path

import pandas as pd

from bundle.data import DATALISTS, FINDINGS
from bundle.mirror import mirror_or_explain
from bundle.tracking import log_study, running_workflow

logger = logging.getLogger(__name__)


def finding_slug(finding: str) -> str:
    """A finding as a folder and run-name part: ``Airspace Opacity`` -> ``airspace_opacity``."""
    return re.sub(r"[^0-9a-z]+", "_", finding.lower()).strip("_")


def _finding_option(dataset_name: str):
    """The reader's ``finding`` parameter, or None for a single-target dataset."""
    reader = DATALISTS.get(dataset_name)
    return inspect.signature(reader).parameters.get("finding") if reader else None


def checkpoint_dir(models_dir: str, dataset_name: str, dataset_options: dict | None = None) -> str:
    """Where a dataset's models live (the configs' default ``ckpt_dir``): ``models_dir`` for the synthetic data,
    ``<models_dir>/<dataset>`` for a real one, and ``<models_dir>/<dataset>/<finding>`` for a multi-label one (the
    finding asked for, else the reader's default), so no model trained for one finding or dataset is reused for
    another.

    Args:
        models_dir: the bundle's models folder (``<bundle_root>/models`` in the configs).
        dataset_name: the dataset (``dataset_name``); ``synthetic`` keeps its models in ``models_dir`` itself.
        dataset_options: the reader's options (``dataset_options``); only its ``finding`` is read, for a
            multi-label dataset.
    """
    if dataset_name == "synthetic":
        return models_dir
    option = _finding_option(dataset_name)
    if option is None:
        return f"{models_dir}/{dataset_name}"
    return f"{models_dir}/{dataset_name}/{finding_slug((dataset_options or {}).get('finding', option.default))}"


def findings_of(dataset_name: str, findings: Sequence[str] | None) -> list[str]:
    """``findings`` checked against the dataset's, or all its localisable findings when None or empty."""
    if _finding_option(dataset_name) is None:
        raise ValueError(f"dataset {dataset_name!r} has one target; per-finding studies need a multi-label dataset: "
                         f"{sorted(FINDINGS)}")
    known = FINDINGS.get(dataset_name)
    chosen = list(findings or known or ())
    unknown = [f for f in chosen if known is not None and f not in known]
    if unknown or not chosen:
        raise ValueError(f"findings {unknown or chosen} are not localisable findings of {dataset_name!r}: "
                         f"choose from {list(known or ())}")
    return chosen


def findings_table(verdicts: pd.DataFrame, summary: pd.DataFrame, headlines: dict[str, str]) -> list[str]:
    """For each criterion, sources (rows: methods with their verdicts, then baselines and references) x findings
    (columns): the headline metric's mean over the finding's images."""
    findings = list(dict.fromkeys(summary.finding))
    means = {(r.finding, r.criterion, r.method): r.mean for r in summary.itertuples(index=False)
             if r.metric == headlines.get(r.criterion)}
    verdict_of = {(v.finding, v.criterion, v.method): v.verdict for v in verdicts.itertuples(index=False)}
    width = max(22, *(len(f) + 2 for f in findings))
    lines = []
    for criterion, metric in headlines.items():
        sources = list(dict.fromkeys(m for f, c, m in means if c == criterion))
        if not sources:
            continue
        header = f"{'source':<14}" + "".join(f"{f:<{width}}" for f in findings)
        lines += ["", f"{criterion} ({metric}) per finding", header.rstrip(), "-" * len(header.rstrip())]
        for source in sources:
            cells = []
            for finding in findings:
                mean = means.get((finding, criterion, source))
                text = "-" if mean is None else "n/a" if pd.isna(mean) else f"{mean:.3f}"
                cells.append(f"{text + ' ' + verdict_of.get((finding, criterion, source), ''):<{width}}")
            lines.append((f"{source:<14}" + "".join(cells)).rstrip())
    return lines


def checkpoint_folders(config: dict, findings: Sequence[str]) -> dict[str, str]:
    """Each finding's ``ckpt_dir`` under ``config`` (a bundle config, merged and overridden); an error when two
    findings share one, which would train a model for the first and reuse it for the others."""
    from monai.bundle import ConfigParser

    folders: dict[str, str] = {}
    for finding in findings:
        parser = ConfigParser(deepcopy(config))
        parser.update({"dataset_options#finding": finding})
        folder = str(parser.get_parsed_content("ckpt_dir"))
        if folder in folders.values():
            first = next(f for f, d in folders.items() if d == folder)
            raise ValueError(f"ckpt_dir {folder} is the same for {first!r} and {finding!r}: leave ckpt_dir at its "
                             "default, or make it depend on @dataset_options as the default does")
        folders[finding] = folder
    return folders


def study_per_finding(findings: Sequence[str] | None = None) -> pd.DataFrame:
    """Run the evaluate workflow that called this (``python -m monai.bundle run per_finding``) once per finding;
    print, save and log the verdicts of all of them; return them (one row per finding, criterion and method).

    Args:
        findings: the findings studied, each a localisable finding of the multi-label dataset (``None`` or empty:
            every one of them).
    """
    from monai.bundle import ConfigWorkflow

    from bundle import distributed

    if distributed.several_processes():  # each study would start its own collectives, or every process run them all
        raise ValueError("run per_finding runs in one process: start it with python -m monai.bundle, not torchrun "
                         "(a study of one finding runs under torchrun with --dataset_options#finding <finding>)")
    workflow = running_workflow()
    if workflow is None:
        raise RuntimeError("study_per_finding runs inside a bundle workflow: python -m monai.bundle run per_finding "
                           "--config_file configs/evaluate.json ...")
    parser = workflow.parser
    values = {k: parser.get_parsed_content(k) for k in ("dataset_name", "run_name", "output_dir",
                                                         "local_tracking_uri", "tracking_uri", "experiment_name")}
    chosen = findings_of(values["dataset_name"], findings)
    output_dir = Path(values["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    config = output_dir / f"{values['run_name']}_config.json"
    parser.export_config_file(parser.get(), str(config))  # the merged config with the command line's overrides
    logging_file = workflow.config_root_path / "logging.conf"
    logging_file = str(logging_file) if logging_file.is_file() else False
    checkpoint_folders(parser.get(), chosen)  # before any study
    summaries, verdicts, comparisons, runs = [], [], [], []
    for finding in chosen:
        slug = finding_slug(finding)
        run_name = f"{values['run_name']}_{slug}"
        logger.info("finding %s: study %s", finding, run_name)
        study = ConfigWorkflow(config_file=str(config), meta_file=workflow.meta_file, logging_file=logging_file,
                               workflow_type=None, run_id="evaluate", findings=[], run_name=run_name,
                               **{"dataset_options#finding": finding})
        study.initialize()
        study.run()
        study.finalize()
        runs.append(run_name)
        studied = study.parser.get_parsed_content("study")  # the instance that ran
        headlines, primary = {n: c.headline for n, c in studied.criteria.items()}, studied.primary.name
        for name, frames in (("summary", summaries), ("verdicts", verdicts), ("comparisons", comparisons)):
            frame = pd.read_csv(output_dir / f"{run_name}_{name}.csv")
            if {"model", "step"} <= set(frame.columns):  # the model under study, trained: the headline numbers
                frame = frame[(frame.model.fillna(primary) == primary) & (frame.step.fillna("trained") == "trained")]
            frames.append(frame.assign(finding=finding))
    summary, verdict, compared = (pd.concat(f, ignore_index=True) for f in (summaries, verdicts, comparisons))
    lines = [f"Saliency trust per finding: {values['dataset_name']}, {len(chosen)} finding(s), one study each "
             f"({', '.join(runs)})", *findings_table(verdict, summary, headlines)]
    report = "\n".join(lines)
    print(report, flush=True)
    table = output_dir / f"{values['run_name']}_findings.csv"
    verdict.to_csv(table, index=False)
    summary.to_csv(output_dir / f"{values['run_name']}_findings_summary.csv", index=False)
    (output_dir / f"{values['run_name']}_findings.txt").write_text(report + "\n")
    by_finding = {"criterion": lambda f: f.finding + "/" + f.criterion}
    run_id = log_study(values["local_tracking_uri"], values["experiment_name"], values["run_name"], output_dir,
                       {"dataset": values["dataset_name"], "findings": ", ".join(chosen)},
                       summary.assign(**by_finding), verdict.assign(**by_finding),
                       compared.assign(**by_finding) if len(compared) else compared, [], [table, config], report,
                       tags={"dataset": values["dataset_name"], "findings": ", ".join(chosen)}, primary=primary,
                       children=runs)
    mirror_or_explain(values["local_tracking_uri"], values["tracking_uri"], output_dir, [run_id])
    return verdict

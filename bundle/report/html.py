"""The study as one self-contained HTML file: verdicts first, then every criterion's table and the figures.

Formatting only, as the console report: every number comes from the summary and verdict tables, every figure
from a PNG the study already drew; images are embedded, so the file opens anywhere without a network.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from bundle.result import StudyResult
from bundle.report.tables import (
    FIDELITY, _cell, _lookup, data_issue_line, model_cells, time_against_floor, trust_lines, verdict_cells,
    verdict_mark,
)

VERDICT_CLASSES = {"PASS": "pass", "FAIL": "fail", "INCONCLUSIVE": "inconclusive"}

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d2330; }
h1 { font-size: 20px; margin-bottom: 4px; } h2 { font-size: 16px; margin-top: 28px; }
p.meta { color: #5b6270; font-size: 13px; margin-top: 0; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #d5d9e0; padding: 4px 6px; text-align: left; vertical-align: top; white-space: nowrap; }
th { background: #f2f4f7; }
td.pass { background: #d8f1dd; } td.fail { background: #f8d7d7; } td.inconclusive { background: #fdf1cf; }
td .verdict { font-weight: 600; display: block; } td sup a { color: #5b6270; text-decoration: none; }
tr.baseline td:first-child, tr.reference td:first-child { font-style: italic; }
ol.rules { font-size: 12px; color: #333; } ol.rules li { margin-bottom: 3px; }
figure { margin: 12px 0 24px; } figure img { max-width: 100%; border: 1px solid #e3e6eb; }
figcaption { font-size: 12px; color: #5b6270; }
.legend span { display: inline-block; padding: 1px 6px; margin-right: 6px; font-size: 12px; }
"""

# marks every figure as loaded (or not) in the DOM once the page has loaded: what a headless browser checks
LOAD_CHECK = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.querySelectorAll("figure img"));
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-figures", images.length);
  document.body.setAttribute("data-figures-loaded", loaded.length);
});
"""


def _escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def embedded_png(path: str | Path) -> str:
    """A PNG file as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def verdict_section(summary: pd.DataFrame, verdicts: pd.DataFrame, order: Sequence[str], kinds: Mapping[str, str],
                    headlines: Mapping[str, str]) -> str:
    """Methods x criteria, each cell the headline metric's mean [95% CI] coloured by the verdict, the deciding rule
    on hover and as a numbered footnote."""
    cells = verdict_cells(summary, verdicts, kinds)
    judged = {(v.method, v.criterion): v for v in verdicts.itertuples(index=False)}
    columns = [(c, m) for c, m in headlines.items() if any(k[1] == c and k[0] in kinds for k in cells)]
    head = "".join(f"<th>{_escape(c)}<br><small>{_escape(m)}</small></th>" for c, m in columns)
    rows, rules = [], []
    for name in order:
        tds = []
        for criterion, metric in columns:
            row, verdict = cells.get((name, criterion, metric)), judged.get((name, criterion))
            text = "-" if row is None else _escape(_cell(row))
            if verdict is None:
                tds.append(f"<td>{text}</td>")
                continue
            rules.append(f"<li id='rule{len(rules) + 1}'><b>{_escape(criterion)}, {_escape(name)}: "
                         f"{_escape(verdict.verdict)}</b>: {_escape(verdict.rule)}</li>")
            tds.append(f"<td class='{VERDICT_CLASSES.get(verdict.verdict, '')}' title='{_escape(verdict.rule)}'>{text}"
                       f"<span class='verdict'>{_escape(verdict.verdict + verdict_mark(verdict))}"
                       f"<sup><a href='#rule{len(rules)}'>"
                       f"{len(rules)}</a></sup></span></td>")
        flag = "!" if getattr(judged.get((name, FIDELITY)), "verdict", "") == "FAIL" else ""
        rows.append(f"<tr class='{_escape(kinds[name])}'><td>{_escape(name)}{flag}</td><td>{_escape(kinds[name])}</td>"
                    + "".join(tds) + "</tr>")
    legend = "".join(f"<span class='{c}' style='background: var(--{c})'>{v}</span>" for v, c in VERDICT_CLASSES.items())
    return (f"<table id='verdicts'><thead><tr><th>method</th><th>kind</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
            f"<p class='legend'>{legend} mean [95% bootstrap CI] over images; hover a cell or follow its number for "
            "the rule that decided it; ! marks a method whose cut pass counts change its maps, ~ an unstable "
            "verdict, ? a verdict of an uncalibrated criterion (see Can these verdicts be trusted?).</p>"
            f"<h2>Deciding rules</h2><ol class='rules'>{''.join(rules)}</ol>")


def metric_section(summary: pd.DataFrame, criterion: str, order: Sequence[str], kinds: Mapping[str, str],
                   metrics: Sequence[str] | None = None) -> str:
    """One criterion's metrics: a row per map source, mean [95% CI] per metric, and the NaN counts."""
    rows = summary[summary.criterion == criterion]
    metrics = [m for m in (metrics or dict.fromkeys(rows.metric)) if m in set(rows.metric)]
    cells = _lookup(rows)
    body = []
    for name in order:
        found = [cells.get((name, criterion, m)) for m in metrics]
        if all(r is None for r in found):
            continue
        nans = "/".join("-" if r is None else str(r.n_nan) for r in found)
        body.append(f"<tr class='{_escape(kinds.get(name, ''))}'><td>{_escape(name)}</td>"
                    f"<td>{_escape(kinds.get(name, ''))}</td>"
                    + "".join(f"<td>{_escape(_cell(r))}</td>" for r in found) + f"<td>{nans}</td></tr>")
    head = "".join(f"<th>{_escape(m)}</th>" for m in metrics)
    return (f"<table class='metrics'><thead><tr><th>method</th><th>kind</th>{head}<th>NaN</th></tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def model_section(summary: pd.DataFrame, criterion: str, metric: str, order: Sequence[str]) -> str:
    """One criterion's headline metric per source on each model it scored (:func:`model_cells`); empty for a
    criterion of one model."""
    models, cells = model_cells(summary, criterion, metric)
    if not models:
        return ""
    body = [f"<tr><td>{_escape(name)}</td>" + "".join(
        f"<td>{_escape(_cell(cells[(name, m)])) if (name, m) in cells else '-'}</td>" for m in models) + "</tr>"
        for name in order if any((name, m) in cells for m in models)]
    head = "".join(f"<th>{_escape(m)}</th>" for m in models)
    return (f"<table class='metrics'><thead><tr><th>{_escape(metric)}</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def html_report(result: StudyResult, provenance: str = "") -> str:
    """A study's result as one HTML page: title, models, the verdict table with its rules, whether the verdicts can
    be trusted (calibration, stability, what would decide each INCONCLUSIVE), each criterion's table, then its
    figures (caption -> PNG) embedded."""
    r = result
    title, summary, verdicts, order, kinds, headlines = r.title, r.summary, r.verdicts, r.order, r.kinds, r.headlines
    notes, figures, aucs, seconds, tabled, data_issues, trust = (r.notes, r.figures, r.aucs, r.seconds, r.tabled,
                                                                 r.data_issues, r.trust)
    parts = [f"<h1>{_escape(title)}</h1>"]
    if provenance:
        parts.append(f"<p class='meta'>{_escape(provenance)}</p>")
    data_line = data_issue_line(data_issues)
    if data_line:
        parts.append(f"<p><b>{_escape(data_line)}</b></p>")
    model_rows = verdicts[~verdicts.method.isin(list(kinds))]
    if aucs:
        parts.append("<p class='meta'>Classification AUC on the labelled validation images: "
                     + "; ".join(f"{_escape(n)} {a:.3f}" for n, a in aucs.items()) + "</p>")
    parts += [f"<p><b>{_escape(v.criterion)}</b> ({_escape(v.method)}): <b>{_escape(v.verdict)}</b>: "
              f"{_escape(v.rule)}</p>" for v in model_rows.itertuples(index=False)]
    parts += ["<h2>Verdicts</h2>", verdict_section(summary, verdicts, order, kinds, headlines)]
    if trust is not None:  # the console's section, as preformatted lines
        lines = trust_lines(verdicts, trust)
        parts += [f"<h2>{_escape(lines[1])}</h2>", f"<pre class='trust'>{_escape(chr(10).join(lines[2:]))}</pre>"]
    for criterion in dict.fromkeys(summary[summary.method.isin(list(kinds))].criterion):
        parts += [f"<h2>{_escape(criterion)}</h2>"]
        if notes and notes.get(criterion):
            parts.append(f"<p class='meta'>{_escape(notes[criterion])}</p>")
        parts.append(model_section(summary, criterion, headlines.get(criterion, ""), order)
                     or metric_section(summary, criterion, order, kinds, (tabled or {}).get(criterion)))
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [f"<figure><img src='{embedded_png(path)}' alt='{_escape(caption)}'>"
                  f"<figcaption>{_escape(caption)}</figcaption></figure>" for caption, path in figures.items()]
    if seconds:
        parts.append("<p class='meta'>Time per criterion: "
                     + ", ".join(f"{_escape(n)} {s:.0f} s" for n, s in seconds.items()) + "</p>")
    if r.timing:
        parts.append(f"<p class='meta'>{_escape(time_against_floor(r.timing))}</p>")
    colours = "--pass: #d8f1dd; --fail: #f8d7d7; --inconclusive: #fdf1cf;"
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_escape(title)}</title><style>:root {{ {colours} }}{STYLE}</style></head>"
            f"<body>{''.join(parts)}<script>{LOAD_CHECK}</script></body></html>")


def write_html_report(path: str | Path, result: StudyResult) -> Path:
    """:func:`html_report` written to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_report(result), encoding="utf-8")
    return path

"""The HTML report: one self-contained file whose verdict table and figures come from the study's tables, checked in
the markup and, where Debian's Chromium is installed, as a headless browser renders it."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from bundle.report import write_html_report  # noqa: E402
from bundle.summary import SUMMARY_COLUMNS  # noqa: E402
from bundle.result import StudyResult  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Cells(HTMLParser):
    """The verdict table's cells (class, title, text) and every image's src."""

    def __init__(self) -> None:
        super().__init__()
        self.cells, self.images, self.rules, self._cell, self._table = [], [], 0, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id") or attrs.get("class")
        if tag == "td" and self._table == "verdicts":
            self._cell = [attrs.get("class", ""), attrs.get("title", ""), ""]
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "li" and attrs.get("id", "").startswith("rule"):
            self.rules += 1

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append(tuple(self._cell))
            self._cell = None
        if tag == "table":
            self._table = None


def study_tables() -> StudyResult:
    rows = [("model", "grad", "localization", "method", "auprc", "trained", 0.294, 0.247, 0.340, 32, 0),
            ("model", "gradcam", "localization", "method", "auprc", "trained", 0.130, 0.090, 0.175, 32, 0),
            ("model", "prior", "localization", "baseline", "auprc", "trained", 0.317, 0.247, 0.385, 32, 0),
            ("model", "grad", "faithfulness", "method", "sic_auc", "trained", 0.893, 0.869, 0.914, 26, 6),
            ("model", "gradcam", "faithfulness", "method", "sic_auc", "trained", float("nan"), float("nan"),
             float("nan"), 0, 32)]
    columns = ["model", "method", "criterion", "kind", "metric", "step", "mean", "ci_low", "ci_high", "n", "n_nan"]
    summary = pd.DataFrame(rows, columns=columns)[list(SUMMARY_COLUMNS)]
    verdicts = pd.DataFrame([
        ("localization", "grad", "INCONCLUSIVE", "not distinguishable from prior (p_Holm >= 0.05)"),
        ("localization", "gradcam", "FAIL", "below prior <significantly>"),
        ("faithfulness", "grad", "PASS", "beats random"),
        ("faithfulness", "gradcam", "INCONCLUSIVE", "only 0 paired images"),
    ], columns=["criterion", "method", "verdict", "rule"])
    return StudyResult(title="Saliency trust study: test", summary=summary, verdicts=verdicts,
                       order=["grad", "gradcam", "prior"],
                       kinds={"grad": "method", "gradcam": "method", "prior": "baseline"},
                       headlines={"localization": "auprc", "faithfulness": "sic_auc"}, aucs={"model": 0.96},
                       seconds={"localization": 12.0})


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("html")
    figure = tmp / "curve.png"
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(figure)
    plt.close(fig)
    result = study_tables()
    result.figures["a curve"] = figure
    return write_html_report(tmp / "report.html", result), figure


def test_verdict_cells_carry_value_verdict_and_rule_and_figures_are_embedded(report):
    path, figure = report
    text = path.read_text()
    assert not re.search(r"""(src|href)=['"](https?:|//)""", text)  # nothing fetched from a network
    cells = Cells()
    cells.feed(text)
    judged = [c for c in cells.cells if c[0]]
    assert ("fail", "below prior <significantly>", "0.130 [0.090, 0.175]FAIL3") in judged  # escaped, numbered
    assert ("pass", "beats random", "0.893 [0.869, 0.914]PASS2") in judged
    assert any(c[2] == "n/aINCONCLUSIVE4" for c in judged)
    assert ("", "", "0.317 [0.247, 0.385]") in cells.cells and ("", "", "-") in cells.cells  # baseline: no verdict
    assert cells.rules == 4 == len(judged)
    assert text.index("id='verdicts'") < text.index("<h2>localization</h2>")  # the verdicts come first
    (src,) = cells.images
    assert base64.b64decode(src.split(",", 1)[1]) == figure.read_bytes()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium); "
                                             ".ci/run installs it")
def test_headless_chromium_renders_the_table_and_every_figure(report, tmp_path):
    path, _ = report
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert "id=\"verdicts\"" in dom and "0.130 [0.090, 0.175]" in dom
    figures, loaded = (re.search(rf'{a}="(\d+)"', dom) for a in ("data-figures", "data-figures-loaded"))
    assert figures and loaded and int(figures.group(1)) == int(loaded.group(1)) == 1
    shot = tmp_path / "top.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1200,800", f"--screenshot={shot}", path.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 5000

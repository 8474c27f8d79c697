"""Tables and figures for people to look at."""

from bundle.report.figures import (
    agreement_scatter, contact_sheet, epoch_trust_curves, pic_curves_figure, psc_scatter, randomization_curves,
    saliency_gallery,
)
from bundle.report.html import write_html_report
from bundle.report.tables import format_report

# the figure a criterion asks for (``Criterion.figure``): (summary, records, criterion name, path) -> path or None
FIGURES = {
    "randomization_curves": lambda summary, records, criterion, path: randomization_curves(summary, criterion, path),
    "pic_curves": pic_curves_figure,
    "psc_scatter": psc_scatter,
}

__all__ = [
    "FIGURES", "agreement_scatter", "contact_sheet", "epoch_trust_curves", "format_report", "pic_curves_figure",
    "psc_scatter", "randomization_curves", "saliency_gallery", "write_html_report",
]

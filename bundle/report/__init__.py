"""Tables and figures for people to look at."""

from bundle.report.figures import contact_sheet, pic_curves_figure, psc_scatter, randomization_curves, saliency_gallery
from bundle.report.tables import format_report

# the figure a criterion asks for (``Criterion.figure``): (summary, records, criterion name, path) -> path or None
FIGURES = {
    "randomization_curves": lambda summary, records, criterion, path: randomization_curves(summary, criterion, path),
    "pic_curves": pic_curves_figure,
    "psc_scatter": psc_scatter,
}

__all__ = ["FIGURES", "contact_sheet", "format_report", "pic_curves_figure", "psc_scatter", "randomization_curves",
           "saliency_gallery"]

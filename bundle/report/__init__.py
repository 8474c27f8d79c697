"""Tables and figures for people to look at."""

from bundle.report.figures import contact_sheet, randomization_curves, saliency_gallery
from bundle.report.tables import format_report

__all__ = ["contact_sheet", "format_report", "randomization_curves", "saliency_gallery"]

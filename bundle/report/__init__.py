"""Tables and figures for people to look at."""

from bundle.report.figures import contact_sheet, saliency_gallery

__all__ = ["contact_sheet", "saliency_gallery"]

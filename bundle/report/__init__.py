"""Tables and figures for people to look at."""

from bundle.report.figures import contact_sheet

__all__ = ["contact_sheet"]

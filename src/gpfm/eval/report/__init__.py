"""The report stage: the self-contained HTML page (``html``), per-task artifact panels (``artifacts``), plots."""

from gpfm.eval.report.html import build_report_html, write_report

__all__ = ["build_report_html", "write_report"]

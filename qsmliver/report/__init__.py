"""Figures: QC montages and plots (matplotlib, Agg backend)."""

from qsmliver.report.html import qc_checks, write_cohort_index, write_subject_report
from qsmliver.report.montage import Panel, qc_montage

__all__ = ["Panel", "qc_checks", "qc_montage", "write_cohort_index", "write_subject_report"]

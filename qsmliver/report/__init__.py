"""Figures: QC montages and plots (matplotlib, Agg backend)."""

from qsmliver.report.montage import Panel, qc_montage

__all__ = ["Panel", "qc_montage"]

"""Figures: QC montages and plots (matplotlib, Agg backend)."""

"""Plots of the monitoring analysis (matplotlib object API with the Agg canvas, PNG, atomic).

- scatter of imaging change vs ferritin change (absolute and percentage), per therapy, with the
  OLS line and its 95 % confidence band of the mean (statsmodels ``get_prediction``) and the
  real-change thresholds as dashed lines (as the seed study's figures 2, 3 and 5);
- time courses of the imaging measure and ferritin per patient;
- Bland-Altman plot of the percentage changes (imaging − ferritin;
  :func:`qsmliver.calibrate.stats.bland_altman`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qsmliver.io.atomic import atomic_path

__all__ = ["fit_band", "monitor_plots", "save_figure"]


def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Any, path: str | os.PathLike, *, overwrite: bool = False,
                dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return path


def fit_band(x: Sequence[float], y: Sequence[float], *, alpha: float = 0.05,
             points: int = 100) -> dict[str, np.ndarray] | None:
    """OLS line of ``y`` on ``x`` and its (1 − alpha) confidence band of the mean on a grid.

    Returns None with fewer than 3 finite pairs or a constant ``x``.
    """
    from statsmodels.regression.linear_model import OLS

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    good = np.isfinite(x) & np.isfinite(y)
    x, y = x[good], y[good]
    if x.size < 3 or np.ptp(x) == 0:
        return None
    fit = OLS(y, np.column_stack([np.ones_like(x), x])).fit()
    grid = np.linspace(x.min(), x.max(), points)
    frame = fit.get_prediction(np.column_stack([np.ones_like(grid), grid])).summary_frame(
        alpha=alpha)
    return {"x": grid, "fit": frame["mean"].to_numpy(), "low": frame["mean_ci_lower"].to_numpy(),
            "high": frame["mean_ci_upper"].to_numpy(), "slope": float(fit.params[1]),
            "intercept": float(fit.params[0])}


def _scatter(ax: Any, pairs: pd.DataFrame, x: str, y: str, x_threshold: float | None,
             y_threshold: float | None, xlabel: str, ylabel: str) -> None:
    therapies = sorted(pairs["therapy"].astype(str).unique())
    colours = [f"C{i % 10}" for i in range(len(therapies))]
    for therapy, colour in zip(therapies, colours, strict=True):
        sub = pairs[pairs["therapy"].astype(str) == therapy]
        ax.scatter(sub[x], sub[y], s=16, color=colour, label=f"{therapy} (n={len(sub)})")
        band = fit_band(sub[x], sub[y])
        if band is not None and len(therapies) > 1:
            ax.plot(band["x"], band["fit"], color=colour, linewidth=1)
    band = fit_band(pairs[x], pairs[y])
    if band is not None:
        ax.plot(band["x"], band["fit"], color="k", linewidth=1.5,
                label=f"all: y = {band['intercept']:.3g} + {band['slope']:.3g}·x")
        ax.plot(band["x"], band["low"], "k:", linewidth=1, label="95 % CI of the fit")
        ax.plot(band["x"], band["high"], "k:", linewidth=1)
    if x_threshold is not None:
        for value in (-x_threshold, x_threshold):
            ax.axvline(value, color="0.5", linestyle="--", linewidth=0.8)
    if y_threshold is not None:
        for value in (-y_threshold, y_threshold):
            ax.axhline(value, color="0.5", linestyle="--", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def monitor_plots(report: Any, folder: str | os.PathLike, *, overwrite: bool = False
                  ) -> list[Path]:
    """Write the monitoring PNGs of a :class:`qsmliver.analysis.monitor.MonitorReport`.

    Files: ``scatter_change_absolute.png``, ``scatter_change_percent.png``,
    ``time_courses.png``, ``bland_altman_change_percent.png``.
    """
    from qsmliver.analysis.monitor import FERRITIN, measure_name, measure_unit
    from qsmliver.calibrate.stats import bland_altman

    folder = Path(folder)
    pairs = report.pairs
    imaging = report.imaging
    limits = report.thresholds
    written = []
    for kind, suffix in (("absolute", "_change"), ("percent", "_change_percent")):
        fig = _figure((6.4, 5.0))
        ax = fig.subplots()
        fer_t = limits[FERRITIN]
        img_t = limits[imaging]
        x_thr = fer_t.value if fer_t.kind == kind else None
        y_thr = img_t.value if img_t.kind == kind else None
        percent = kind == "percent"
        xlabel = f"ferritin change ({'%' if percent else measure_unit(FERRITIN)})"
        ylabel = (f"{measure_name(imaging)} change "
                  f"({'%' if percent else measure_unit(imaging)})")
        _scatter(ax, pairs, f"{FERRITIN}{suffix}", f"{imaging}{suffix}", x_thr, y_thr,
                 xlabel, ylabel)
        ax.set_title(f"{kind} change between consecutive exams (later − earlier)", fontsize=9)
        written.append(save_figure(fig, folder / f"scatter_change_{kind}.png",
                                   overwrite=overwrite))

    exams = report.exams
    fig = _figure((10.0, 4.2))
    ax, bx = fig.subplots(1, 2)
    patients = list(dict.fromkeys(exams["patient_id"]))
    for i, patient in enumerate(patients):  # one line per patient
        sub = exams[exams["patient_id"] == patient]
        label = str(patient) if len(patients) <= 12 else None
        ax.plot(sub["date"], sub[imaging], marker="o", markersize=3, linewidth=1,
                color=f"C{i % 10}", label=label)
        bx.plot(sub["date"], sub[FERRITIN], marker="o", markersize=3, linewidth=1,
                color=f"C{i % 10}")
    ax.set_ylabel(f"{measure_name(imaging)} ({measure_unit(imaging)})")
    bx.set_ylabel("serum ferritin (ng/ml)")
    for axis in (ax, bx):
        axis.tick_params(axis="x", labelrotation=30, labelsize=7)
    if len(patients) <= 12:
        ax.legend(fontsize=7)
    fig.suptitle(f"time courses of {len(patients)} patients", fontsize=10)
    written.append(save_figure(fig, folder / "time_courses.png", overwrite=overwrite))

    fig = _figure((6.4, 5.0))
    ax = fig.subplots()
    a = pairs[f"{imaging}_change_percent"].to_numpy(dtype=float)
    b = pairs[f"{FERRITIN}_change_percent"].to_numpy(dtype=float)
    good = np.isfinite(a) & np.isfinite(b)
    name = measure_name(imaging)
    if good.sum() >= 3:
        ba = bland_altman(a[good], b[good])
        ax.scatter(0.5 * (a[good] + b[good]), a[good] - b[good], s=16)
        for value, style in ((ba.bias, "-"), (ba.loa_lower, "--"), (ba.loa_upper, "--")):
            ax.axhline(value, color="k", linestyle=style, linewidth=1)
        ax.set_title(f"Bland-Altman of % changes: bias {ba.bias:.1f} %, limits "
                     f"{ba.loa_lower:.1f} to {ba.loa_upper:.1f} %", fontsize=9)
    else:
        ax.set_title("Bland-Altman: fewer than 3 complete pairs", fontsize=9)
    ax.set_xlabel(f"mean of {name} and ferritin change (%)")
    ax.set_ylabel(f"{name} change − ferritin change (%)")
    written.append(save_figure(fig, folder / "bland_altman_change_percent.png",
                               overwrite=overwrite))
    return written

"""QC montage: a few slices of each map side by side, as a PNG (matplotlib, Agg backend)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qsmliver.io.atomic import atomic_path

__all__ = ["Panel", "qc_montage"]


@dataclasses.dataclass
class Panel:
    """One row of the montage.

    Attributes
    ----------
    title : str
        Row label, with the unit (e.g. ``"χ (ppm)"``).
    volume : (X, Y, Z) ndarray
        Host array.
    cmap : str
        Matplotlib colour map.
    limits : (float, float) or None
        Display window; default: the 1st-99th percentile inside ``mask`` (symmetric about 0
        when ``symmetric``).
    symmetric : bool
        Centre the window on zero (field and χ maps).
    """

    title: str
    volume: np.ndarray
    cmap: str = "gray"
    limits: tuple[float, float] | None = None
    symmetric: bool = False


def _window(panel: Panel, mask: np.ndarray | None) -> tuple[float, float]:
    if panel.limits is not None:
        return panel.limits
    values = panel.volume[mask] if mask is not None and mask.any() else panel.volume.ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    if panel.symmetric:
        extent = float(np.percentile(np.abs(values), 99)) or 1.0
        return -extent, extent
    low, high = (float(v) for v in np.percentile(values, [1, 99]))
    return low, high if high > low else low + 1.0


def qc_montage(panels: Sequence[Panel], path: str | os.PathLike, *,
               mask: np.ndarray | None = None, n_slices: int = 4, title: str = "",
               overwrite: bool = False) -> Path:
    """Write a PNG with one row per panel and ``n_slices`` axial slices per row.

    Slices are spread over the extent of ``mask`` along the third axis (the whole volume
    without a mask), shown in radiological-free array orientation (x to the right, y up).
    The file is written atomically.

    Parameters
    ----------
    panels : sequence of Panel
    path : path
        Output ``.png``.
    mask : (X, Y, Z) bool ndarray, optional
        Region for slice choice and display windows.
    n_slices : int
    title : str
    overwrite : bool

    Returns
    -------
    Path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    shape = panels[0].volume.shape
    if mask is not None and mask.any():
        z_extent = np.flatnonzero(mask.any(axis=(0, 1)))
        first, last = int(z_extent[0]), int(z_extent[-1])
    else:
        first, last = 0, shape[2] - 1
    slices = np.linspace(first, last, n_slices + 2)[1:-1].round().astype(int)
    figure = Figure(figsize=(2.2 * n_slices + 1.2, 2.2 * len(panels) + 0.4), dpi=100)
    axes = figure.subplots(len(panels), n_slices, squeeze=False)
    for row, panel in enumerate(panels):
        low, high = _window(panel, mask)
        image = None
        for column, z in enumerate(slices):
            ax = axes[row, column]
            image = ax.imshow(panel.volume[:, :, z].T, origin="lower", cmap=panel.cmap,
                              vmin=low, vmax=high, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"z = {z}", fontsize=8)
        axes[row, 0].set_ylabel(panel.title, fontsize=9)
        if image is not None:
            figure.colorbar(image, ax=list(axes[row]), fraction=0.02, pad=0.01)
    if title:
        figure.suptitle(title, fontsize=10)
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as temporary:
        figure.savefig(temporary, format="png")
    return path

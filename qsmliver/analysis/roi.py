"""Region-of-interest statistics over a label map, for any set of maps at once.

One vectorised pass per map: the voxels of every label are sorted together (label first, then
value), so counts, means, standard deviations, trimmed statistics and percentiles of all labels
come out of a handful of ``bincount`` / gather operations; no Python loop touches voxels or
labels. Works unchanged on NumPy and CuPy arrays (CuPy when any input is a CuPy array).

>>> import numpy as np
>>> labels = np.array([[[0, 1, 1, 2]]])
>>> chi = np.array([[[9.0, 0.1, 0.3, -0.2]]])
>>> table = roi_statistics({"chi": chi}, labels, {1: "caudate", 2: "thalamus"})
>>> table[["label_name", "count", "mean"]].to_string(index=False)
'label_name  count  mean\\n   caudate      2   0.2\\n  thalamus      1  -0.2'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from qsmliver.backend import get_array_module, ndimage, to_numpy
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.mask.morphology import ball

__all__ = ["ROI_COLUMNS", "erode_labels", "percentile_column", "roi_statistics"]

#: Columns of :func:`roi_statistics` before the percentile columns.
ROI_COLUMNS = ("label", "label_name", "map", "count", "volume_mm3", "mean", "median", "sd", "iqr")


def percentile_column(q: float) -> str:
    """Column name of percentile ``q`` (``5 -> "p5"``, ``2.5 -> "p2.5"``)."""
    return f"p{q:g}"


def _as_labels(labels: Any, xp: Any) -> Any:
    labels = xp.asarray(labels)
    if labels.dtype == bool:
        return labels.astype(np.int64)
    if labels.dtype.kind == "f":
        finite = bool(xp.all(xp.isfinite(labels)))
        if not finite or bool(xp.any(labels != xp.round(labels))):
            raise QSMInputError("label map must hold whole numbers (an integer dseg)",
                                field="labels")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iu":
        raise QSMInputError(f"label map has unsupported data type {labels.dtype}",
                            field="labels")
    if labels.size and int(labels.min()) < 0:
        raise QSMInputError("label map holds negative values", field="labels")
    return labels.astype(np.int64, copy=False)


def erode_labels(labels: Any, radius_mm: float, voxel_size_mm: ArrayLike) -> Any:
    """Erode every label of a label map at once by a ball of ``radius_mm``.

    A voxel keeps its label when every voxel of the ball around it (an ellipsoid in voxels on
    anisotropic grids) carries the same label; voxels whose ball leaves the volume are dropped,
    as with :func:`qsmliver.mask.morphology.erode`. This equals a binary erosion of each label
    separately, computed with one minimum and one maximum filter.

    Parameters
    ----------
    labels : (X, Y, Z) int ndarray
        Label map (NumPy or CuPy); 0 is background.
    radius_mm : float
        Erosion radius in mm; ``<= 0`` returns the labels unchanged.
    voxel_size_mm : (3,) array_like
        Voxel size in mm.

    Returns
    -------
    (X, Y, Z) int ndarray
        The eroded label map (eroded voxels set to 0).
    """
    xp = get_array_module(labels)
    if radius_mm <= 0:
        return labels
    footprint = ball(radius_mm, voxel_size_mm, xp)
    nd = ndimage(xp)
    low = nd.minimum_filter(labels, footprint=footprint, mode="constant", cval=0)
    high = nd.maximum_filter(labels, footprint=footprint, mode="constant", cval=0)
    return xp.where((low == labels) & (high == labels), labels, 0)


def _check_options(voxel_size_mm: ArrayLike, erode_mm: float, trim_percent: float,
                   percentiles: Sequence[float], ndim: int) -> tuple[np.ndarray, tuple]:
    voxel = np.asarray(voxel_size_mm, dtype=np.float64).ravel()
    if voxel.size != ndim or not np.all(np.isfinite(voxel)) or np.any(voxel <= 0):
        raise QSMConfigError(f"voxel_size_mm must be {ndim} positive numbers, got "
                             f"{list(voxel)}")
    if not (np.isfinite(erode_mm) and erode_mm >= 0):
        raise QSMConfigError(f"erode_mm must be >= 0, got {erode_mm}")
    if not (np.isfinite(trim_percent) and 0 <= trim_percent < 50):
        raise QSMConfigError(f"trim_percent must be in [0, 50), got {trim_percent}")
    qs = tuple(float(q) for q in percentiles)
    if any(not (0 <= q <= 100) for q in qs):
        raise QSMConfigError(f"percentiles must lie in [0, 100], got {list(qs)}")
    if len({percentile_column(q) for q in qs}) != len(qs):
        raise QSMConfigError(f"percentiles repeat a value: {list(qs)}")
    return voxel, qs


def _sorted_quantiles(values: Any, starts: Any, counts: Any, qs: Sequence[float]) -> Any:
    """Linear-interpolation quantiles (NumPy's default) of consecutive sorted groups.

    ``values`` holds the groups one after another, each sorted ascending; group ``g`` starts at
    ``starts[g]`` and has ``counts[g]`` elements. Returns ``(len(qs), G)``; NaN for empty
    groups.
    """
    xp = get_array_module(values)
    q = xp.asarray(qs, dtype=np.float64)[:, None] / 100.0
    m = counts[None, :].astype(np.float64)
    position = q * xp.maximum(m - 1.0, 0.0)
    lower = xp.floor(position)
    frac = position - lower
    lower = lower.astype(np.int64)
    upper = xp.minimum(lower + 1, xp.maximum(counts[None, :] - 1, 0))
    if values.size == 0:
        return xp.full(position.shape, np.nan)
    last = values.size - 1
    lo_val = values[xp.clip(starts[None, :] + lower, 0, last)]
    hi_val = values[xp.clip(starts[None, :] + upper, 0, last)]
    out = lo_val + (hi_val - lo_val) * frac
    return xp.where(m > 0, out, np.nan)


def _one_map(values: Any, label_index: Any, n_labels: int, trim_percent: float,
             qs: Sequence[float]) -> dict[str, np.ndarray]:
    """Statistics of one map; ``label_index`` is the compact label index of each value."""
    xp = get_array_module(values)
    if xp is np:  # sort by value, then stably by label: a radix sort for <= 65536 labels
        order = np.argsort(values)
        small = label_index[order].astype(np.uint16 if n_labels <= 65536 else np.int64)
        order = order[np.argsort(small, kind="stable")]
    else:
        order = xp.lexsort(xp.stack([values, label_index.astype(np.float64)]))
    values = values[order]
    label_index = label_index[order]
    counts = xp.bincount(label_index, minlength=n_labels)
    starts = xp.cumsum(counts) - counts
    if trim_percent > 0:
        cut = xp.floor(counts * (trim_percent / 100.0)).astype(np.int64)
        rank = xp.arange(values.size) - starts[label_index]
        keep = (rank >= cut[label_index]) & (rank < (counts - cut)[label_index])
        values = values[keep]
        label_index = label_index[keep]
        counts = xp.bincount(label_index, minlength=n_labels)
        starts = xp.cumsum(counts) - counts
    n = counts.astype(np.float64)
    safe_n = xp.maximum(n, 1.0)
    mean = xp.bincount(label_index, weights=values, minlength=n_labels) / safe_n
    deviation = values - mean[label_index]
    ss = xp.bincount(label_index, weights=deviation * deviation, minlength=n_labels)
    sd = xp.sqrt(ss / xp.maximum(n - 1.0, 1.0))
    mean = xp.where(n > 0, mean, np.nan)
    sd = xp.where(n > 1, sd, np.nan)
    quart = _sorted_quantiles(values, starts, counts, (25.0, 50.0, 75.0))
    result = {"count": counts, "mean": mean, "median": quart[1], "sd": sd,
              "iqr": quart[2] - quart[0]}
    if qs:
        extra = _sorted_quantiles(values, starts, counts, qs)
        for i, q in enumerate(qs):
            result[percentile_column(q)] = extra[i]
    return {key: to_numpy(val) for key, val in result.items()}


def roi_statistics(
    maps: Mapping[str, ArrayLike],
    labels: ArrayLike,
    label_names: Mapping[int, str] | None = None,
    *,
    voxel_size_mm: ArrayLike = (1.0, 1.0, 1.0),
    erode_mm: float = 0.0,
    trim_percent: float = 0.0,
    percentiles: Sequence[float] = (5, 25, 50, 75, 95),
) -> pd.DataFrame:
    """Count, volume, mean, median, SD, IQR and percentiles of every map in every label.

    Parameters
    ----------
    maps : mapping of str to (X, Y, Z) array_like
        Named maps on the grid of ``labels``, e.g. ``{"chi": chi_ppm, "r2star": r2star_per_s,
        "pdff": pdff_percent, "lic": lic_mg_per_g}`` (NumPy or CuPy). Values keep their units.
    labels : (X, Y, Z) array_like of int
        Label map (a dseg); 0 is background and skipped. A boolean mask is label 1.
    label_names : mapping of int to str, optional
        Name of each label value. Labels named here are reported even when absent from the
        map (count 0, statistics NaN), so that cohort tables have the same rows for every
        subject; labels present in the map but not named are reported as ``"label_<n>"``.
        Default: every label present, named ``"label_<n>"``.
    voxel_size_mm : (3,) array_like
        Voxel size in mm (take it from the affine:
        :func:`qsmliver.geometry.voxel_size_from_affine`); used for the volumes and erosion.
    erode_mm : float
        Erode every label by a ball of this radius (mm) before the statistics, to keep away
        from partial-volume edges (:func:`erode_labels`). 0 (default): no erosion.
    trim_percent : float
        Drop the lowest and the highest ``trim_percent`` % of each label's values (per map)
        before all statistics: ``floor(n·trim_percent/100)`` values at each end (a trimmed
        mean; Tukey/Wilcox). Must be in [0, 50).
    percentiles : sequence of float
        Percentiles (0-100) to report, as columns ``p{q:g}``; linear interpolation between
        order statistics (NumPy's default, Hyndman & Fan 1996 definition 7).

    Returns
    -------
    pandas.DataFrame
        One row per (label, map), labels ascending, maps in the given order, with columns
        ``label`` (int), ``label_name`` (str), ``map`` (str), ``count`` (voxels that entered
        the statistics: inside the eroded label, finite in this map, not trimmed),
        ``volume_mm3`` (volume of the label in the label map before erosion, trimming and NaN
        exclusion: voxel count × voxel volume), ``mean``, ``median``, ``sd`` (sample SD,
        ``ddof=1``; NaN below 2 voxels), ``iqr`` (p75 − p25) and one ``p{q:g}`` column per
        percentile. Statistics are NaN where ``count`` is 0.

    Raises
    ------
    QSMInputError
        A map whose shape differs from the label map (names the map), a label map that is not
        whole non-negative numbers, no maps.
    QSMConfigError
        Bad ``voxel_size_mm``, ``erode_mm``, ``trim_percent`` or ``percentiles``.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((4, 4, 4), dtype=int); labels[1:3, 1:3, 1:3] = 5
    >>> t = roi_statistics({"r2star": np.full((4, 4, 4), 30.0)}, labels, {5: "liver"},
    ...                    voxel_size_mm=(2, 2, 2))
    >>> row = t.iloc[0]
    >>> str(row["label_name"]), int(row["count"]), float(row["volume_mm3"]), float(row["mean"])
    ('liver', 8, 64.0, 30.0)
    """
    if not maps:
        raise QSMInputError("no maps given for the ROI statistics", field="maps")
    xp = get_array_module(labels, *maps.values())  # CuPy if any input lives on the GPU
    labels = _as_labels(labels, xp)
    voxel, qs = _check_options(voxel_size_mm, erode_mm, trim_percent, percentiles,
                               labels.ndim)
    voxel_volume = float(np.prod(voxel))

    arrays: dict[str, Any] = {}
    for name, values in maps.items():
        array = xp.asarray(values)
        if array.shape != labels.shape:
            raise QSMInputError(f"map shape {tuple(array.shape)} differs from the label map "
                                f"shape {tuple(labels.shape)}", field=str(name))
        if array.dtype.kind not in "biuf":
            raise QSMInputError(f"map has unsupported data type {array.dtype}",
                                field=str(name))
        arrays[str(name)] = array

    flat = labels.ravel()
    present = to_numpy(xp.unique(flat[flat > 0])).astype(np.int64)
    named = np.array(sorted(int(k) for k in (label_names or {}) if int(k) > 0), dtype=np.int64)
    table_labels = np.union1d(present, named)
    n_labels = table_labels.size
    table_labels_dev = xp.asarray(table_labels)

    in_label = flat > 0
    full_index = xp.searchsorted(table_labels_dev, flat[in_label])
    volume = to_numpy(xp.bincount(full_index, minlength=n_labels)) * voxel_volume

    used = erode_labels(labels, erode_mm, voxel).ravel() if erode_mm > 0 else flat
    base = used > 0
    base_index = xp.searchsorted(table_labels_dev, used[base])

    names = {int(k): str(v) for k, v in (label_names or {}).items()}
    label_name = [names.get(int(k), f"label_{int(k)}") for k in table_labels]
    frames = []
    for name, array in arrays.items():
        values = array.ravel()[base].astype(np.float64)
        finite = xp.isfinite(values)
        stats = _one_map(values[finite], base_index[finite], n_labels, trim_percent, qs)
        frame = {"label": table_labels, "label_name": label_name, "map": [name] * n_labels,
                 "count": stats.pop("count").astype(np.int64), "volume_mm3": volume}
        frame.update(stats)
        frames.append(pd.DataFrame(frame))
    table = pd.concat(frames, ignore_index=True)
    order = {name: i for i, name in enumerate(arrays)}
    table["_map_order"] = table["map"].map(order)
    table = table.sort_values(["label", "_map_order"], kind="stable").drop(columns="_map_order")
    return table.reset_index(drop=True)

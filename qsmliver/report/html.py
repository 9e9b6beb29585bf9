"""Static HTML QC reports: one page per reconstruction and a cohort index linking them.

The pages are plain HTML with the figures as PNG files beside them (``figures/``, relative
links), so a report folder can be copied anywhere and opened offline. Each figure is a row of
axial slices of one map with its display window and colour bar; the page also lists the QC
warnings, the ROI statistics and every parameter of the run. A small inline script checks
after loading that every image decoded (``naturalWidth > 0``), marks missing ones and records
the counts in ``<body data-images-loaded=... data-images-total=...>``; the page works without
it.

QC checks (:func:`qc_checks`), each with a threshold in :data:`QC_THRESHOLDS`:

- ``mask_fraction``: the mask covers too little or too much of the volume (failed masking);
- ``dipole_residual``: relative residual ``‖M(F⁻¹DFχ − f)‖ / ‖Mf‖`` of the dipole model
  between the susceptibility map and the local field (D the unit dipole kernel, M the mask,
  f the local field in ppm); above 1 the map does not explain the field at all (wrong B0
  direction, unwrapping or background-removal failure). Regularised inversions of good data
  give 0.2-0.7 on the brain phantom;
- ``field_noise``: median of the field-map noise (Hz) in the mask (low SNR, motion);
- ``chi_range``: the 99.9th percentile of |χ| in the mask (streaking);
- ``phase_sign``: brain only. Iron raises both χ (paramagnetic) and R2*, so in the voxels of
  highest R2* the two correlate positively (Spearman ρ ≈ 0.3-0.6 on the phantom; in vivo,
  Langkammer et al. NeuroImage 2012;62:1593 and Deistung et al. NeuroImage 2013;65:299 report
  χ and R2* both following iron in deep grey matter). A clearly negative ρ suggests an inverted
  phase convention (a swapped sign);
- ``fat_water_swap``: when a PDFF map exists, the fraction of the voxels inside the mask (its
  edge left out) whose PDFF differs from the 3×3×3 median around it by more than 50
  percentage points (swaps appear as PDFF jumps between neighbours; Hernando et al. MRM
  2010;63:79);
- ``nonfinite``: NaN or infinite values inside the mask;
- ``qsm_refused``: the pipeline made no susceptibility map (its reason is shown).

The median fat-water fit residual (``desc-fitresidual_map``) is reported as a metric when the
reconstruction has one.
"""

from __future__ import annotations

import datetime
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qsmliver.io.atomic import atomic_path

if TYPE_CHECKING:
    import pandas as pd

    from qsmliver.pipeline import ReconResult

__all__ = [
    "MAP_DISPLAY",
    "QC_THRESHOLDS",
    "montage_png",
    "overlay_png",
    "qc_checks",
    "write_cohort_index",
    "write_subject_report",
]

#: Thresholds of the QC warnings (see the module docstring).
QC_THRESHOLDS: dict[str, float] = {
    "mask_fraction_min": 0.02,
    "mask_fraction_max": 0.90,
    "dipole_residual_max": 1.0,
    "field_noise_hz_max": 2.0,
    "chi_abs_p999_ppm_max": 1.0,
    "phase_sign_rho_min": -0.2,
    "fat_water_swap_fraction_max": 0.005,
}

#: How each map is shown: (title with unit, colour map, symmetric window, fixed window).
MAP_DISPLAY: dict[str, tuple[str, str, bool, tuple[float, float] | None]] = {
    "magnitude": ("Magnitude, first echo (a.u.)", "gray", False, None),
    "fieldmap": ("Field (Hz)", "RdBu_r", True, None),
    "desc-localfield_map": ("Local field (ppm)", "RdBu_r", True, None),
    "Chimap": ("χ (ppm)", "gray", True, None),
    "R2starmap": ("R2* (1/s)", "magma", False, None),
    "desc-PDFF_map": ("PDFF (%)", "viridis", False, (0.0, 100.0)),
    "desc-water_map": ("Water (a.u.)", "gray", False, None),
    "desc-fat_map": ("Fat (a.u.)", "gray", False, None),
    "desc-fitresidual_map": ("Fat-water fit residual", "viridis", False, None),
    "desc-fieldnoise_map": ("Field noise (Hz)", "viridis", False, None),
}

_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) {
    if (images[i].complete && images[i].naturalWidth > 0) { loaded++; }
    else { images[i].className += " missing"; }
  }
  document.body.setAttribute("data-images-loaded", String(loaded));
  document.body.setAttribute("data-images-total", String(images.length));
  if (loaded < images.length) {
    document.getElementById("image-check").textContent =
      (images.length - loaded) + " of " + images.length + " images failed to load";
  }
});
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; border-bottom: 1px solid #ccc; }
figure { margin: 0.6em 0 1.2em 0; } figure img { max-width: 100%; display: block; }
figcaption { font-size: 0.9em; margin-top: 0.2em; }
.bar { display: inline-block; width: 140px; height: 0.8em; vertical-align: middle;
       border: 1px solid #888; margin: 0 0.4em; }
table { border-collapse: collapse; font-size: 0.85em; margin-bottom: 1em; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
td.text, th.text { text-align: left; } td.unit { white-space: nowrap; }
.warn { color: #a30; } .ok { color: #070; } .failed { color: #a00; font-weight: bold; }
img.missing { outline: 3px solid #a00; min-height: 2em; }
#image-check { color: #a00; font-weight: bold; }
"""


# -- figures ----------------------------------------------------------------------------------
def _host(array: Any) -> np.ndarray:
    from qsmliver.backend import to_numpy

    return np.asarray(to_numpy(array))


def _slices(shape: Sequence[int], mask: np.ndarray | None, n_slices: int) -> np.ndarray:
    if mask is not None and mask.any():
        extent = np.flatnonzero(mask.any(axis=(0, 1)))
        first, last = int(extent[0]), int(extent[-1])
    else:
        first, last = 0, int(shape[2]) - 1
    return np.unique(np.linspace(first, last, n_slices + 2)[1:-1].round().astype(int))


def _window(volume: np.ndarray, mask: np.ndarray | None, symmetric: bool
            ) -> tuple[float, float]:
    values = volume[mask] if mask is not None and mask.any() else volume.ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    if symmetric:
        extent = float(np.percentile(np.abs(values), 99)) or 1.0
        return -extent, extent
    low, high = (float(v) for v in np.percentile(values, [1, 99]))
    return (low, high) if high > low else (low, low + 1.0)


def _tile(volume: np.ndarray, slices: np.ndarray, scale: int) -> np.ndarray:
    """Axial slices side by side (x to the right, y up), each enlarged ``scale`` times."""
    tiles = [np.flipud(volume[:, :, z].T) for z in slices]
    fill = np.nan if tiles[0].dtype.kind == "f" else 0
    gap = np.full((tiles[0].shape[0], 1, *tiles[0].shape[2:]), fill, dtype=tiles[0].dtype)
    row = np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)
    return np.repeat(np.repeat(row, scale, axis=0), scale, axis=1)


def _scale(shape: Sequence[int]) -> int:
    return max(1, math.ceil(160 / max(int(shape[0]), int(shape[1]))))


def _png_bytes(rgba: np.ndarray) -> bytes:
    """Encode an (H, W, 4) uint8 image as PNG (8-bit RGBA, no filtering; zlib)."""
    import struct
    import zlib

    height, width = rgba.shape[:2]
    raw = np.concatenate([np.zeros((height, 1), np.uint8),
                          np.ascontiguousarray(rgba, np.uint8).reshape(height, width * 4)],
                         axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def _write_png(rgba: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as temporary:
        temporary.write_bytes(_png_bytes(rgba))
    return path


def _colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def _gradient(cmap: str) -> str:
    colours = _colormap(cmap)(np.linspace(0, 1, 9), bytes=True)
    stops = ", ".join(f"#{r:02x}{g:02x}{b:02x}" for r, g, b, _ in colours)
    return f"linear-gradient(to right, {stops})"


def montage_png(volume: Any, path: str | os.PathLike, *, cmap: str = "gray",
                limits: tuple[float, float] | None = None, symmetric: bool = False,
                mask: Any = None, n_slices: int = 6) -> dict[str, Any]:
    """Write a row of axial slices of ``volume`` as a PNG (written atomically).

    Parameters
    ----------
    volume : (X, Y, Z) ndarray
        The map (host or device array).
    path : path
        Output ``.png``.
    cmap : str
        Matplotlib colour map.
    limits : (float, float), optional
        Display window; default: 1st-99th percentile in ``mask`` (±99th percentile of |v|
        when ``symmetric``).
    symmetric : bool
        Centre the default window on zero.
    mask : (X, Y, Z) bool ndarray, optional
        Region choosing the slices (its z extent) and the window.
    n_slices : int
        Slices shown.

    Returns
    -------
    dict
        ``path``, ``window`` (low, high) and ``slices`` (z indices).
    """
    volume = _host(volume).astype(np.float64)
    mask_host = None if mask is None else _host(mask).astype(bool)
    low, high = limits if limits is not None else _window(volume, mask_host, symmetric)
    slices = _slices(volume.shape, mask_host, n_slices)
    tiled = _tile(volume, slices, _scale(volume.shape))
    scaled = np.clip((tiled - low) / ((high - low) or 1.0), 0.0, 1.0)
    rgba = _colormap(cmap)(np.nan_to_num(scaled, nan=0.0), bytes=True)
    rgba[np.isnan(tiled)] = (255, 255, 255, 255)
    out = _write_png(rgba, Path(path))
    return {"path": out, "window": (float(low), float(high)), "slices": slices.tolist()}


def overlay_png(magnitude: Any, path: str | os.PathLike, *, mask: Any = None,
                labels: Any = None, n_slices: int = 6) -> dict[str, Any]:
    """Magnitude in grey with the mask tinted red and labels in colour (PNG, atomic).

    Parameters
    ----------
    magnitude : (X, Y, Z) ndarray
    path : path
    mask : (X, Y, Z) bool ndarray, optional
        Tinted red; also chooses the slices.
    labels : (X, Y, Z) int ndarray, optional
        Every label > 0 drawn in a colour of the ``tab20`` map (label modulo 20).
    n_slices : int

    Returns
    -------
    dict
        ``path`` and ``slices``.
    """
    magnitude = _host(magnitude).astype(np.float64)
    mask_host = None if mask is None else _host(mask).astype(bool)
    low, high = _window(magnitude, None, False)
    slices = _slices(magnitude.shape, mask_host, n_slices)
    scale = _scale(magnitude.shape)
    grey = np.clip((np.nan_to_num(_tile(magnitude, slices, scale), nan=low) - low)
                   / ((high - low) or 1.0), 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if labels is not None:
        label_tiles = _tile(_host(labels).astype(np.int64), slices, scale)
        colours = np.asarray(_colormap("tab20").colors)[:, :3]
        inside = label_tiles > 0
        rgb[inside] = 0.45 * rgb[inside] + 0.55 * colours[label_tiles[inside] % 20]
    elif mask_host is not None:
        inside = _tile(mask_host.astype(np.uint8), slices, scale) > 0
        rgb[inside] = 0.6 * rgb[inside] + 0.4 * np.array([1.0, 0.1, 0.1])
    rgba = np.concatenate([(rgb * 255).round().astype(np.uint8),
                           np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=-1)
    out = _write_png(rgba, Path(path))
    return {"path": out, "slices": slices.tolist()}


# -- QC checks --------------------------------------------------------------------------------
def _ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[np.argsort(values, kind="stable")] = np.arange(values.size, dtype=np.float64)
    return ranks


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ (Pearson correlation of the ranks; ties broken by order)."""
    if a.size < 20:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    sa, sb = ra.std(), rb.std()
    if sa == 0 or sb == 0:
        return float("nan")
    return float(np.mean((ra - ra.mean()) * (rb - rb.mean())) / (sa * sb))


def qc_checks(result: ReconResult, *, anatomy: str = "brain",
              thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """QC metrics of a reconstruction and the warnings they raise.

    Parameters
    ----------
    result : ReconResult
        From :func:`qsmliver.pipeline.recon`.
    anatomy : {"brain", "liver"}
        The phase-sign check applies to the brain only.
    thresholds : mapping, optional
        Overrides of :data:`QC_THRESHOLDS`.

    Returns
    -------
    dict
        ``metrics`` (name -> float; see the module docstring) and ``warnings`` (list of
        dicts with ``check``, ``value``, ``threshold`` and ``message``).

    References
    ----------
    Hernando D, Kellman P, Haldar JP, Liang ZP. Robust water/fat separation in the presence of
    large field inhomogeneities using a graph cut algorithm. MRM 2010;63:79-90.
    Langkammer C, et al. Quantitative susceptibility mapping (QSM) as a means to measure brain
    iron? A post mortem validation study. NeuroImage 2012;62:1593-1599.
    """
    from qsmliver import backend
    from qsmliver.inversion.dipole import dipole_kernel

    limits = {**QC_THRESHOLDS, **(thresholds or {})}
    maps = {name: _host(qmap.data) for name, qmap in result.maps.items()}
    shape = np.shape(result.magnitude)
    mask = maps["mask"].astype(bool) if "mask" in maps else np.ones(shape, bool)
    acquisition = result.provenance.get("Acquisition", {})
    metrics: dict[str, float] = {"mask_fraction": float(mask.mean())}
    warnings: list[dict[str, Any]] = []

    def warn(check: str, value: float | None, threshold: float | None, message: str) -> None:
        warnings.append({"check": check,
                         "value": None if value is None else round(float(value), 4),
                         "threshold": threshold, "message": message})

    refused = result.provenance.get("QSMRefused")
    if refused:
        warn("qsm_refused", None, None, f"no susceptibility map: {refused}")

    if metrics["mask_fraction"] < limits["mask_fraction_min"]:
        warn("mask_fraction", metrics["mask_fraction"], limits["mask_fraction_min"],
             f"the mask covers only {100 * metrics['mask_fraction']:.1f} % of the volume")
    elif metrics["mask_fraction"] > limits["mask_fraction_max"]:
        warn("mask_fraction", metrics["mask_fraction"], limits["mask_fraction_max"],
             f"the mask covers {100 * metrics['mask_fraction']:.1f} % of the volume "
             "(background included?)")
    nonfinite = sum(int((~np.isfinite(v[mask])).sum()) for v in maps.values()
                    if v.shape == mask.shape)
    metrics["nonfinite_voxels"] = float(nonfinite)
    if nonfinite:
        warn("nonfinite", nonfinite, 0, f"{nonfinite} non-finite values inside the mask")
    if not mask.any():
        return {"metrics": metrics, "warnings": warnings}

    chi = np.nan_to_num(maps["Chimap"].astype(np.float64)) if "Chimap" in maps else None
    if chi is not None and "desc-localfield_map" in maps:
        local = np.nan_to_num(maps["desc-localfield_map"].astype(np.float64))
        voxel = acquisition.get("VoxelSize_mm", (1.0, 1.0, 1.0))
        b0_dir = acquisition.get("B0Direction", (0.0, 0.0, 1.0))
        fft = backend.fft(np)
        kernel = dipole_kernel(chi.shape, voxel, b0_dir)
        forward = np.real(fft.ifftn(kernel * fft.fftn(np.where(mask, chi, 0.0))))
        norm = float(np.linalg.norm(local[mask]))
        residual = float(np.linalg.norm((forward - local)[mask]) / norm) if norm > 0 else 0.0
        metrics["dipole_residual"] = residual
        if residual > limits["dipole_residual_max"]:
            warn("dipole_residual", residual, limits["dipole_residual_max"],
                 f"large dipole-model residual: χ explains the local field poorly "
                 f"(relative residual {residual:.2f}); check B0 direction, unwrapping and "
                 "background removal")
    if "desc-fitresidual_map" in maps:
        fit = maps["desc-fitresidual_map"][mask]
        fit = fit[np.isfinite(fit)]
        metrics["fit_residual_median"] = float(np.median(fit)) if fit.size else 0.0
    if "desc-fieldnoise_map" in maps:
        noise = maps["desc-fieldnoise_map"][mask]
        noise = noise[np.isfinite(noise)]
        metrics["field_noise_median_hz"] = float(np.median(noise)) if noise.size else 0.0
        if metrics["field_noise_median_hz"] > limits["field_noise_hz_max"]:
            warn("field_noise", metrics["field_noise_median_hz"], limits["field_noise_hz_max"],
                 f"noisy field map (median noise {metrics['field_noise_median_hz']:.2f} Hz)")
    if chi is not None:
        metrics["chi_abs_p999_ppm"] = float(np.percentile(np.abs(chi[mask]), 99.9))
        if metrics["chi_abs_p999_ppm"] > limits["chi_abs_p999_ppm_max"]:
            warn("chi_range", metrics["chi_abs_p999_ppm"], limits["chi_abs_p999_ppm_max"],
                 f"extreme susceptibility values (|χ| 99.9th percentile "
                 f"{metrics['chi_abs_p999_ppm']:.2f} ppm): streaking?")
    if anatomy == "brain" and chi is not None and "R2starmap" in maps:
        r2star = maps["R2starmap"]
        usable = mask & np.isfinite(r2star)
        if usable.sum() >= 200:
            high = usable & (r2star > np.percentile(r2star[usable], 90))
            rho = _rank_correlation(chi[high], r2star[high])
            metrics["chi_r2star_rho_high_r2star"] = rho
            if np.isfinite(rho) and rho < limits["phase_sign_rho_min"]:
                warn("phase_sign", rho, limits["phase_sign_rho_min"],
                     f"χ falls where R2* rises (Spearman ρ {rho:.2f} in the 10 % highest-R2* "
                     "voxels): possible swapped phase sign (check the vendor convention)")
    if "desc-PDFF_map" in maps:
        from scipy.ndimage import binary_erosion, median_filter

        pdff = np.nan_to_num(maps["desc-PDFF_map"].astype(np.float64))
        jumps = np.abs(pdff - median_filter(pdff, size=3)) > 50.0
        inner = binary_erosion(mask, structure=np.ones((3, 3, 3), bool))  # not the edge
        fraction = float(jumps[inner].mean()) if inner.any() else 0.0
        metrics["fat_water_swap_fraction"] = fraction
        if fraction > limits["fat_water_swap_fraction_max"]:
            warn("fat_water_swap", fraction, limits["fat_water_swap_fraction_max"],
                 f"possible fat-water swaps: {100 * fraction:.2f} % of the voxels differ from "
                 "their neighbours by more than 50 percentage points of PDFF")
    return {"metrics": metrics, "warnings": warnings}


# -- pages ------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "nan" if not np.isfinite(value) else f"{float(value):.4g}"
    return str(value)


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows += _flatten(value, f"{name}.")
        elif isinstance(value, (list, tuple)):
            rows.append((name, ", ".join(_number(v) for v in value)))
        else:
            rows.append((name, _number(value)))
    return rows


def _key_value_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th class=\"text\">{_e(k)}</th><td class=\"text\">{_e(v)}</td></tr>"
                   for k, v in rows)
    return f"<table>{body}</table>"


def _data_table(frame: pd.DataFrame, columns: Sequence[str]) -> str:
    from pandas.api.types import is_numeric_dtype

    columns = [c for c in columns if c in frame.columns]
    text = {c: not is_numeric_dtype(frame[c]) for c in columns}
    head = "".join(f"<th class=\"text\">{_e(c)}</th>" if text[c] else f"<th>{_e(c)}</th>"
                   for c in columns)
    body = []
    for _, row in frame[columns].iterrows():
        cells = "".join(f"<td class=\"text\">{_e(row[c])}</td>" if text[c]
                        else f"<td>{_e(_number(row[c]))}</td>" for c in columns)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
            f"<body>\n{body}\n<p id=\"image-check\"></p>\n<script>{_SCRIPT}</script>\n"
            "</body>\n</html>\n")


def _write_text(text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path


def _warnings_html(warnings: Sequence[Mapping[str, Any]]) -> str:
    if not warnings:
        return "<p class=\"ok\">No QC warnings.</p>"
    items = "".join(f"<li class=\"warn\"><b>{_e(w.get('check', ''))}</b>: "
                    f"{_e(w.get('message', ''))}</li>" for w in warnings)
    return f"<ul>{items}</ul>"


def write_subject_report(
    folder: str | os.PathLike,
    prefix: str,
    result: ReconResult,
    *,
    labels: Any = None,
    label_names: Mapping[int, str] | None = None,
    roi_table: pd.DataFrame | None = None,
    qc: Mapping[str, Any] | None = None,
    details: Mapping[str, Any] | None = None,
    n_slices: int = 6,
) -> Path:
    """Write ``<folder>/<prefix>_report.html`` with its figures in ``<folder>/figures/``.

    Parameters
    ----------
    folder : path
        Where the page goes (the figures go to its ``figures/`` subfolder).
    prefix : str
        File name prefix (the acquisition's BIDS entities).
    result : ReconResult
        The reconstruction (maps, magnitude, configuration, provenance).
    labels : (X, Y, Z) int ndarray, optional
        ROI label map, drawn over the magnitude.
    label_names : mapping of int to str, optional
        Names of the labels (listed in the caption).
    roi_table : pandas.DataFrame, optional
        ROI statistics (:func:`qsmliver.analysis.roi_statistics`).
    qc : mapping, optional
        :func:`qc_checks` output (computed here when None).
    details : mapping, optional
        More parameters to list (e.g. the batch's configuration hash and inputs).
    n_slices : int
        Axial slices per figure.

    Returns
    -------
    Path
        The HTML file.
    """
    folder = Path(folder)
    figures = folder / "figures"
    mask = _host(result.maps["mask"].data).astype(bool) if "mask" in result.maps else None
    anatomy = str(result.config.get("anatomy", "brain"))
    if qc is None:
        qc = qc_checks(result, anatomy=anatomy)
    available = {"magnitude": result.magnitude,
                 **{name: qmap.data for name, qmap in result.maps.items() if name != "mask"}}
    order = [name for name in MAP_DISPLAY if name in available]
    volumes = {name: available[name] for name in order + sorted(set(available) - set(order))}
    sections = []
    for name, volume in volumes.items():
        title, cmap, symmetric, fixed = MAP_DISPLAY.get(
            name, (f"{name} ({getattr(result.maps.get(name), 'unit', '')})", "gray", False,
                   None))
        if _host(volume).ndim != 3:
            continue
        file = figures / f"{prefix}_desc-{name.replace('desc-', '').replace('_', '')}"\
                         "_montage.png"
        shown = montage_png(volume, file, cmap=cmap, limits=fixed, symmetric=symmetric,
                            mask=mask, n_slices=n_slices)
        low, high = shown["window"]
        sections.append(
            f"<figure><img src=\"figures/{_e(file.name)}\" alt=\"{_e(title)}\">"
            f"<figcaption><b>{_e(title)}</b> window {low:.4g}"
            f"<span class=\"bar\" style=\"background: {_gradient(cmap)}\"></span>{high:.4g}; "
            f"axial slices z = {_e(', '.join(map(str, shown['slices'])))}</figcaption>"
            "</figure>")
    if mask is not None:
        mask_file = figures / f"{prefix}_desc-mask_montage.png"
        overlay_png(result.magnitude, mask_file, mask=mask, n_slices=n_slices)
        sections.append(f"<figure><img src=\"figures/{_e(mask_file.name)}\" alt=\"mask\">"
                        f"<figcaption><b>Mask</b> (red) over the magnitude: "
                        f"{int(mask.sum())} voxels</figcaption></figure>")
    if labels is not None:
        labels_host = _host(labels)
        label_file = figures / f"{prefix}_desc-labels_montage.png"
        overlay_png(result.magnitude, label_file, mask=mask, labels=labels_host,
                    n_slices=n_slices)
        present = sorted(int(v) for v in np.unique(labels_host) if v > 0)
        names = ", ".join(f"{v}: {(label_names or {}).get(v, f'label_{v}')}" for v in present)
        sections.append(f"<figure><img src=\"figures/{_e(label_file.name)}\" alt=\"labels\">"
                        f"<figcaption><b>ROI labels</b> ({_e(names)})</figcaption></figure>")
    provenance = result.provenance
    timings = provenance.get("Timings_s", {})
    summary = (f"qsmliver {_e(provenance.get('Version', ''))} on "
               f"{_e(provenance.get('Device', ''))}, anatomy {_e(anatomy)}, "
               f"{sum(timings.values()):.1f} s; report written "
               f"{_e(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))}")
    parts = [f"<h1>{_e(prefix)}</h1>", f"<p>{summary}</p>",
             "<h2 id=\"warnings\">QC warnings</h2>", _warnings_html(qc.get("warnings", [])),
             "<h2 id=\"maps\">Maps</h2>", *sections]
    if roi_table is not None and len(roi_table):
        shown_rows = roi_table[roi_table["count"] > 0] if "count" in roi_table else roi_table
        parts += ["<h2 id=\"roi\">ROI statistics</h2>",
                  "<p>Labels with voxels inside the mask.</p>",
                  _data_table(shown_rows, ["label", "label_name", "map", "count", "volume_mm3",
                                           "mean", "median", "sd", "iqr", "p5", "p95"])]
    parts += ["<h2 id=\"qc\">QC metrics</h2>",
              _key_value_table(_flatten(qc.get("metrics", {}))),
              "<h2 id=\"parameters\">Parameters</h2>",
              _key_value_table(_flatten(result.config)),
              "<h2 id=\"provenance\">Acquisition and timings</h2>",
              _key_value_table(_flatten({k: v for k, v in provenance.items()
                                         if k != "Stages"})),
              "<h2 id=\"stages\">Stage reports</h2>",
              f"<pre>{_e(json.dumps(provenance.get('Stages', {}), indent=1, default=str))}"
              "</pre>"]
    if details:
        parts += ["<h2 id=\"details\">Run</h2>", _key_value_table(_flatten(details))]
    return _write_text(_page(f"{prefix} — qsmliver QC", "\n".join(parts)),
                       folder / f"{prefix}_report.html")


def write_cohort_index(path: str | os.PathLike, entries: Sequence[Mapping[str, Any]], *,
                       title: str = "qsmliver cohort QC",
                       links: Mapping[str, str] | None = None) -> Path:
    """Write the cohort index page: one row per subject/session with links to its reports.

    Parameters
    ----------
    path : path
        Output ``.html`` (e.g. ``OUT/index.html``); report links are made relative to it.
    entries : sequence of mapping
        Per unit: ``unit``, ``status`` ("ok" / "failed" / ...), ``reports`` (paths of the
        subject pages), ``warnings`` (list of dicts with ``check`` and ``message``),
        ``seconds``, ``error`` (message of a failure).
    title : str
    links : mapping of str to str, optional
        Extra links shown above the table (text -> path), e.g. the cohort ROI table.

    Returns
    -------
    Path
    """
    path = Path(path)
    base = path.parent.absolute()
    rows = []
    counts: dict[str, int] = {}
    for entry in entries:
        status = str(entry.get("status", ""))
        counts[status] = counts.get(status, 0) + 1
        reports = []
        for report in entry.get("reports", []):
            href = os.path.relpath(Path(report).absolute(), base)
            reports.append(f"<a href=\"{_e(Path(href).as_posix())}\">"
                           f"{_e(Path(report).name.removesuffix('_report.html'))}</a>")
        warnings = entry.get("warnings", [])
        notes = "; ".join(f"{w.get('check', '')}: {w.get('message', '')}" for w in warnings)
        if entry.get("error"):
            notes = str(entry["error"])
        seconds = entry.get("seconds")
        css = {"ok": "ok", "failed": "failed"}.get(status, "")
        rows.append(
            f"<tr><td class=\"text unit\">{_e(entry.get('unit', ''))}</td>"
            f"<td class=\"text {css}\">{_e(status)}</td>"
            f"<td>{len(warnings)}</td>"
            f"<td>{'' if seconds is None else f'{float(seconds):.1f}'}</td>"
            f"<td class=\"text\">{' '.join(reports)}</td>"
            f"<td class=\"text\">{_e(notes)}</td></tr>")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    extra = ""
    if links:
        extra = "<p>" + " · ".join(
            f"<a href=\"{_e(Path(os.path.relpath(Path(p).absolute(), base)).as_posix())}\">"
            f"{_e(text)}</a>" for text, p in links.items()) + "</p>"
    body = (f"<h1>{_e(title)}</h1><p>{len(entries)} subject/session(s): {_e(summary)}</p>"
            f"{extra}<table><tr><th class=\"text\">unit</th><th class=\"text\">status</th>"
            "<th>warnings</th><th>seconds</th><th class=\"text\">reports</th>"
            f"<th class=\"text\">notes</th></tr>{''.join(rows)}</table>")
    return _write_text(_page(title, body), path)

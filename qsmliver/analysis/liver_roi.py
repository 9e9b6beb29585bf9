"""Liver ROIs: automatic circular ROIs in the parenchyma, away from large vessels and the edge,
and whole-liver statistics.

The method follows the ROI protocol of the seed study (Henninger et al., liver R2* vs serum
ferritin in therapy monitoring; also the usual protocol of R2*-LIC calibrations such as Wood et
al. Blood 2005;106:1460): three circular ROIs of about 1.1 cm² (12 mm diameter), two in the
right lobe and one in the left lobe, on one transverse slice at the level of the portal vein,
placed to avoid major vessels, artefacts and the liver edge; the liver value is the mean of the
ROI values. Here the placement is automatic:

1. *Vessels and artefacts* are voxels of the liver whose value in any given map is a robust
   outlier, ``|x − median| > outlier_z · 1.4826 · MAD`` over the whole liver (portal and
   hepatic veins are low-R2* / high-χ outliers in an iron-loaded liver; Hampel's median/MAD
   outlier rule, Hampel J Am Stat Assoc 1974;69:383), plus any user ``exclude`` mask and
   non-finite values, dilated in-plane by ``vessel_margin_mm``.
2. *Slice* ("portal vein level"): the user's slice, or the slice whose liver holds the largest
   area of such vessel voxels (the portal vein runs in-plane at the hilum); when no vessel is
   found, the slice with the largest liver cross-section. If the ROIs do not fit, the next
   slice in that order is tried.
3. *Candidates*: centres whose disk lies entirely inside the liver with at least
   ``edge_margin_mm`` to the liver edge and to any excluded voxel (an exact Euclidean distance
   transform in mm, Maurer et al. IEEE TPAMI 2003;25:265, via ``scipy.ndimage``).
4. *Lobes*: with no lobe masks, the patient-left ``left_lobe_fraction`` of the liver's
   left-right extent on the slice (world x of the NIfTI RAS+ affine) counts as left lobe.
5. *Choice*: in each lobe, greedily the most homogeneous disks (lowest local variance of the
   maps, normalised by each map's robust liver SD; deepest inside the liver when no map is
   given), at least ``min_separation_mm`` apart (edge to edge).

The disk radius is the one whose voxel count best matches ``area_cm2`` on the in-plane grid, so
the reported ``area_mm2`` is the true area of the voxels used.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from qsmliver.analysis.roi import roi_statistics
from qsmliver.backend import get_array_module, ndimage, to_numpy
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.geometry import direction_cosines, voxel_size_from_affine

__all__ = ["LiverROIs", "liver_outliers", "liver_roi_statistics", "place_liver_rois"]


@dataclasses.dataclass
class LiverROIs:
    """Automatically placed liver ROIs (host arrays).

    Attributes
    ----------
    labels : (X, Y, Z) int16 ndarray
        ROI label map: 0 outside, 1..N the ROIs (right-lobe ROIs first).
    names : dict of int to str
        ROI label -> name, e.g. ``{1: "roi1_right_lobe", 2: "roi2_right_lobe",
        3: "roi3_left_lobe"}``.
    slice_index : int
        Index of the slice along ``slice_axis``.
    slice_axis : int
        Array axis across the slices (the one closest to the head-foot direction).
    slice_reason : str
        ``"user"``, ``"vessel"`` (largest vessel area) or ``"largest_liver_area"``.
    centres_voxel : (N, 3) int ndarray
    centres_mm : (N, 3) ndarray
        World (affine) coordinates of the centres, mm.
    lobes : list of str
        ``"right"`` or ``"left"`` per ROI.
    radius_mm : float
        Disk radius (voxel centres within it belong to the ROI).
    area_mm2 : float
        Area of one ROI (its voxel count × in-plane voxel area).
    excluded : (X, Y, Z) bool ndarray
        Liver voxels excluded as vessels / outliers (dilated), whole volume.
    notes : list of str
        Anything the user should know (e.g. the left lobe had no room).
    """

    labels: np.ndarray
    names: dict[int, str]
    slice_index: int
    slice_axis: int
    slice_reason: str
    centres_voxel: np.ndarray
    centres_mm: np.ndarray
    lobes: list[str]
    radius_mm: float
    area_mm2: float
    excluded: np.ndarray
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (no arrays)."""
        return {
            "n_rois": len(self.lobes),
            "names": {str(k): v for k, v in self.names.items()},
            "slice_index": int(self.slice_index),
            "slice_axis": int(self.slice_axis),
            "slice_reason": self.slice_reason,
            "centres_voxel": self.centres_voxel.tolist(),
            "centres_mm": np.round(self.centres_mm, 3).tolist(),
            "lobes": list(self.lobes),
            "radius_mm": float(self.radius_mm),
            "area_mm2": float(self.area_mm2),
            "excluded_voxels": int(self.excluded.sum()),
            "notes": list(self.notes),
        }


def _robust_centre_scale(values: Any) -> tuple[float, float]:
    xp = get_array_module(values)
    median = float(xp.median(values))
    mad = float(xp.median(xp.abs(values - median))) * 1.4826
    floor = 1e-9 * max(abs(median), 1.0)
    return median, max(mad, floor)


def liver_outliers(maps: Mapping[str, ArrayLike], liver_mask: ArrayLike, *,
                   outlier_z: float = 3.0) -> Any:
    """Liver voxels that are robust outliers in any map (vessels, artefacts, lesions).

    Parameters
    ----------
    maps : mapping of str to (X, Y, Z) array_like
        E.g. ``{"r2star": r2star_per_s, "chi": chi_ppm}``.
    liver_mask : (X, Y, Z) bool array_like
    outlier_z : float
        Threshold on ``|x − median| / (1.4826·MAD)`` over the liver (Hampel identifier).

    Returns
    -------
    (X, Y, Z) bool ndarray
        True where a liver voxel is an outlier or non-finite in any map (array module of the
        mask).

    Notes
    -----
    The median and MAD are those of the whole liver, so a liver whose lobes differ strongly
    (noise-free data with two iron levels, for instance) flags the smaller lobe; raise
    ``outlier_z`` or pass an explicit ``exclude`` mask to :func:`place_liver_rois` then.
    """
    xp = get_array_module(liver_mask)
    liver = xp.asarray(liver_mask).astype(bool)
    out = xp.zeros(liver.shape, dtype=bool)
    for name, values in maps.items():
        array = xp.asarray(values, dtype=np.float64)
        if array.shape != liver.shape:
            raise QSMInputError(f"map shape {tuple(array.shape)} differs from the liver mask "
                                f"shape {tuple(liver.shape)}", field=str(name))
        finite = xp.isfinite(array)
        inside = array[liver & finite]
        if inside.size == 0:
            out |= liver
            continue
        median, scale = _robust_centre_scale(inside)
        z = xp.abs(xp.where(finite, array, median) - median) / scale
        out |= liver & ((z > outlier_z) | ~finite)
    return out


def _disk_offsets(area_mm2: float, pixel_mm: tuple[float, float]) -> tuple[np.ndarray, float]:
    """In-plane voxel offsets of the disk whose voxel area best matches ``area_mm2``."""
    target_r = math.sqrt(area_mm2 / math.pi)
    half = [math.ceil(target_r / p) + 2 for p in pixel_mm]
    di, dj = np.meshgrid(np.arange(-half[0], half[0] + 1), np.arange(-half[1], half[1] + 1),
                         indexing="ij")
    dist = np.hypot(di * pixel_mm[0], dj * pixel_mm[1])
    radii = np.unique(dist)
    counts = np.searchsorted(np.sort(dist.ravel()), radii, side="right")
    pixel_area = pixel_mm[0] * pixel_mm[1]
    best = int(np.argmin(np.abs(counts * pixel_area - area_mm2)))
    radius = float(radii[best])
    inside = dist <= radius + 1e-9
    return np.stack([di[inside], dj[inside]], axis=1), radius


def _greedy(coords_mm: np.ndarray, score: np.ndarray, n: int, taken: list[np.ndarray],
            min_distance_mm: float) -> list[int]:
    """Pick up to ``n`` candidates by ascending score, each ``min_distance_mm`` from the rest."""
    available = np.ones(score.size, dtype=bool)
    for centre in taken:
        available &= np.hypot(*(coords_mm - centre).T) >= min_distance_mm
    chosen: list[int] = []
    for _ in range(n):  # one pass per ROI (N is 3 by default)
        if not available.any():
            break
        index = int(np.flatnonzero(available)[np.argmin(score[available])])
        chosen.append(index)
        available &= np.hypot(*(coords_mm - coords_mm[index]).T) >= min_distance_mm
    return chosen


def _slice_order(liver: np.ndarray, vessels: np.ndarray, min_vessel_voxels: int
                 ) -> tuple[list[int], str]:
    area = liver.sum(axis=(0, 1))
    vessel_area = (vessels & liver).sum(axis=(0, 1))
    slices = [int(k) for k in np.flatnonzero(area > 0)]
    if vessel_area.max(initial=0) >= min_vessel_voxels:
        return sorted(slices, key=lambda k: (-vessel_area[k], -area[k])), "vessel"
    return sorted(slices, key=lambda k: -area[k]), "largest_liver_area"


def _local_variance(maps2d: list[tuple[np.ndarray, float]], allowed: np.ndarray,
                    offsets: np.ndarray) -> np.ndarray:
    """Sum over maps of the variance inside the disk centred at each voxel, in units of each
    map's robust liver variance."""
    import scipy.ndimage as nd

    half = np.abs(offsets).max(axis=0)
    footprint = np.zeros(2 * half + 1)
    footprint[offsets[:, 0] + half[0], offsets[:, 1] + half[1]] = 1.0
    n = float(footprint.sum())
    total = np.zeros(allowed.shape)
    for values, scale in maps2d:
        x = np.where(allowed, values, 0.0) / scale
        mean = nd.correlate(x, footprint, mode="constant") / n
        mean2 = nd.correlate(x * x, footprint, mode="constant") / n
        total += np.maximum(mean2 - mean * mean, 0.0)
    return total


def place_liver_rois(
    liver_mask: ArrayLike,
    affine: ArrayLike,
    *,
    maps: Mapping[str, ArrayLike] | None = None,
    n_rois: int = 3,
    area_cm2: float = 1.1,
    slice_index: int | None = None,
    exclude: ArrayLike | None = None,
    lobes: Mapping[str, ArrayLike] | None = None,
    outlier_z: float | None = 3.0,
    vessel_margin_mm: float = 3.0,
    edge_margin_mm: float = 3.0,
    min_separation_mm: float = 5.0,
    left_lobe_fraction: float = 1.0 / 3.0,
    min_vessel_voxels: int = 3,
) -> LiverROIs:
    """Place ``n_rois`` circular ROIs in the liver on one transverse slice.

    Parameters
    ----------
    liver_mask : (X, Y, Z) bool array_like
        Liver segmentation (vessels inside it are found by ``maps``; NumPy or CuPy).
    affine : (4, 4) array_like
        Voxel-to-world (RAS+, mm) affine: voxel size, slice direction and patient left/right.
    maps : mapping of str to (X, Y, Z) array_like, optional
        Maps to find vessels in and to judge homogeneity by (e.g. ``{"r2star": r2star_per_s,
        "chi": chi_ppm}``). Without maps, only ``exclude`` marks vessels and the deepest
        positions are chosen.
    n_rois : int
        Number of ROIs (default 3: two right lobe, one left; ``round(n/3)`` go to the left
        lobe).
    area_cm2 : float
        ROI area, cm² (default 1.1, a 12 mm disk).
    slice_index : int, optional
        Slice (along the head-foot-most array axis); default: automatic (see module notes).
    exclude : (X, Y, Z) bool array_like, optional
        User mask of vessels / lesions to avoid.
    lobes : mapping, optional
        ``{"right": mask, "left": mask}`` lobe masks (e.g. a phantom's or a segmentation's);
        default: the left-right split described in the module docstring.
    outlier_z : float or None
        Robust z threshold of :func:`liver_outliers`; None: no outlier detection.
    vessel_margin_mm, edge_margin_mm, min_separation_mm : float
        In-plane dilation of excluded voxels; least distance between an ROI's voxel centres
        and the liver edge or an excluded voxel, beyond the disk; least gap between two ROIs.
    left_lobe_fraction : float
        Patient-left fraction of the liver's left-right extent taken as left lobe.
    min_vessel_voxels : int
        Fewest vessel voxels on a slice for the vessel-based slice choice.

    Returns
    -------
    LiverROIs

    Raises
    ------
    QSMInputError
        Empty liver mask, shape mismatches, or no slice (the requested one) with room for the
        ROIs.
    QSMConfigError
        Bad options.

    Examples
    --------
    >>> from qsmliver.simulate.abdomen import abdomen_phantom
    >>> ph = abdomen_phantom(shape=(96, 78, 8), snr=None)
    >>> rois = place_liver_rois(ph.masks["liver"], ph.gre.affine,
    ...                         maps={"r2star": ph.truth["r2star_per_s"]})
    >>> rois.lobes
    ['right', 'right', 'left']
    """
    if int(n_rois) != n_rois or n_rois < 1:
        raise QSMConfigError(f"n_rois must be a positive integer, got {n_rois}")
    if not (area_cm2 > 0 and math.isfinite(area_cm2)):
        raise QSMConfigError(f"area_cm2 must be positive, got {area_cm2}")
    for name, value in (("vessel_margin_mm", vessel_margin_mm),
                        ("edge_margin_mm", edge_margin_mm),
                        ("min_separation_mm", min_separation_mm)):
        if not (value >= 0 and math.isfinite(value)):
            raise QSMConfigError(f"{name} must be >= 0, got {value}")
    if not 0 < left_lobe_fraction < 1:
        raise QSMConfigError(f"left_lobe_fraction must be in (0, 1), got {left_lobe_fraction}")
    n_rois = int(n_rois)
    xp = get_array_module(liver_mask)
    liver_dev = xp.asarray(liver_mask).astype(bool)
    if liver_dev.ndim != 3:
        raise QSMInputError(f"liver mask must be 3-D, got shape {tuple(liver_dev.shape)}",
                            field="liver_mask")
    if not bool(liver_dev.any()):
        raise QSMInputError("the liver mask is empty", field="liver_mask")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise QSMInputError(f"affine must be 4 x 4, got {affine.shape}", field="affine")
    voxel = voxel_size_from_affine(affine)
    shape = tuple(liver_dev.shape)

    excluded_dev = xp.zeros(shape, dtype=bool)
    if exclude is not None:
        user = xp.asarray(exclude).astype(bool)
        if user.shape != shape:
            raise QSMInputError(f"exclude mask shape {tuple(user.shape)} differs from the "
                                f"liver mask shape {shape}", field="exclude")
        excluded_dev |= user & liver_dev
    maps = dict(maps or {})
    if maps and outlier_z is not None:
        excluded_dev |= liver_outliers(maps, liver_dev, outlier_z=outlier_z)
    vessels_raw = to_numpy(excluded_dev)

    # Work on the host from here: one slice, a few thousand voxels.
    liver = to_numpy(liver_dev)
    axis = int(np.argmax(np.abs(direction_cosines(affine)[2, :])))
    order = [a for a in range(3) if a != axis] + [axis]
    liver_t = np.transpose(liver, order)
    vessels_t = np.transpose(vessels_raw, order)
    pixel = (float(voxel[order[0]]), float(voxel[order[1]]))
    if vessel_margin_mm > 0 and vessels_t.any():
        from qsmliver.mask.morphology import ball

        disk = ball(vessel_margin_mm, (pixel[0], pixel[1], 1e12))
        excluded_t = ndimage(np).binary_dilation(vessels_t, structure=disk) & liver_t
    else:
        excluded_t = vessels_t & liver_t
    maps_t: list[tuple[np.ndarray, float]] = []
    for name, values in maps.items():
        host = np.transpose(np.asarray(to_numpy(values), dtype=np.float64), order)
        if host.shape != liver_t.shape:
            raise QSMInputError(f"map shape differs from the liver mask shape {shape}",
                                field=str(name))
        good = liver_t & ~excluded_t & np.isfinite(host)
        scale = _robust_centre_scale(host[good])[1] if good.any() else 1.0
        maps_t.append((np.where(np.isfinite(host), host, 0.0), scale))
    lobe_t = None
    if lobes is not None:
        missing = {"right", "left"} - set(lobes)
        if missing:
            raise QSMConfigError(f"lobes needs 'right' and 'left' masks (missing {missing})")
        lobe_t = {k: np.transpose(np.asarray(to_numpy(lobes[k])).astype(bool), order)
                  for k in ("right", "left")}

    offsets, radius = _disk_offsets(area_cm2 * 100.0, pixel)
    if slice_index is not None:
        if not 0 <= int(slice_index) < liver_t.shape[2]:
            raise QSMInputError(f"slice {slice_index} is outside 0..{liver_t.shape[2] - 1}",
                                field="slice_index")
        candidates_order, reason = [int(slice_index)], "user"
    else:
        candidates_order, reason = _slice_order(liver_t, vessels_t, min_vessel_voxels)

    n_left = round(n_rois / 3.0)
    n_right = n_rois - n_left
    min_distance = 2.0 * radius + min_separation_mm
    # centre-to-world for in-plane voxel (i, j) on slice k (transposed axes -> array axes)
    inverse = np.argsort(order)
    tried = []
    for k in candidates_order:  # a few slices at most
        allowed = liver_t[:, :, k] & ~excluded_t[:, :, k]
        if not allowed.any():
            tried.append(f"slice {k}: no liver left after excluding vessels")
            continue
        padded = np.pad(allowed, 1)
        dist = ndimage(np).distance_transform_edt(padded, sampling=pixel)[1:-1, 1:-1]
        ok = allowed & (dist > radius + edge_margin_mm)
        if ok.sum() == 0:
            tried.append(f"slice {k}: no room for a {2 * radius:.1f} mm disk")
            continue
        ii, jj = np.nonzero(ok)
        index3 = np.stack([ii, jj, np.full_like(ii, k)], axis=1)[:, inverse]
        world = (affine[:3, :3] @ index3.T).T + affine[:3, 3]
        coords_mm = np.stack([ii * pixel[0], jj * pixel[1]], axis=1)
        if maps_t:
            local = _local_variance([(m[:, :, k], s) for m, s in maps_t], allowed, offsets)
            score = local[ii, jj] - 1e-9 * dist[ii, jj]
        else:
            score = -dist[ii, jj]
        if lobe_t is not None:
            is_left = lobe_t["left"][ii, jj, k] & ~lobe_t["right"][ii, jj, k]
        else:
            li, lj = np.nonzero(liver_t[:, :, k])
            lindex = np.stack([li, lj, np.full_like(li, k)], axis=1)[:, inverse]
            lx = (affine[0, :3] @ lindex.T) + affine[0, 3]
            split = lx.min() + left_lobe_fraction * (lx.max() - lx.min())
            is_left = world[:, 0] < split
        notes = []
        chosen_right = [int(i) for i in np.flatnonzero(~is_left)[
            _greedy(coords_mm[~is_left], score[~is_left], n_right, [], min_distance)]]
        taken = [coords_mm[i] for i in chosen_right]
        chosen_left = [int(i) for i in np.flatnonzero(is_left)[
            _greedy(coords_mm[is_left], score[is_left], n_left, taken, min_distance)]]
        lobe_names = ["right"] * len(chosen_right) + ["left"] * len(chosen_left)
        chosen = chosen_right + chosen_left
        if len(chosen) < n_rois:  # fill from anywhere on the slice
            short = n_rois - len(chosen)
            extra = _greedy(coords_mm, score, short, [coords_mm[i] for i in chosen],
                            min_distance)
            if extra:
                notes.append(f"{len(extra)} ROI(s) placed outside their intended lobe on "
                             f"slice {k} (not enough room)")
            chosen += extra
            lobe_names += ["left" if is_left[i] else "right" for i in extra]
        if len(chosen) < n_rois:
            tried.append(f"slice {k}: room for {len(chosen)} of {n_rois} ROIs")
            continue
        labels_t = np.zeros(liver_t.shape, dtype=np.int16)
        for number, idx in enumerate(chosen, start=1):
            pi = ii[idx] + offsets[:, 0]
            pj = jj[idx] + offsets[:, 1]
            labels_t[pi, pj, k] = number
        labels = np.transpose(labels_t, inverse)
        names = {n: f"roi{n}_{lobe}_lobe" for n, lobe in enumerate(lobe_names, start=1)}
        if tried:
            notes.insert(0, "; ".join(tried))
        return LiverROIs(
            labels=labels, names=names, slice_index=int(k), slice_axis=axis,
            slice_reason=reason, centres_voxel=index3[chosen].astype(int),
            centres_mm=world[chosen], lobes=lobe_names, radius_mm=radius,
            area_mm2=float(offsets.shape[0] * pixel[0] * pixel[1]),
            excluded=np.transpose(excluded_t, inverse), notes=notes)
    raise QSMInputError(f"cannot place {n_rois} ROIs of {area_cm2:g} cm² in the liver: "
                        + "; ".join(tried), field="liver_mask")


def liver_roi_statistics(
    maps: Mapping[str, ArrayLike],
    rois: LiverROIs | ArrayLike,
    liver_mask: ArrayLike | None = None,
    *,
    voxel_size_mm: ArrayLike = (1.0, 1.0, 1.0),
    roi_names: Mapping[int, str] | None = None,
    excluded: ArrayLike | None = None,
    percentiles: Sequence[float] = (5, 25, 50, 75, 95),
) -> pd.DataFrame:
    """Statistics of each liver ROI, of all ROIs pooled, and of the whole liver.

    Parameters
    ----------
    maps : mapping of str to (X, Y, Z) array_like
        E.g. ``{"r2star": ..., "chi": ..., "pdff": ..., "lic": ...}``.
    rois : LiverROIs or (X, Y, Z) int array_like
        Automatic ROIs, or a user-drawn ROI mask / label map (non-zero = ROI).
    liver_mask : (X, Y, Z) bool array_like, optional
        Whole-liver mask; adds the rows ``liver`` and (when vessels were excluded)
        ``liver_excluding_vessels``.
    voxel_size_mm : (3,) array_like
    roi_names : mapping of int to str, optional
        Names of a user label map's labels.
    excluded : (X, Y, Z) bool array_like, optional
        Voxels to leave out of ``liver_excluding_vessels`` (default: ``rois.excluded``).
    percentiles : sequence of float

    Returns
    -------
    pandas.DataFrame
        Columns as :func:`qsmliver.analysis.roi_statistics` with ``region`` in place of
        ``label``/``label_name``: one row per (ROI, map), then ``rois_pooled`` (all ROI voxels
        together: with equal-size ROIs its mean is the mean of the ROI means, the seed study's
        liver value), ``liver`` and ``liver_excluding_vessels``.
    """
    if isinstance(rois, LiverROIs):
        labels = rois.labels
        names = dict(rois.names)
        excluded = rois.excluded if excluded is None else excluded
    else:
        labels = rois
        xp = get_array_module(labels)
        labels = xp.asarray(labels)
        if labels.dtype == bool:
            labels = labels.astype(np.int16)
        names = dict(roi_names or {})
    xp = get_array_module(labels)
    labels = xp.asarray(labels)
    frames = [roi_statistics(maps, labels, names, voxel_size_mm=voxel_size_mm,
                             percentiles=percentiles)]
    pooled = roi_statistics(maps, labels > 0, {1: "rois_pooled"}, voxel_size_mm=voxel_size_mm,
                            percentiles=percentiles)
    frames.append(pooled)
    if liver_mask is not None:
        liver = xp.asarray(liver_mask).astype(bool)
        frames.append(roi_statistics(maps, liver, {1: "liver"}, voxel_size_mm=voxel_size_mm,
                                     percentiles=percentiles))
        if excluded is not None and bool(xp.any(xp.asarray(excluded))):
            kept = liver & ~xp.asarray(excluded).astype(bool)
            frames.append(roi_statistics(maps, kept, {1: "liver_excluding_vessels"},
                                         voxel_size_mm=voxel_size_mm,
                                         percentiles=percentiles))
    table = pd.concat(frames, ignore_index=True)
    table = table.rename(columns={"label_name": "region"}).drop(columns="label")
    return table.reset_index(drop=True)

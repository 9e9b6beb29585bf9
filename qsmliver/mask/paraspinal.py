"""Paraspinal muscle: the χ reference region of hepatic QSM when subcutaneous fat cannot serve.

Liver QSM needs a reference tissue whose susceptibility does not change with liver iron.
Subcutaneous adipose tissue (SAT) is the usual one (:func:`qsmliver.mask.subcutaneous_fat_mask`;
Sharma SD, Hernando D, Horng DE, Reeder SB, MRM 2015;74:673-683), but lean patients have little
of it, and fat-water errors and partial volume at the skin bias it; the paraspinal (erector
spinae) muscle is the other reference region in use. :func:`paraspinal_muscle_mask` finds
it from the fat-water maps and the image orientation alone:

1. The orientation comes from the affine (:func:`anatomical_axes`): which array axis runs
   left-right, posterior-anterior and inferior-superior, and in which sense.
2. In every axial slice the trunk (the body's largest in-plane part, so that arms lying
   beside it do not count; cavities filled) gives the posterior skin, the
   anterior-posterior depth ``D`` and the left-right width ``W``; the midline (the spine) is
   the median over the rows 60-90 % of the depth from the back of the middle of each row's
   left-right extent: the anterior body wall is symmetric about it, whereas arms lying
   against the trunk, which the body mask may join to it, sit further back.
3. Candidates: body voxels within ``posterior_fraction · D`` of the posterior skin, between
   ``medial_fraction · W`` and ``lateral_fraction · W`` from the midline (the erector spinae
   lie either side of the spinous processes, the spinal canal and the vertebral body lie on
   the midline and anterior to them), water-dominant (PDFF <= ``max_pdff_percent``: SAT and
   fatty marrow are out) and with at least ``min_water_fraction`` of the median water signal
   of the candidate box (cortical bone, vessels with signal voids and noise are out).
4. The candidates are eroded by ``erode_mm`` (partial volume with fat at the muscle's edge)
   and, on each side of the midline, the largest connected part is kept (a kidney tip or a
   rib's muscle in the box is a smaller, separate part).

The defaults are drawn from adult anatomy (erector spinae about 1-7 cm either side of the
midline and within about 8 cm of the posterior skin at the level of the liver, in a trunk
30-40 cm wide and 20-30 cm deep), not tuned to a phantom.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver.backend import get_array_module, ndimage
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.geometry import direction_cosines, voxel_size_from_affine
from qsmliver.mask.body import non_negative
from qsmliver.mask.morphology import ball, fill_holes

__all__ = ["anatomical_axes", "paraspinal_muscle_mask"]

Array = Any


def anatomical_axes(affine: ArrayLike) -> dict[str, tuple[int, int]]:
    """Array axis and sense of the left-right, posterior-anterior and inferior-superior
    directions of a RAS+ affine.

    Parameters
    ----------
    affine : (4, 4) array_like
        Voxel-to-world affine, RAS+ (NIfTI convention; :mod:`qsmliver.io` converts DICOM).

    Returns
    -------
    dict
        ``{"right": (axis, sign), "anterior": (axis, sign), "superior": (axis, sign)}``: the
        array axis closest to that world direction, and +1 when the index increases towards
        it, -1 when it decreases.

    Raises
    ------
    QSMInputError
        When two world directions fall on the same array axis (a degenerate affine).

    Examples
    --------
    >>> anatomical_axes(np.diag([-1.0, 1.0, 2.0, 1.0]))["right"]
    (0, -1)
    """
    cosines = direction_cosines(affine)  # columns: world direction of each array axis
    if not np.all(np.isfinite(cosines)):
        raise QSMInputError("the affine has non-finite direction cosines", field="affine")
    axes: dict[str, tuple[int, int]] = {}
    for world, name in enumerate(("right", "anterior", "superior")):
        axis = int(np.argmax(np.abs(cosines[world])))
        axes[name] = (axis, 1 if cosines[world, axis] > 0 else -1)
    if len({axis for axis, _ in axes.values()}) != 3:
        raise QSMInputError(f"cannot tell the anatomical axes from the affine {affine!r}",
                            field="affine")
    return axes


def _to_canonical(image: Array, axes: dict[str, tuple[int, int]]) -> Array:
    """Reorder to (left→right, posterior→anterior, inferior→superior)."""
    xp = get_array_module(image)
    order = [axes[name][0] for name in ("right", "anterior", "superior")]
    out = xp.transpose(image, order)
    flips = tuple(i for i, name in enumerate(("right", "anterior", "superior"))
                  if axes[name][1] < 0)
    return xp.flip(out, axis=flips) if flips else out


def _from_canonical(image: Array, axes: dict[str, tuple[int, int]]) -> Array:
    xp = get_array_module(image)
    flips = tuple(i for i, name in enumerate(("right", "anterior", "superior"))
                  if axes[name][1] < 0)
    if flips:
        image = xp.flip(image, axis=flips)
    order = [axes[name][0] for name in ("right", "anterior", "superior")]
    return xp.transpose(image, np.argsort(order).tolist())


def _extent(present: Array, xp) -> tuple[Array, Array]:
    """First and last index where ``present`` (..., N) is True along its last axis (-1 if none)."""
    n = present.shape[-1]
    index = xp.arange(n)
    first = xp.where(present, index, n).min(axis=-1)
    last = xp.where(present, index, -1).max(axis=-1)
    return xp.where(first == n, -1, first), last


def _trunk(body: Array) -> Array:
    """The largest in-plane connected part of every axial slice (drops arms beside the trunk)."""
    xp = get_array_module(body)
    out = xp.zeros_like(body)
    for k in range(body.shape[2]):
        labels, count = ndimage(xp).label(body[:, :, k])
        if int(count) == 0:
            continue
        sizes = xp.bincount(labels.ravel())
        sizes[0] = 0
        out[:, :, k] = labels == int(xp.argmax(sizes))
    return out


def paraspinal_muscle_mask(
    pdff_percent: Array,
    water_magnitude: Array,
    body: Array,
    affine: ArrayLike,
    *,
    max_pdff_percent: float = 20.0,
    thickness_mm: float = 25.0,
    posterior_fraction: float = 0.35,
    medial_fraction: float = 0.03,
    lateral_fraction: float = 0.2,
    min_water_fraction: float = 0.3,
    erode_mm: float | None = None,
) -> Array:
    """The erector spinae muscles on both sides of the spine, from fat-water maps.

    The method is described in the module docstring (:mod:`qsmliver.mask.paraspinal`).

    Parameters
    ----------
    pdff_percent : (X, Y, Z) array
        Proton-density fat fraction, percent.
    water_magnitude : (X, Y, Z) array
        Water signal (any scale; complex input is taken in magnitude).
    body : (X, Y, Z) bool array
        The body's tissue (:func:`qsmliver.mask.body_mask`).
    affine : (4, 4) array_like
        Voxel-to-world RAS+ affine of the images (orientation and voxel size).
    max_pdff_percent : float
        Muscle is water-dominant; fatty infiltration of older patients' muscle stays below it.
    thickness_mm : float
        Depth of muscle taken, mm, from the first water-dominant voxel seen from the back.
    posterior_fraction : float
        Depth of the search box from the posterior skin, as a fraction of the slice's
        anterior-posterior body depth.
    medial_fraction, lateral_fraction : float
        Inner and outer distance of the search box from the midline, as fractions of the
        slice's left-right body width.
    min_water_fraction : float
        Least water signal, as a fraction of the median water signal in the search box.
    erode_mm : float, optional
        In-plane erosion radius, mm; default the largest in-plane voxel size; 0 for none.

    Returns
    -------
    (X, Y, Z) bool array
        On the backend of the input; the union of the left and right muscle.

    Raises
    ------
    QSMInputError
        Mismatched shapes, a degenerate affine, or when no muscle is found on either side.
    QSMConfigError
        Settings out of range.
    """
    xp = get_array_module(pdff_percent)
    pdff = xp.asarray(pdff_percent)
    if pdff.ndim != 3:
        raise QSMInputError(f"pdff_percent must be 3-D, got shape {tuple(pdff.shape)}",
                            field="pdff_percent")
    water = xp.abs(xp.asarray(water_magnitude))
    body = xp.asarray(body).astype(bool)
    for name, image in (("water_magnitude", water), ("body", body)):
        if tuple(image.shape) != tuple(pdff.shape):
            raise QSMInputError(f"{name} shape {tuple(image.shape)} does not match the PDFF "
                                f"map {tuple(pdff.shape)}", field=name)
    max_pdff = non_negative("max_pdff_percent", max_pdff_percent, 100.0)
    thickness_mm = non_negative("thickness_mm", thickness_mm, 1e3)
    posterior_fraction = non_negative("posterior_fraction", posterior_fraction, 1.0)
    medial_fraction = non_negative("medial_fraction", medial_fraction, 0.5)
    lateral_fraction = non_negative("lateral_fraction", lateral_fraction, 0.5)
    if lateral_fraction <= medial_fraction:
        raise QSMConfigError("lateral_fraction must exceed medial_fraction")
    min_water = non_negative("min_water_fraction", min_water_fraction, 10.0)
    axes = anatomical_axes(affine)
    voxel = voxel_size_from_affine(affine)[[axes[name][0]
                                            for name in ("right", "anterior", "superior")]]
    erode_mm = float(max(voxel[0], voxel[1])) if erode_mm is None else non_negative(
        "erode_mm", erode_mm, 1e3)
    if not bool(body.any()):
        raise QSMInputError("the body mask is empty", field="body")

    pdff_c = _to_canonical(xp.where(xp.isfinite(pdff), pdff, 100.0), axes)
    water_c = _to_canonical(xp.where(xp.isfinite(water), water, 0.0), axes)
    body_c = _trunk(fill_holes(_to_canonical(body, axes)))
    n_lr, n_ap, _ = body_c.shape
    lr = xp.arange(n_lr, dtype=xp.float64)[:, None, None]
    ap = xp.arange(n_ap, dtype=xp.float64)[None, :, None]

    # Per axial slice: posterior skin, depth D, and the midline of the posterior quarter.
    post, front = _extent(xp.moveaxis(body_c.any(axis=0), 0, -1), xp)  # (S,)
    depth = (front - post + 1).astype(xp.float64)
    present = post >= 0
    row_first, row_last = _extent(xp.moveaxis(body_c, 0, -1), xp)  # (AP, S), along LR
    row_mid = 0.5 * (row_first + row_last).astype(xp.float64)
    height = (ap[0, :, :] - post[None, :]) / xp.maximum(depth[None, :], 1.0)  # (AP, S)
    anterior_rows = (row_first >= 0) & (height >= 0.6) & (height <= 0.9)
    midline = xp.nanmedian(xp.where(anterior_rows, row_mid, xp.nan), axis=0)
    present = present & xp.isfinite(midline)
    midline = xp.where(present, midline, 0.0)
    width_first, width_last = _extent(xp.moveaxis(body_c.any(axis=1), 0, -1), xp)
    width = (width_last - width_first + 1).astype(xp.float64) * voxel[0]
    from_midline_mm = xp.abs(lr - midline[None, None, :]) * voxel[0]
    from_back_mm = (ap - post[None, None, :].astype(xp.float64)) * voxel[1]
    box = (body_c & present[None, None, :]
           & (from_back_mm <= posterior_fraction * depth[None, None, :] * voxel[1])
           & (from_midline_mm >= medial_fraction * width[None, None, :])
           & (from_midline_mm <= lateral_fraction * width[None, None, :]))
    if not bool(box.any()):
        raise QSMInputError("no paraspinal search region: the body mask has no posterior "
                            "part", field="body")
    typical_water = float(xp.median(water_c[box]))
    watery = box & (pdff_c <= max_pdff) & (water_c >= min_water * typical_water)
    # The muscle starts at the first water-dominant voxel seen from the back (the fascia under
    # the subcutaneous fat) and is taken ``thickness_mm`` deep from there.
    fascia, _ = _extent(xp.moveaxis(watery, 1, -1), xp)  # (LR, S): first anterior index
    from_fascia_mm = (ap - fascia[:, None, :].astype(xp.float64)) * voxel[1]
    candidates = watery & (fascia[:, None, :] >= 0) & (from_fascia_mm < thickness_mm)
    if erode_mm > 0:
        in_plane = ball(erode_mm, (float(voxel[0]), float(voxel[1]), 1e9), xp)
        candidates = ndimage(xp).binary_erosion(candidates, structure=in_plane, border_value=1)
    muscle = xp.zeros_like(candidates)
    side_of = lr < midline[None, None, :]
    found = []
    for side in (side_of, ~side_of):
        labels, count = ndimage(xp).label(candidates & side)
        if int(count) == 0:
            continue
        sizes = xp.bincount(labels.ravel())
        sizes[0] = 0
        muscle |= labels == int(xp.argmax(sizes))
        found.append(int(sizes.max()))
    if not found:
        raise QSMInputError(
            f"no paraspinal muscle found (water-dominant voxels, PDFF <= {max_pdff:g} %, "
            f"within {posterior_fraction:g} of the body depth from the posterior skin)",
            field="pdff_percent")
    return _from_canonical(muscle, axes)

"""Bipolar-readout phase correction of multi-echo gradient echoes before fat-water separation.

With bipolar readout gradients, echoes read with a negative gradient (the even echoes, 2nd,
4th, ...) carry a phase error relative to the odd ones, from eddy currents and gradient delays.
Following Lu et al. (MRM 2008;60:198-209), the error is modelled as smooth and linear along the
readout direction, ``φ(x) = a + b·x``, and estimated from the data, then removed from the even
echoes.

Estimation (after Lu et al.'s odd/even consistency idea): for each even echo ``n`` with both
neighbours, without error ``S_n² · conj(S_{n-1} · S_{n+1}) ≈ |·| e^{0}`` when the phase evolves
linearly over the three echoes; with the error it carries ``e^{2iφ(x)}``. These products are
summed over the echoes and the non-readout axes (they are weighted by the signal to the fourth
power, so high-signal voxels dominate), giving a readout profile ``D(x)``. The slope ``2b`` is the
phase of the lag-one autocorrelation ``Σ D(x+1) conj(D(x))`` and ``2a`` the phase of
``Σ D(x) e^{-2ibx}``. Halving leaves a π ambiguity in ``a``, resolved by choosing the sign for
which the corrected even echoes agree best with the mean of their odd neighbours. For a single
species (the brain) with even echo spacing the two choices cannot be told apart from the data:
``(-1)^n`` on the echoes is the same as a field shift of ``1/(2 ΔTE)``, so the choice can offset
the field map by that constant (measured on the brain phantom: χ unchanged, since background
removal takes out constants); with fat present the chemical shift breaks the tie. Fat
modulates the phase over the echoes, so the estimate is biased where fat dominates; it is a
simplified, magnitude-weighted version of the published method, not the full joint fit.

The readout direction comes from the acquisition's metadata when the reader found it
(:func:`readout_axis_from_metadata`): DICOM's ``InPlanePhaseEncodingDirection`` (``ROW``: phase
encoded along a row, i.e. along voxel axis 0, so the readout runs along axis 1; ``COL``: the
reverse) or BIDS's ``PhaseEncodingDirection`` with ``SliceEncodingDirection`` (the readout is
the third axis).

References
----------
Lu W, Yu H, Shimakawa A, Alley M, Reeder SB, Hargreaves BA. Water-fat separation with bipolar
multiecho sequences. Magn Reson Med 2008;60:198-209.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from qsmliver import backend
from qsmliver.errors import QSMInputError

__all__ = ["correct_bipolar_phase", "readout_axis_from_metadata"]

Array = Any

_BIDS_AXES = {"i": 0, "j": 1, "k": 2}


def readout_axis_from_metadata(metadata: Mapping[str, Any]) -> tuple[int | None, str]:
    """The voxel axis of the frequency-encoding (readout) direction, from reader metadata.

    Parameters
    ----------
    metadata : mapping
        :attr:`qsmliver.data.MultiEchoGRE.metadata`. Used keys: ``InPlanePhaseEncodingDirection``
        (DICOM (0018,1312), ``"ROW"`` or ``"COL"``; voxel axis 0 runs along a DICOM row, axis
        1 along a column) and ``PhaseEncodingDirection`` (or dcm2niix's ``PhaseEncodingAxis``
        when the polarity is unknown) / ``SliceEncodingDirection`` (BIDS, ``"i"``, ``"j"`` or
        ``"k"`` with an optional ``"-"``; the slice direction defaults to ``"k"``).

    Returns
    -------
    axis : int or None
        0, 1 or 2; None when the metadata do not say.
    source : str
        Where the axis came from (for provenance), or why it is unknown.

    Examples
    --------
    >>> readout_axis_from_metadata({"InPlanePhaseEncodingDirection": "COL"})
    (0, 'InPlanePhaseEncodingDirection = COL')
    >>> readout_axis_from_metadata({"PhaseEncodingDirection": "i-"})[0]
    1
    """
    in_plane = str(metadata.get("InPlanePhaseEncodingDirection") or "").strip().upper()
    if in_plane in ("ROW", "COL"):
        return (1 if in_plane == "ROW" else 0), f"InPlanePhaseEncodingDirection = {in_plane}"
    key = next((k for k in ("PhaseEncodingDirection", "PhaseEncodingAxis")
                if metadata.get(k)), "PhaseEncodingDirection")
    phase = str(metadata.get(key) or "").strip().rstrip("-")
    slice_ = str(metadata.get("SliceEncodingDirection") or "k").strip().rstrip("-")
    if phase in _BIDS_AXES and slice_ in _BIDS_AXES and phase != slice_:
        (axis,) = set(range(3)) - {_BIDS_AXES[phase], _BIDS_AXES[slice_]}
        return axis, f"{key} = {metadata[key]}, SliceEncodingDirection = {slice_}"
    return None, ("the metadata name no phase-encoding direction (DICOM "
                  "InPlanePhaseEncodingDirection or BIDS PhaseEncodingDirection)")


def correct_bipolar_phase(signal: Array, te_s: Any, *, mask: Array | None = None,
                          readout_axis: int = 0) -> tuple[Array, dict[str, Any]]:
    """Estimate and remove a linear odd/even (bipolar readout) phase error.

    Parameters
    ----------
    signal : (X, Y, Z, E) complex ndarray
        Multi-echo echoes, echo 1 first (NumPy or CuPy); at least 3 echoes.
    te_s : (E,) array_like
        Echo times, s (only their number is used; they must match the echoes).
    mask : (X, Y, Z) bool ndarray, optional
        Voxels used for the estimate (default: all; they are signal-weighted anyway).
    readout_axis : int
        Spatial axis (0, 1 or 2) of the readout direction.

    Returns
    -------
    corrected : (X, Y, Z, E) complex ndarray
        The echoes with ``exp(-i(a + b·x))`` applied to the even echoes (2nd, 4th, ...).
    info : dict
        ``offset_rad`` (a), ``slope_rad_per_voxel`` (b) and ``phase_rad`` (the (N,) profile
        along the readout axis).

    Raises
    ------
    QSMInputError
        Bad shapes, too few echoes, a non-complex signal or an invalid readout axis.
    """
    xp = backend.get_array_module(signal)
    s = xp.asarray(signal)
    if s.ndim != 4 or s.dtype.kind != "c":
        raise QSMInputError(f"signal must be a complex 4-D (X, Y, Z, echoes) array, got shape "
                            f"{s.shape} dtype {s.dtype}", field="signal")
    n_echoes = s.shape[-1]
    try:
        n_te = len(list(backend.to_numpy(te_s).reshape(-1)) if hasattr(te_s, "shape")
                   else list(te_s))
    except TypeError:
        raise QSMInputError(f"echo times must be a sequence (s), got {te_s!r}",
                            field="te_s") from None
    if n_te != n_echoes:
        raise QSMInputError(f"{n_te} echo times for {n_echoes} echoes", field="te_s")
    if n_echoes < 3:
        raise QSMInputError(f"bipolar correction needs at least 3 echoes, got {n_echoes}",
                            field="signal")
    if readout_axis not in (0, 1, 2):
        raise QSMInputError(f"readout_axis must be 0, 1 or 2, got {readout_axis}",
                            field="readout_axis")
    if mask is not None:
        m = xp.asarray(mask, dtype=bool)
        if m.shape != s.shape[:3]:
            raise QSMInputError(f"mask shape {m.shape} does not match {s.shape[:3]}",
                                field="mask")
        s_used = s * m[..., None]
    else:
        s_used = s
    others = tuple(a for a in range(3) if a != readout_axis)
    evens = list(range(1, n_echoes - 1, 2))  # 0-based 1, 3, ...: the 2nd, 4th, ... echoes
    product = sum(s_used[..., n] ** 2 * xp.conj(s_used[..., n - 1] * s_used[..., n + 1])
                  for n in evens)
    profile = xp.sum(product, axis=others)  # (N,) along the readout axis
    scale = float(xp.max(xp.abs(profile)))
    if scale == 0.0:
        raise QSMInputError("no signal to estimate the bipolar phase from", field="signal")
    profile = profile / scale
    slope2 = float(xp.angle(xp.sum(profile[1:] * xp.conj(profile[:-1]))))
    x = xp.arange(profile.shape[0], dtype=xp.float64)
    offset2 = float(xp.angle(xp.sum(profile * xp.exp(-1j * slope2 * x))))
    slope, offset = slope2 / 2.0, offset2 / 2.0
    # Resolve the π ambiguity: corrected even echoes should agree with their odd neighbours.
    shape = [1, 1, 1]
    shape[readout_axis] = -1
    ramp = xp.exp(-1j * (offset + slope * x)).reshape(shape)
    agreement = sum(xp.sum(s_used[..., n] * ramp
                           * xp.conj(s_used[..., n - 1] + s_used[..., n + 1])) for n in evens)
    if float(xp.real(agreement)) < 0:
        offset = offset + math.pi
        ramp = -ramp
    offset = (offset + math.pi) % (2 * math.pi) - math.pi
    corrected = s.copy()
    corrected[..., 1::2] = s[..., 1::2] * ramp[..., None].astype(s.dtype)
    phase = offset + slope * x
    return corrected, {"offset_rad": offset, "slope_rad_per_voxel": slope,
                       "phase_rad": backend.to_numpy(phase).tolist(),
                       "readout_axis": readout_axis, "method": "Lu et al. 2008 (linear)"}

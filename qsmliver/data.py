"""The data model: multi-echo complex GRE acquisitions and quantitative result maps.

A :class:`MultiEchoGRE` carries the complex echoes together with every piece of metadata the
physics needs (echo times, field strength, B0 direction, voxel size, affine), so that stages
never have to guess. It is validated on construction: an instance that exists is consistent.

Units (DESIGN section 2): TE in seconds, B0 in tesla, voxel size in mm, B0 direction a unit
vector in the voxel frame.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend
from qsmliver.errors import QSMInputError
from qsmliver.geometry import b0_direction_from_affine, voxel_size_from_affine

__all__ = ["GYROMAGNETIC_RATIO_HZ_PER_T", "MultiEchoGRE", "QuantitativeMap", "hz_to_ppm"]

#: Proton gyromagnetic ratio / 2π in Hz/T (CODATA 2018, 42.577478 MHz/T).
GYROMAGNETIC_RATIO_HZ_PER_T = 42.577478e6

#: Largest B0 field accepted as plausible for MRI, in tesla.
_MAX_B0_T = 21.2
#: Relative tolerance between header voxel size and the affine's column norms.
_VOXEL_SIZE_RTOL = 1e-3


def hz_to_ppm(field_hz, b0_t: float):
    """Convert a frequency offset in Hz to a field in ppm of B0.

    ``field_ppm = field_hz / (gamma_hz_per_t * b0_t) * 1e6`` (DESIGN section 2).
    """
    return field_hz / (GYROMAGNETIC_RATIO_HZ_PER_T * b0_t) * 1e6


@dataclasses.dataclass(eq=False, repr=False)
class MultiEchoGRE:
    """A multi-echo complex gradient-echo acquisition with its metadata.

    Parameters
    ----------
    signal : (X, Y, Z, E) complex ndarray
        Complex echoes in NIfTI voxel order, echoes last. A NumPy or CuPy array; a 3-D array
        is taken as a single echo. Stored as complex64 unless complex128 is given.
    te_s : (E,) array_like
        Echo times in seconds, strictly increasing and positive.
    b0_t : float
        Main field strength in tesla.
    affine : (4, 4) array_like, optional
        Voxel-to-RAS+ world affine in mm. Default: identity scaled by ``voxel_size_mm``.
    voxel_size_mm : (3,) array_like, optional
        Voxel size in mm; default from the affine. When both are given they must agree.
    b0_dir : (3,) array_like, optional
        Unit B0 direction in the voxel frame; default derived from the affine (world +z).
    vendor : str, optional
        Scanner manufacturer ("Siemens", "GE", "Philips", ...), when known.
    source_files : sequence of str, optional
        The files this acquisition was read from (recorded in output provenance).
    metadata : dict, optional
        Anything else worth keeping (series description, sequence, reader notes).
    has_phase : bool, optional
        False for magnitude-only data (phase set to zero); phase-based stages refuse it.

    Raises
    ------
    QSMInputError
        If the arrays or metadata are inconsistent; the message names the source file(s).

    Examples
    --------
    >>> import numpy as np
    >>> gre = MultiEchoGRE(np.ones((4, 4, 4, 3), complex), te_s=[0.005, 0.010, 0.015], b0_t=3.0)
    >>> gre.n_echoes, gre.b0_dir.tolist()
    (3, [0.0, 0.0, 1.0])
    """

    signal: Any
    te_s: Any
    b0_t: float
    affine: Any = None
    voxel_size_mm: Any = None
    b0_dir: Any = None
    vendor: str | None = None
    source_files: tuple[str, ...] = ()
    metadata: dict = dataclasses.field(default_factory=dict)
    has_phase: bool = True

    def __post_init__(self) -> None:
        self.source_files = tuple(os.fspath(f) for f in (self.source_files or ()))
        where = list(self.source_files) or None
        xp = backend.get_array_module(self.signal)
        signal = self.signal if xp is not np else np.asarray(self.signal)
        if signal.ndim == 3:
            signal = signal[..., None]
        if signal.ndim != 4:
            raise QSMInputError(
                f"expected complex echoes of shape (X, Y, Z, echo), got {signal.ndim}-D "
                f"{tuple(signal.shape)}",
                where,
                "signal",
            )
        if min(signal.shape) < 1:
            raise QSMInputError(f"empty image of shape {tuple(signal.shape)}", where, "signal")
        if signal.dtype != xp.complex128:
            signal = signal.astype(xp.complex64)
        if not bool(xp.isfinite(signal).all()):
            n_bad = int((~xp.isfinite(signal)).sum())
            raise QSMInputError(f"{n_bad} voxels are NaN or infinite", where, "signal")
        self.signal = signal

        self.te_s = _validate_te(self.te_s, signal.shape[3], where)
        self.b0_t = _validate_b0(self.b0_t, where)
        self.affine, self.voxel_size_mm = _validate_geometry(
            self.affine, self.voxel_size_mm, where
        )
        if self.b0_dir is None:
            self.b0_dir = b0_direction_from_affine(self.affine)
        self.b0_dir = _validate_b0_dir(self.b0_dir, where)
        self.metadata = dict(self.metadata or {})

    def __repr__(self) -> str:
        te_ms = ", ".join(f"{t * 1e3:.4g}" for t in self.te_s)
        return (
            f"MultiEchoGRE(shape={self.shape}, echoes={self.n_echoes}, te_ms=[{te_ms}], "
            f"b0_t={self.b0_t:g}, voxel_size_mm={np.round(self.voxel_size_mm, 4).tolist()}, "
            f"vendor={self.vendor!r}, dtype={self.signal.dtype}, "
            f"device={backend.device_of(self.signal)})"
        )

    # -- derived quantities -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial matrix size (X, Y, Z)."""
        return tuple(int(n) for n in self.signal.shape[:3])

    @property
    def n_echoes(self) -> int:
        """Number of echoes."""
        return int(self.signal.shape[3])

    @property
    def magnitude(self):
        """(X, Y, Z, E) magnitude of the echoes, same array module as ``signal``."""
        return abs(self.signal)

    @property
    def phase(self):
        """(X, Y, Z, E) phase of the echoes in radians, in [-pi, pi]."""
        return backend.get_array_module(self.signal).angle(self.signal)

    @property
    def delta_te_s(self) -> float | None:
        """Echo spacing in seconds if the echoes are uniformly spaced, else None."""
        if self.n_echoes < 2:
            return None
        steps = np.diff(self.te_s)
        return float(steps[0]) if np.allclose(steps, steps[0], rtol=1e-3) else None

    def to(self, device: str | backend.Device) -> MultiEchoGRE:
        """A copy with ``signal`` on ``device`` ("cpu", "cuda", "cuda:N" or "auto")."""
        return dataclasses.replace(self, signal=backend.to_device(self.signal, device))

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable summary (used by ``qsmliver info`` and output sidecars)."""
        return {
            "Shape": list(self.shape),
            "Echoes": self.n_echoes,
            "EchoTime_s": [float(t) for t in self.te_s],
            "MagneticFieldStrength_T": float(self.b0_t),
            "B0Direction_voxel": [float(v) for v in self.b0_dir],
            "VoxelSize_mm": [float(v) for v in self.voxel_size_mm],
            "Affine": np.asarray(self.affine).tolist(),
            "Vendor": self.vendor,
            "PhaseAvailable": bool(self.has_phase),
            "SourceFiles": list(self.source_files),
            **{k: v for k, v in self.metadata.items() if _json_scalar(v)},
        }


@dataclasses.dataclass(eq=False)
class QuantitativeMap:
    """A result map with its unit and provenance.

    Parameters
    ----------
    data : (X, Y, Z) ndarray
        The values (NumPy or CuPy).
    name : str
        BIDS-derivatives suffix or ``desc-`` label, e.g. ``"Chimap"``, ``"R2starmap"``,
        ``"desc-PDFF_map"``.
    unit : str
        Physical unit, e.g. ``"ppm"``, ``"Hz"``, ``"1/s"``, ``"percent"``, ``"mg Fe/g dw"``, or
        ``"1"`` for dimensionless values and masks.
    affine : (4, 4) array_like
        Voxel-to-RAS+ affine of the map (mm).
    method : str, optional
        How the map was made (e.g. ``"TV-ADMM"``).
    parameters : dict, optional
        Parameters of the method, recorded in the sidecar.
    """

    data: Any
    name: str
    unit: str
    affine: Any
    method: str = ""
    parameters: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a map needs a name (BIDS suffix or desc- label)")
        if not self.unit:
            raise ValueError(f"map {self.name!r} needs a unit ('1' for dimensionless)")
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"map {self.name!r}: affine must be 4x4, got {affine.shape}")
        self.affine = affine

    def sidecar(self) -> dict[str, Any]:
        """The map-specific part of the JSON sidecar (units, method, parameters)."""
        return {"Units": self.unit, "Method": self.method, "Parameters": dict(self.parameters)}


# -- validation helpers ----------------------------------------------------------------------
def _validate_te(te_s: ArrayLike, n_echoes: int, where) -> np.ndarray:
    if te_s is None:
        raise QSMInputError("echo times are missing (give them in seconds)", where, "EchoTime")
    te = np.atleast_1d(np.asarray(te_s, dtype=np.float64)).ravel()
    if te.size != n_echoes:
        raise QSMInputError(
            f"{te.size} echo times for {n_echoes} echoes in the data", where, "EchoTime"
        )
    if not np.all(np.isfinite(te)) or np.any(te <= 0):
        raise QSMInputError(f"echo times must be positive and finite, got {te}", where, "EchoTime")
    if np.any(np.diff(te) <= 0):
        raise QSMInputError(
            f"echo times must be strictly increasing, got {np.round(te * 1e3, 4).tolist()} ms",
            where,
            "EchoTime",
        )
    if te.max() > 1.0:
        raise QSMInputError(
            f"echo times up to {te.max():g} s: give them in seconds, not milliseconds",
            where,
            "EchoTime",
        )
    return te


def _validate_b0(b0_t, where) -> float:
    if b0_t is None:
        raise QSMInputError(
            "field strength is missing (give B0 in tesla)", where, "MagneticFieldStrength"
        )
    try:
        value = float(b0_t)
    except (TypeError, ValueError):
        raise QSMInputError(
            f"field strength {b0_t!r} is not a number", where, "MagneticFieldStrength"
        ) from None
    if not math.isfinite(value) or not 0 < value <= _MAX_B0_T:
        raise QSMInputError(
            f"field strength {value:g} T is not a plausible MRI field (0 < B0 <= {_MAX_B0_T} T)",
            where,
            "MagneticFieldStrength",
        )
    return value


def _validate_geometry(affine, voxel_size_mm, where) -> tuple[np.ndarray, np.ndarray]:
    if affine is None:
        if voxel_size_mm is None:
            voxel_size_mm = (1.0, 1.0, 1.0)
        vox = _as_vector3(voxel_size_mm, where, "voxel_size_mm")
        if np.any(vox <= 0):
            raise QSMInputError(f"voxel sizes must be positive, got {vox}", where, "voxel_size_mm")
        return np.diag([*vox, 1.0]), vox
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise QSMInputError("affine must be a finite 4x4 matrix", where, "affine")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise QSMInputError("affine is singular (zero voxel size?)", where, "affine")
    from_affine = voxel_size_from_affine(affine)
    if voxel_size_mm is not None:
        vox = _as_vector3(voxel_size_mm, where, "voxel_size_mm")
        if not np.allclose(vox, from_affine, rtol=_VOXEL_SIZE_RTOL):
            raise QSMInputError(
                f"voxel size {vox.tolist()} mm disagrees with the affine's "
                f"{np.round(from_affine, 6).tolist()} mm",
                where,
                "voxel_size_mm",
            )
    return affine, from_affine


def _validate_b0_dir(b0_dir, where) -> np.ndarray:
    vec = _as_vector3(b0_dir, where, "b0_dir")
    norm = float(np.linalg.norm(vec))
    if not math.isfinite(norm) or norm < 1e-6:
        raise QSMInputError(f"B0 direction {vec.tolist()} has no length", where, "b0_dir")
    return vec / norm


def _as_vector3(value, where, field: str) -> np.ndarray:
    vec = np.asarray(value, dtype=np.float64).ravel()
    if vec.shape != (3,) or not np.all(np.isfinite(vec)):
        raise QSMInputError(f"expected 3 finite numbers, got {value!r}", where, field)
    return vec


def _json_scalar(value) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None or (
        isinstance(value, Sequence) and all(isinstance(v, (str, int, float)) for v in value)
    )

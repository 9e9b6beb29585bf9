"""Read multi-echo complex data stored as MATLAB files by fat-water tools.

Two layouts are understood:

* the ISMRM Fat-Water Toolbox structure ``imDataParams`` (Hu et al., MRM 2012;68:378), with
  ``images`` (X, Y, Z, coils, echoes), ``TE`` (s), ``FieldStrength`` (T),
  ``PrecessionIsClockwise`` and an optional ``mask``. As in the toolbox, the images are
  conjugated when ``PrecessionIsClockwise`` is not positive, so that fat always lies at negative
  frequency in the returned signal (the convention of :mod:`qsmliver.fatwater`); only
  single-coil (coil-combined) data are accepted;
* plain variables ``data`` ((X, Y, echoes) or (X, Y, Z, echoes)), ``te`` (s) and ``Tesla`` (T),
  as in M. Bydder's ``pdff`` examples; the data are used as stored.

There is no voxel size, orientation or B0 direction in either layout; callers supply them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from qsmliver.errors import QSMInputError

__all__ = ["FatWaterMat", "read_fatwater_mat"]


@dataclasses.dataclass(frozen=True, eq=False)
class FatWaterMat:
    """Contents of a fat-water MATLAB file.

    Attributes
    ----------
    signal : (X, Y, Z, E) complex64 ndarray
        Echoes, echo 1 first; fat at negative frequency.
    te_s : (E,) float64 ndarray
        Echo times, s.
    b0_t : float
        Field strength, T.
    mask : (X, Y, Z) bool ndarray or None
        The file's mask, when it has one.
    layout : str
        ``"imDataParams"`` or ``"data/te/Tesla"``.
    """

    signal: np.ndarray
    te_s: np.ndarray
    b0_t: float
    mask: np.ndarray | None
    layout: str


def _scalar(value: object, path: Path, field: str) -> float:
    array = np.asarray(value, dtype=float).ravel()
    if array.size != 1 or not np.isfinite(array[0]):
        raise QSMInputError(f"expected one finite number, got {array.size} values", path,
                            field=field)
    return float(array[0])


def _from_toolbox(params: np.void, path: Path) -> FatWaterMat:
    names = params.dtype.names or ()
    for field in ("images", "TE", "FieldStrength"):
        if field not in names:
            raise QSMInputError("imDataParams has no such field", path, field=field)
    images = np.asarray(params["images"])
    if images.ndim != 5:
        raise QSMInputError(f"images must be (X, Y, Z, coils, echoes), got shape {images.shape}",
                            path, field="images")
    if images.shape[3] != 1:
        raise QSMInputError(f"{images.shape[3]} coils: combine the coils first", path,
                            field="images")
    signal = images[:, :, :, 0, :]
    clockwise = (_scalar(params["PrecessionIsClockwise"], path, "PrecessionIsClockwise")
                 if "PrecessionIsClockwise" in names else 1.0)
    if clockwise <= 0:
        signal = np.conj(signal)
    mask = None
    if "mask" in names and np.asarray(params["mask"]).size:
        mask = np.asarray(params["mask"]) > 0
        if mask.shape != signal.shape[:3]:
            raise QSMInputError(f"mask shape {mask.shape} does not match the images "
                                f"{signal.shape[:3]}", path, field="mask")
    return _finish(signal, params["TE"], _scalar(params["FieldStrength"], path,
                                                 "FieldStrength"), mask, "imDataParams", path)


def _finish(signal: np.ndarray, te: object, b0_t: float, mask: np.ndarray | None, layout: str,
            path: Path) -> FatWaterMat:
    if not np.iscomplexobj(signal):
        raise QSMInputError(f"the echoes must be complex, got {signal.dtype}", path)
    te_s = np.asarray(te, dtype=float).ravel()
    if te_s.size != signal.shape[-1]:
        raise QSMInputError(f"{te_s.size} echo times for {signal.shape[-1]} echoes", path,
                            field="TE")
    if not (np.all(np.isfinite(te_s)) and np.all(np.diff(te_s) > 0) and te_s[0] > 0):
        raise QSMInputError(f"echo times must be positive and increasing, got {te_s}", path,
                            field="TE")
    if te_s[-1] > 1.0:
        raise QSMInputError(f"echo times must be in seconds, got {te_s}", path, field="TE")
    if not b0_t > 0:
        raise QSMInputError(f"field strength must be positive (T), got {b0_t}", path)
    return FatWaterMat(signal.astype(np.complex64), te_s, b0_t, mask, layout)


def read_fatwater_mat(path: str | os.PathLike) -> FatWaterMat:
    """Read a fat-water MATLAB (v5) file in either supported layout.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.mat`` file.

    Returns
    -------
    FatWaterMat

    Raises
    ------
    QSMInputError
        A missing or unreadable file, neither layout, or inconsistent contents (named in the
        message).
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise QSMInputError("no such file", path)
    try:
        content = scipy.io.loadmat(path)
    except (ValueError, TypeError, OSError, NotImplementedError) as error:
        raise QSMInputError(f"not a readable MATLAB v5 file ({error})", path) from None
    if "imDataParams" in content:
        return _from_toolbox(content["imDataParams"][0, 0], path)
    if {"data", "te", "Tesla"} <= content.keys():
        data = np.asarray(content["data"])
        if data.ndim == 3:
            data = data[:, :, None, :]
        if data.ndim != 4:
            raise QSMInputError(f"data must be (X, Y, echoes) or (X, Y, Z, echoes), got shape "
                                f"{data.shape}", path, field="data")
        return _finish(data, content["te"], _scalar(content["Tesla"], path, "Tesla"), None,
                       "data/te/Tesla", path)
    raise QSMInputError("neither an imDataParams structure nor data/te/Tesla variables", path)

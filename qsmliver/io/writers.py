"""Write result maps and multi-echo GRE data as NIfTI (or BIDS MEGRE) with JSON sidecars.

Every writer is all-or-nothing (DESIGN section 4): each file is written to a temporary file in
its destination folder (:func:`qsmliver.io.atomic.atomic_path`), and the temporaries are
renamed to their final names only when all of them were written. Existing outputs are refused
with :class:`~qsmliver.errors.QSMOutputExistsError` before anything is written, unless
``overwrite=True``.

NIfTI files carry the affine as both sform and qform with code 1 (scanner), spatial units mm.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from qsmliver import __version__, backend
from qsmliver.data import MultiEchoGRE, QuantitativeMap
from qsmliver.errors import QSMConfigError, QSMOutputExistsError
from qsmliver.io.atomic import atomic_path
from qsmliver.io.bids import bids_megre_name
from qsmliver.io.sidecar import provenance

__all__ = ["write_bids_megre", "write_gre_nifti", "write_map"]

_PARTS = ("mag", "phase", "real", "imag")
_PART_UNITS = {"mag": "arbitrary", "phase": "rad", "real": "arbitrary", "imag": "arbitrary"}
_BIDS_VERSION = "1.9.0"

#: A planned output: its final path and a function writing its content to a given path.
_Plan = list[tuple[Path, Callable[[Path], None]]]


# -- the all-or-nothing machinery -----------------------------------------------------------------
def _write_all(plan: _Plan, overwrite: bool) -> list[Path]:
    """Write every planned file to a temporary, then rename them all; nothing on failure."""
    targets = [path for path, _ in plan]
    if len(set(targets)) != len(targets):
        raise QSMConfigError("two outputs were planned under the same name")
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        names = ", ".join(str(t) for t in existing[:3])
        more = f" (and {len(existing) - 3} more)" if len(existing) > 3 else ""
        raise QSMOutputExistsError(
            f"{names}{more}: output exists; pass overwrite=True (CLI: --overwrite) to replace")
    with contextlib.ExitStack() as stack:
        for target, write in plan:
            temporary = stack.enter_context(atomic_path(target, overwrite))
            write(temporary)
    return targets


def _nifti_writer(data: np.ndarray, affine: np.ndarray) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        nib.save(_nifti_image(data, affine), path)

    return write


def _json_writer(content: dict[str, Any]) -> Callable[[Path], None]:
    text = json.dumps(content, indent=2, default=_to_json) + "\n"

    def write(path: Path) -> None:
        path.write_text(text, encoding="utf-8")

    return write


def _to_json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} to a JSON sidecar")


def _nifti_image(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """A NIfTI-1 image with sform and qform (code 1, scanner) set to ``affine``."""
    affine = np.asarray(affine, dtype=np.float64)
    image = nib.Nifti1Image(data, affine)
    image.header.set_data_dtype(data.dtype)
    image.header.set_sform(affine, code=1)
    image.header.set_qform(affine, code=1)
    image.header.set_xyzt_units(xyz="mm", t="sec")
    image.header["scl_slope"] = 1.0
    image.header["scl_inter"] = 0.0
    return image


def _sidecar_of(nifti_path: Path) -> Path:
    name = nifti_path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return nifti_path.with_name(name[: -len(suffix)] + ".json")
    raise QSMConfigError(f"{nifti_path}: output name must end in .nii or .nii.gz")


# -- maps -----------------------------------------------------------------------------------------
def write_map(
    qmap: QuantitativeMap,
    path: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a result map as NIfTI with a JSON sidecar.

    Parameters
    ----------
    qmap : QuantitativeMap
        The map; its data (NumPy or CuPy, 3-D or 4-D) are written as float32, boolean masks
        as uint8 and integer labels as uint8/int16/int32 (the smallest that holds them).
    path : path
        Output ``.nii.gz`` or ``.nii``; the sidecar is the same name with ``.json``.
    inputs : iterable of path
        Input files, recorded as ``SourceFiles`` in the sidecar.
    overwrite : bool
        Replace existing files; otherwise refuse them.
    extra : dict, optional
        More sidecar keys (they override the defaults).

    Returns
    -------
    Path
        The NIfTI file written.

    Raises
    ------
    QSMOutputExistsError
        If the NIfTI or its sidecar exists and ``overwrite`` is False.
    QSMConfigError
        If ``path`` does not end in ``.nii``/``.nii.gz`` or the data are not 3-D/4-D.
    """
    path = Path(path)
    data = _map_array(qmap)
    sidecar = {**qmap.sidecar(), **provenance(inputs), **(extra or {})}
    plan = [(path, _nifti_writer(data, qmap.affine)), (_sidecar_of(path), _json_writer(sidecar))]
    _write_all(plan, overwrite)
    return path


def _map_array(qmap: QuantitativeMap) -> np.ndarray:
    data = backend.to_numpy(qmap.data)
    if data.ndim not in (3, 4):
        raise QSMConfigError(f"map {qmap.name!r}: expected 3-D or 4-D data, got {data.shape}")
    if data.dtype == np.bool_:
        return data.astype(np.uint8)
    if np.issubdtype(data.dtype, np.integer):
        lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
        for dtype in (np.uint8, np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return data.astype(dtype)
        raise QSMConfigError(f"map {qmap.name!r}: labels {lo}..{hi} do not fit in int32")
    if np.iscomplexobj(data):
        raise QSMConfigError(f"map {qmap.name!r} is complex: write magnitude and phase maps")
    return data.astype(np.float32)


# -- multi-echo GRE as 4-D NIfTI ------------------------------------------------------------------
def write_gre_nifti(
    gre: MultiEchoGRE,
    out_prefix: str | os.PathLike,
    *,
    part: Sequence[str] = ("mag", "phase"),
    overwrite: bool = False,
) -> list[Path]:
    """Write a multi-echo GRE acquisition as 4-D NIfTI files with JSON sidecars.

    Parameters
    ----------
    gre : MultiEchoGRE
        The acquisition.
    out_prefix : path
        Output prefix: writes ``<prefix>_<part>.nii.gz`` and ``<prefix>_<part>.json``.
    part : sequence of {"mag", "phase", "real", "imag"}
        Components to write, float32; phase in radians. Magnitude-only data (``has_phase``
        False) are written as magnitude alone.
    overwrite : bool
        Replace existing files; otherwise refuse them.

    Returns
    -------
    list of Path
        ``[<prefix>_<part1>.nii.gz, <prefix>_<part1>.json, ...]``; the first is the file to
        give :func:`qsmliver.io.nifti.read_nifti_auto` to read it back.

    Raises
    ------
    QSMOutputExistsError
        If an output exists and ``overwrite`` is False.
    QSMConfigError
        For unknown parts.
    """
    prefix = Path(out_prefix)
    parts = _parts(gre, part)
    plan: _Plan = []
    for name in parts:
        image = prefix.with_name(f"{prefix.name}_{name}.nii.gz")
        sidecar = {
            "EchoTime": [float(t) for t in gre.te_s],
            **_acquisition_keys(gre, name),
            **provenance(gre.source_files),
        }
        plan += [(image, _nifti_writer(_component_array(gre, name), gre.affine)),
                 (_sidecar_of(image), _json_writer(sidecar))]
    return _write_all(plan, overwrite)


def _parts(gre: MultiEchoGRE, part: Sequence[str]) -> tuple[str, ...]:
    parts = (part,) if isinstance(part, str) else tuple(part)
    unknown = [p for p in parts if p not in _PARTS]
    if unknown or not parts or len(set(parts)) != len(parts):
        raise QSMConfigError(f"part must be distinct values of {', '.join(_PARTS)}, got "
                             f"{parts!r}")
    if not gre.has_phase:
        if "mag" not in parts:
            raise QSMConfigError("magnitude-only data: only part 'mag' can be written")
        return ("mag",)
    return parts


def _component_array(gre: MultiEchoGRE, part: str) -> np.ndarray:
    signal = backend.to_numpy(gre.signal)
    values = {"mag": np.abs, "phase": np.angle, "real": np.real, "imag": np.imag}[part](signal)
    return np.ascontiguousarray(values, dtype=np.float32)


def _acquisition_keys(gre: MultiEchoGRE, part: str) -> dict[str, Any]:
    keys: dict[str, Any] = {"MagneticFieldStrength": float(gre.b0_t)}
    if gre.vendor:
        keys["Manufacturer"] = gre.vendor
    keys["B0Direction_voxel"] = [float(v) for v in gre.b0_dir]
    keys["Units"] = _PART_UNITS[part]
    keys["ImageComponent"] = part
    if part == "phase":
        keys["PhaseScaling"] = "radians"
    return keys


# -- BIDS MEGRE -----------------------------------------------------------------------------------
def write_bids_megre(
    gre: MultiEchoGRE,
    bids_root: str | os.PathLike,
    subject: str,
    *,
    session: str | None = None,
    acquisition: str | None = None,
    run: str | int | None = None,
    part: Sequence[str] = ("mag", "phase"),
    overwrite: bool = False,
) -> list[Path]:
    """Write a multi-echo GRE acquisition as BIDS MEGRE files (one 3-D file per echo).

    Parameters
    ----------
    gre : MultiEchoGRE
        The acquisition.
    bids_root : path
        The BIDS dataset root; ``dataset_description.json`` is written there if missing.
    subject, session, acquisition, run : str, optional
        BIDS labels (letters and digits; a ``sub-``/``ses-``/... prefix is accepted).
    part : sequence of {"mag", "phase", "real", "imag"}
        Components to write (float32; phase in radians).
    overwrite : bool
        Replace existing image files and sidecars; otherwise refuse them.

    Returns
    -------
    list of Path
        The files written: per echo and part the image and its sidecar, then
        ``dataset_description.json`` if it was created.

    Raises
    ------
    QSMConfigError
        For labels that are not alphanumeric or unknown parts.
    QSMOutputExistsError
        If an output exists and ``overwrite`` is False.
    """
    root = Path(bids_root)
    labels = {"session": session, "acquisition": acquisition, "run": run}
    parts = _parts(gre, part)
    arrays = {name: _component_array(gre, name) for name in parts}
    plan: _Plan = []
    for echo in range(gre.n_echoes):
        for name in parts:
            image = root / bids_megre_name(subject, echo=echo + 1, part=name, **labels)
            sidecar = {
                "EchoTime": float(gre.te_s[echo]),
                "EchoNumber": echo + 1,
                **_acquisition_keys(gre, name),
                **provenance(gre.source_files),
            }
            plan += [(image, _nifti_writer(arrays[name][..., echo], gre.affine)),
                     (_sidecar_of(image), _json_writer(sidecar))]
    description = root / "dataset_description.json"
    if not description.exists():
        plan.append((description, _json_writer(_dataset_description())))
    return _write_all(plan, overwrite)


def _dataset_description() -> dict[str, Any]:
    return {
        "Name": "qsmliver export",
        "BIDSVersion": _BIDS_VERSION,
        "DatasetType": "raw",
        "GeneratedBy": [{"Name": "qsmliver", "Version": __version__,
                         "CodeURL": "https://pypi.org/project/qsmliver/"}],
    }

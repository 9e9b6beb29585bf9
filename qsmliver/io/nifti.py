"""Read multi-echo GRE from NIfTI files with dcm2niix/BIDS-style JSON sidecars.

:func:`read_nifti` reads explicitly named files; :func:`read_nifti_auto` finds the companions
of one file (or the files of one acquisition in a folder) by their names. Both return a
validated :class:`~qsmliver.data.MultiEchoGRE`.

Image components
----------------
Magnitude + phase, real + imaginary, one complex-valued NIfTI (complex64/complex128), or
magnitude alone (``has_phase=False``, zero phase). Each component is one 4-D file (echoes along
the 4th axis), one 3-D file (one echo) or a list of per-echo 3-D files.

Echo times, field strength, vendor
----------------------------------
From the arguments, else from the JSON sidecar beside each image (``X.json`` for
``X.nii.gz``): ``EchoTime`` (s; a list for a 4-D file, or ``EchoTimes``, or ``EchoTime1`` ..
``EchoTimeN``), ``MagneticFieldStrength`` (T), ``Manufacturer`` (the phase-scaling hint) and
qsmliver's own ``B0Direction_voxel``. Arguments override sidecars. Per-echo file lists are put
in order of their sidecar echo times, else of the echo number in their names (``_e3``,
``_echo-3``), else kept as given; echo times from the arguments apply to that order.

Phase
-----
All echoes of the phase are rescaled together by :func:`qsmliver.io.phase.phase_to_radians`
(radians, Siemens 12-bit, Philips milliradians, or min/max for arbitrary units), detected from
the value range with the sidecar Manufacturer as a hint unless ``phase_scale`` says. The phase
is kept with the sign it is stored with (DICOM-level vendor sign conventions are the DICOM
reader's business); ``metadata["PhaseScaling"]`` records the rescaling.

Pairing rules of :func:`read_nifti_auto`
----------------------------------------
A file name ``<base>[_e<n>|_echo-<n>][_<component>].nii[.gz]`` is split into the acquisition
``base``, the echo number and the component (``ph``/``phase``/``pha``, ``real``,
``imaginary``/``imag``, ``mag``/``magnitude``, ``complex``; none: magnitude; a whole name such
as ``Phase.nii`` is a component of base ""). When the sidecar gives ``SeriesNumber``, a leading
or trailing token equal to it is dropped from ``base``: dcm2niix puts the series number in the
name (``00024__gre_e1`` for magnitude, ``00026__gre_e1_ph`` for the phase of the same
acquisition on Siemens, which stores phase as another series). Files of one base form one
acquisition. Within it, files that cannot be echoes are skipped and listed in
``metadata["SkippedFiles"]``: images that are not 3-D/4-D, derived images (ImageType DERIVED),
multi-volume images among single-echo files (the dcm2niix mis-stack of
``philips_r2star_13echo/..._e2.nii.gz``), and single-echo files without EchoTime among files
that have it. Real + imaginary are preferred to magnitude + phase when both are complete
(as in the DICOM reader); ``components=`` chooses.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from qsmliver.data import MultiEchoGRE
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.io.dicom import normalise_vendor
from qsmliver.io.phase import PHASE_SCALINGS, phase_to_radians

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "load_sidecar",
    "read_json_object",
    "read_nifti",
    "read_nifti_auto",
    "sidecar_path",
]

#: Largest difference between the affines of echoes/components of one acquisition (mm).
AFFINE_TOLERANCE_MM = 1e-4
#: Echo times of two components of one echo must agree to this (s).
_TE_TOLERANCE_S = 1e-5
_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_COMPONENT_WORDS = {
    "mag": "magnitude", "magnitude": "magnitude",
    "ph": "phase", "pha": "phase", "phase": "phase",
    "real": "real", "imaginary": "imaginary", "imag": "imaginary",
    "complex": "complex",
}
_COMPONENT_RE = re.compile(
    r"(?:^|[_-])(?:part-)?(" + "|".join(sorted(_COMPONENT_WORDS, key=len, reverse=True))
    + r")$", re.IGNORECASE,
)
_ECHO_RE = re.compile(r"(?:^|[_-])(?:e|echo-?)(\d+)$", re.IGNORECASE)
_COMPONENT_CHOICES = ("auto", "magnitude-phase", "real-imaginary")


# -- sources: one image file with its (merged) sidecar -------------------------------------------
@dataclasses.dataclass
class _Source:
    """One image file and the sidecar keys that apply to it."""

    path: Path
    sidecar: dict[str, Any] = dataclasses.field(default_factory=dict)
    sidecar_paths: tuple[Path, ...] = ()
    notes: list[str] = dataclasses.field(default_factory=list)
    _image: Any = None

    @property
    def image(self) -> Any:
        if self._image is None:
            self._image = _open_image(self.path, self.notes)
        return self._image

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.image.shape)

    @property
    def n_volumes(self) -> int:
        return self.shape[3] if len(self.shape) == 4 else 1

    @property
    def is_complex(self) -> bool:
        return self.image.get_data_dtype().kind == "c"


def sidecar_path(image_path: str | os.PathLike) -> Path:
    """The JSON sidecar name of an image: ``X.json`` for ``X.nii.gz``/``X.nii``."""
    path = Path(image_path)
    return path.with_name(_strip_nifti_suffix(path.name) + ".json")


def load_sidecar(image_path: str | os.PathLike) -> tuple[dict[str, Any], Path | None]:
    """Read the JSON sidecar beside an image, if there is one.

    Parameters
    ----------
    image_path : path
        The NIfTI file.

    Returns
    -------
    sidecar : dict
        Its keys (empty when there is no sidecar).
    path : Path or None
        The sidecar file, or None.

    Raises
    ------
    QSMInputError
        If the sidecar exists but is not a JSON object.
    """
    path = sidecar_path(image_path)
    if not path.is_file():
        return {}, None
    return read_json_object(path), path


def read_json_object(path: Path) -> dict[str, Any]:
    """Parse a JSON file that must hold an object; errors name the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QSMInputError(f"cannot read the JSON sidecar: {exc}", path, "sidecar") from None
    if not isinstance(data, dict):
        raise QSMInputError("a JSON sidecar must hold an object", path, "sidecar")
    return data


def _strip_nifti_suffix(name: str) -> str:
    for suffix in (*_NIFTI_SUFFIXES, ".hdr", ".img"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_nifti_name(name: str) -> bool:
    return name.lower().endswith(_NIFTI_SUFFIXES)


def _open_image(path: Path, notes: list[str]) -> Any:
    """nibabel image of ``path`` (header only); every failure is a QSMInputError."""
    if not path.exists():
        raise QSMInputError("no such file", path, "file")
    if not path.is_file():
        raise QSMInputError("not a file", path, "file")
    if path.stat().st_size == 0:
        raise QSMInputError("file is empty (0 bytes)", path, "file")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image = nib.load(path)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise QSMInputError(f"cannot read the NIfTI file: {_reason(exc)}", path,
                            "file") from None
    notes.extend(f"{path.name}: {w.message}" for w in caught)
    if not isinstance(image, (nib.Nifti1Pair, nib.Nifti2Pair)):
        raise QSMInputError(f"not a NIfTI image ({type(image).__name__})", path, "file")
    return image


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _read_array(source: _Source) -> np.ndarray:
    """The voxel values of ``source`` as float32 or complex64; checked to be finite."""
    image = source.image
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if source.is_complex:
                data = np.asarray(image.dataobj).astype(np.complex64, copy=False)
            else:
                data = image.get_fdata(dtype=np.float32, caching="unchanged")
    except Exception as exc:  # truncated or corrupt data block
        raise QSMInputError(f"cannot read the image data: {_reason(exc)}", source.path,
                            "data") from None
    source.notes.extend(f"{source.path.name}: {w.message}" for w in caught)
    finite = np.isfinite(data)
    if not finite.all():
        n_bad = int(data.size - np.count_nonzero(finite))
        raise QSMInputError(f"{n_bad} voxels are NaN or infinite", source.path, "data")
    return data


def _affine_source(image: Any) -> str:
    header = image.header
    if int(header["sform_code"]) > 0:
        return "sform"
    if int(header["qform_code"]) > 0:
        return "qform"
    return "pixdim (no sform/qform code)"


# -- components: the files of one image component ------------------------------------------------
@dataclasses.dataclass
class _Component:
    """The files holding one image component (magnitude, phase, ...) of all echoes."""

    name: str
    sources: list[_Source]
    order_rule: str = "as given"

    @property
    def n_echoes(self) -> int:
        return len(self.sources) if len(self.sources) > 1 else self.sources[0].n_volumes

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return self.sources[0].shape[:3]

    @property
    def affine(self) -> np.ndarray:
        return np.asarray(self.sources[0].image.affine, dtype=np.float64)

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.sources]

    def echo_times(self) -> tuple[np.ndarray | None, list[str]]:
        """Echo times (s) from the sidecars and the keys that gave them, or (None, [])."""
        if len(self.sources) == 1:
            return _sidecar_echo_times(self.sources[0].sidecar, self.n_echoes)
        values, keys = [], set()
        for source in self.sources:
            te, used = _sidecar_echo_times(source.sidecar, 1)
            if te is None:
                return None, []
            values.append(te[0])
            keys.update(used)
        return np.asarray(values), sorted(keys)

    def read(self) -> np.ndarray:
        """(X, Y, Z, E) values of all echoes."""
        if len(self.sources) == 1:
            data = _read_array(self.sources[0])
            return data[..., None] if data.ndim == 3 else data
        return np.stack([_read_array(s).reshape(self.spatial_shape) for s in self.sources],
                        axis=3)


def _sidecar_echo_times(sidecar: dict, n_echoes: int) -> tuple[np.ndarray | None, list[str]]:
    """Echo times (s) of an image with ``n_echoes`` volumes from its sidecar keys."""
    for key in ("EchoTime", "EchoTimes"):
        value = sidecar.get(key)
        if value is None:
            continue
        te = _as_float_list(value)
        if te is not None and len(te) == n_echoes:
            return np.asarray(te), [key]
    numbered = [f"EchoTime{i}" for i in range(1, n_echoes + 1)]
    if n_echoes > 1 and all(k in sidecar for k in numbered):
        te = [_as_float_list(sidecar[k]) for k in numbered]
        if all(t is not None and len(t) == 1 for t in te):
            return np.asarray([t[0] for t in te]), numbered
    return None, []


def _as_float_list(value: Any) -> list[float] | None:
    items = value if isinstance(value, (list, tuple)) else [value]
    try:
        return [float(v) for v in items]
    except (TypeError, ValueError):
        return None


def _component(name: str, paths: Any, known: dict[Path, _Source] | None = None
               ) -> _Component:
    """Open the files of one component given as a path or list of paths.

    ``known`` maps paths to sources already made (with their sidecars, e.g. the BIDS reader's
    inherited ones); other paths get the sidecar beside them.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise QSMConfigError(f"an empty list of {name} files was given")
    sources = [known[p] if known and p in known else _source_with_sidecar(p) for p in paths]
    for source in sources:
        _check_dimensions(source, name, per_echo_list=len(sources) > 1)
    component = _Component(name, sources)
    if len(sources) > 1:
        _order_echoes(component)
    _check_same_grid(component.sources[0], component.sources[1:], name)
    return component


def _source_with_sidecar(path: Path) -> _Source:
    sidecar, where = load_sidecar(path)
    return _Source(path, sidecar, (where,) if where else ())


def _check_dimensions(source: _Source, name: str, per_echo_list: bool) -> None:
    shape = source.shape
    if len(shape) not in (3, 4):
        raise QSMInputError(
            f"{len(shape)}-D {name} image of shape {shape} cannot hold echoes: expected 3-D "
            "(one echo) or 4-D (echoes along the 4th axis)", source.path, "dim")
    if per_echo_list and source.n_volumes != 1:
        raise QSMInputError(
            f"{name} file list: this image has {source.n_volumes} volumes; a list must hold "
            "one 3-D image per echo (give a 4-D file on its own)", source.path, "dim")
    if min(shape) < 1:
        raise QSMInputError(f"empty image of shape {shape}", source.path, "dim")


def _order_echoes(component: _Component) -> None:
    """Sort per-echo files by sidecar TE, else by the echo number in their names."""
    te, _ = component.echo_times()
    if te is not None:
        order = np.argsort(te, kind="stable")
        component.order_rule = "sidecar EchoTime"
    else:
        numbers = [_echo_number(s.path, s.sidecar) for s in component.sources]
        if any(n is None for n in numbers):
            return
        order = np.argsort(numbers, kind="stable")
        component.order_rule = "echo number in the file names"
    component.sources = [component.sources[i] for i in order]


def _echo_number(path: Path, sidecar: dict) -> int | None:
    match = _ECHO_RE.search(_split_component(_strip_nifti_suffix(path.name))[0])
    if match:
        return int(match.group(1))
    value = sidecar.get("EchoNumber")
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def _check_same_grid(ref: _Source, others: list[_Source], what: str) -> None:
    """Shapes of ``others`` must equal that of ``ref``, and their affines must put the corners
    of the volume within :data:`AFFINE_TOLERANCE_MM` of where ``ref`` puts them."""
    corners = _corner_voxels(ref.shape[:3])
    ref_world = np.asarray(ref.image.affine, dtype=np.float64) @ corners
    for source in others:
        if source.shape[:3] != ref.shape[:3]:
            raise QSMInputError(
                f"{what}: matrix {source.shape[:3]} differs from {ref.shape[:3]} of "
                f"{ref.path.name}", [ref.path, source.path], "shape")
        world = np.asarray(source.image.affine, dtype=np.float64) @ corners
        diff = float(np.max(np.linalg.norm((world - ref_world)[:3], axis=0)))
        if diff > AFFINE_TOLERANCE_MM:
            raise QSMInputError(
                f"{what}: the affine puts voxels up to {diff:.3g} mm away from where that of "
                f"{ref.path.name} puts them (tolerance {AFFINE_TOLERANCE_MM:g} mm): not the "
                "same voxel grid", [ref.path, source.path], "affine")


def _corner_voxels(shape: tuple[int, ...]) -> np.ndarray:
    """(4, 8) homogeneous voxel coordinates of the corners of a volume."""
    grid = np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")
    return np.vstack([np.reshape(grid, (3, -1)), np.ones((1, 8))])


# -- public readers -----------------------------------------------------------------------------
def read_nifti(
    magnitude: Any = None,
    phase: Any = None,
    real: Any = None,
    imag: Any = None,
    complex_: Any = None,
    *,
    te_s: Sequence[float] | None = None,
    b0_t: float | None = None,
    b0_dir: Sequence[float] | None = None,
    phase_scale: str = "auto",
    vendor: str | None = None,
) -> MultiEchoGRE:
    """Read a multi-echo GRE acquisition from NIfTI files.

    Parameters
    ----------
    magnitude, phase, real, imag, complex_ : path or list of paths, optional
        Each a 4-D file (echoes along axis 3), a 3-D single-echo file, or a list of per-echo
        3-D files. Give magnitude + phase, real + imag, a complex-valued ``complex_`` file,
        or magnitude alone (then ``has_phase`` is False and the phase is zero).
    te_s : sequence of float, optional
        Echo times in seconds, strictly increasing; default: the sidecars' ``EchoTime``.
    b0_t : float, optional
        Field strength in tesla; default: the sidecars' ``MagneticFieldStrength``.
    b0_dir : (3,) sequence of float, optional
        B0 direction in the voxel frame; default: the sidecar ``B0Direction_voxel``, else
        derived from the affine.
    phase_scale : {"auto", "radians", "siemens", "milliradians", "minmax"}
        How the phase values are scaled (see :mod:`qsmliver.io.phase`).
    vendor : str, optional
        Manufacturer (phase-scaling hint); default: the sidecars' ``Manufacturer``.

    Returns
    -------
    MultiEchoGRE
        Complex64 echoes with the NIfTI affine (sform, else qform). ``metadata`` records the
        components, the phase scaling, the echo order and the sidecar keys used.

    Raises
    ------
    QSMInputError
        Missing, empty or corrupt files; images that cannot be echoes (2-D, 5-D); mismatched
        echo counts, shapes or affines; missing, non-increasing or duplicate echo times;
        missing field strength; NaN/inf values. The message names the file(s).
    QSMConfigError
        An unsupported combination of components or an unknown ``phase_scale``.

    Examples
    --------
    >>> gre = read_nifti(magnitude="gre.nii.gz", phase="gre_ph.nii.gz",
    ...                  te_s=[0.004, 0.008], b0_t=3.0)  # doctest: +SKIP
    """
    mode = _mode(magnitude, phase, real, imag, complex_)
    given = {"magnitude": magnitude, "phase": phase, "real": real, "imaginary": imag,
             "complex": complex_}
    components = [_component(name, given[name]) for name in _MODE_COMPONENTS[mode]]
    if mode == "magnitude" and all(s.is_complex for s in components[0].sources):
        components[0].name = "complex"  # a complex-valued file given as the only image
    return _assemble(components, te_s=te_s, b0_t=b0_t, b0_dir=b0_dir,
                     phase_scale=phase_scale, vendor=vendor, reader="nifti")


_MODE_COMPONENTS = {
    "magnitude-phase": ("magnitude", "phase"),
    "real-imaginary": ("real", "imaginary"),
    "complex": ("complex",),
    "magnitude": ("magnitude",),
}


def _mode(magnitude, phase, real, imag, complex_) -> str:
    present = {name for name, value in (("magnitude", magnitude), ("phase", phase),
                                        ("real", real), ("imag", imag),
                                        ("complex_", complex_)) if value is not None}
    modes = {
        frozenset({"magnitude", "phase"}): "magnitude-phase",
        frozenset({"real", "imag"}): "real-imaginary",
        frozenset({"complex_"}): "complex",
        frozenset({"magnitude"}): "magnitude",
    }
    mode = modes.get(frozenset(present))
    if mode is None:
        given = ", ".join(sorted(present)) or "nothing"
        raise QSMConfigError(
            f"read_nifti got {given}: give magnitude and phase, real and imag, a complex_ "
            "file, or magnitude alone")
    return mode


def read_nifti_auto(
    path: str | os.PathLike,
    *,
    te_s: Sequence[float] | None = None,
    b0_t: float | None = None,
    b0_dir: Sequence[float] | None = None,
    phase_scale: str = "auto",
    vendor: str | None = None,
    components: str = "auto",
) -> MultiEchoGRE:
    """Read one acquisition from a NIfTI file and its companions, or from a folder.

    Parameters
    ----------
    path : path
        A NIfTI file (its phase/real/imaginary companions and the other echoes are found
        beside it by name), or a folder holding the NIfTI files of one acquisition (e.g.
        dcm2niix output). See the module documentation for the pairing rules.
    te_s, b0_t, b0_dir, phase_scale, vendor
        As in :func:`read_nifti`.
    components : {"auto", "magnitude-phase", "real-imaginary"}
        Which components to use when both pairs are present; "auto" prefers real+imaginary.

    Returns
    -------
    MultiEchoGRE
        As :func:`read_nifti`; ``metadata["SkippedFiles"]`` lists the files of the
        acquisition that were not used, each with the reason.

    Raises
    ------
    QSMInputError
        No usable NIfTI files; a folder holding several acquisitions (they are listed); any
        error of :func:`read_nifti`.
    """
    if components not in _COMPONENT_CHOICES:
        raise QSMConfigError(f"components must be one of {', '.join(_COMPONENT_CHOICES)}, "
                             f"got {components!r}")
    path = Path(path)
    if not path.exists():
        raise QSMInputError("no such file or folder", path)
    folder = path if path.is_dir() else path.parent
    if path.is_file() and not _is_nifti_name(path.name):
        raise QSMInputError("not a NIfTI file (.nii or .nii.gz)", path, "file")
    groups = _scan_folder(folder)
    if path.is_file():
        chosen = [g for g in groups if any(e.source.path == path for e in g.entries)]
    else:
        chosen = [g for g in groups if g.usable_entries(te_s is not None)]
        if not chosen:
            raise QSMInputError("no NIfTI echo images found", folder)
        if len(chosen) > 1:
            listing = "; ".join(g.describe(te_s is not None) for g in chosen)
            raise QSMInputError(
                f"{len(chosen)} unrelated acquisitions found: {listing}. Pass one of their "
                "files to read_nifti_auto, or name the files with read_nifti(magnitude=..., "
                "phase=...)", folder)
    group = chosen[0]
    selection, skipped = group.select(te_s is not None, components, path)
    result = _assemble(selection, te_s=te_s, b0_t=b0_t, b0_dir=b0_dir,
                       phase_scale=phase_scale, vendor=vendor, reader="nifti (auto)")
    result.metadata["SkippedFiles"] = [f"{p}: {why}" for p, why in skipped]
    result.metadata["Acquisition"] = group.base
    return result


# -- folder scanning for read_nifti_auto ----------------------------------------------------------
@dataclasses.dataclass
class _Entry:
    """A NIfTI file in a scanned folder, with what its name says about it."""

    source: _Source
    base: str
    echo: int | None
    component: str
    sidecar_error: str | None = None


def _split_component(stem: str) -> tuple[str, str]:
    """(rest, component) of a file stem: ``gre_e1_ph`` -> (``gre_e1``, "phase")."""
    match = _COMPONENT_RE.search(stem)
    if match is None:
        return stem, "magnitude"
    return stem[: match.start()], _COMPONENT_WORDS[match.group(1).lower()]


def _parse_name(path: Path, sidecar: dict) -> tuple[str, int | None, str]:
    """(acquisition base, echo number, component) of a NIfTI file name."""
    rest, component = _split_component(_strip_nifti_suffix(path.name))
    echo = None
    match = _ECHO_RE.search(rest)
    if match:
        echo = int(match.group(1))
        rest = rest[: match.start()]
    series = sidecar.get("SeriesNumber")
    if isinstance(series, (int, float)) and not isinstance(series, bool):
        number = int(series)
        rest = re.sub(rf"^0*{number}_+|_+0*{number}$", "", rest, count=1)
    return rest.strip("_-"), echo, component


def _scan_folder(folder: Path) -> list[_Group]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and _is_nifti_name(p.name)
                   and not p.name.startswith("."))
    if not files:
        raise QSMInputError("no NIfTI files (.nii, .nii.gz) in the folder", folder)
    groups: dict[str, _Group] = {}
    for path in files:
        try:
            sidecar, where = load_sidecar(path)
            error = None
        except QSMInputError as exc:
            sidecar, where, error = {}, None, str(exc)
        base, echo, component = _parse_name(path, sidecar)
        entry = _Entry(_Source(path, sidecar, (where,) if where else ()), base, echo,
                       component, error)
        groups.setdefault(base, _Group(base, folder)).entries.append(entry)
    return list(groups.values())


@dataclasses.dataclass
class _Group:
    """The files of one acquisition (one name base) in a folder."""

    base: str
    folder: Path
    entries: list[_Entry] = dataclasses.field(default_factory=list)

    def skip_reasons(self, te_given: bool) -> dict[Path, str]:
        """Files of the group that cannot be echoes, with the reason."""
        reasons: dict[Path, str] = {}
        for entry in self.entries:
            if entry.sidecar_error:
                raise QSMInputError(entry.sidecar_error, entry.source.path, "sidecar")
            shape = entry.source.shape
            if len(shape) not in (3, 4):
                reasons[entry.source.path] = f"{len(shape)}-D image cannot hold echoes"
            elif "DERIVED" in _image_type(entry.source.sidecar):
                reasons[entry.source.path] = "derived image (ImageType DERIVED), not an echo"
        alive = [e for e in self.entries if e.source.path not in reasons]
        single = [e for e in alive if e.source.n_volumes == 1]
        per_echo = len(single) > len({e.component for e in single}) or any(
            e.echo is not None for e in single)
        if per_echo:
            has_te = any(_sidecar_echo_times(e.source.sidecar, 1)[0] is not None
                         for e in single)
            for entry in alive:
                te, _ = _sidecar_echo_times(entry.source.sidecar, entry.source.n_volumes)
                if entry.source.n_volumes > 1:
                    why = f"{entry.source.n_volumes}-volume image among single-echo files"
                    if te is None:
                        why += " and no EchoTime in its sidecar (a dcm2niix mis-stack?)"
                    reasons[entry.source.path] = why
                elif has_te and not te_given and te is None:
                    reasons[entry.source.path] = ("no EchoTime in its sidecar while the other "
                                                  "echoes have one")
        return reasons

    def usable_entries(self, te_given: bool) -> list[_Entry]:
        reasons = self.skip_reasons(te_given)
        return [e for e in self.entries if e.source.path not in reasons]

    def describe(self, te_given: bool) -> str:
        entries = self.usable_entries(te_given)
        parts = sorted({e.component for e in entries})
        return f"{self.base or '(unnamed)'!r} ({len(entries)} files: {', '.join(parts)})"

    def select(self, te_given: bool, components: str, requested: Path
               ) -> tuple[list[_Component], list[tuple[Path, str]]]:
        """The components to read and the skipped files with reasons."""
        reasons = self.skip_reasons(te_given)
        by_component: dict[str, list[_Entry]] = {}
        for entry in self.entries:
            if entry.source.path not in reasons:
                by_component.setdefault(entry.component, []).append(entry)
        _one_series_per_component(by_component, reasons)
        if requested in reasons:
            raise QSMInputError(f"this file cannot be an echo: {reasons[requested]}",
                                requested, "file")
        mode = self._choose_mode(by_component, components)
        skipped = list(reasons.items())
        for name, entries in by_component.items():
            if name not in _MODE_COMPONENTS[mode]:
                skipped.extend((e.source.path, f"{name} not used ({mode} read instead)")
                               for e in entries)
        selection = []
        for name in _MODE_COMPONENTS[mode]:
            entries = sorted(by_component[name], key=lambda e: (e.echo or 0, e.source.path))
            sources = {e.source.path: e.source for e in entries}
            selection.append(_component(name, list(sources), sources))
        return selection, sorted(skipped)

    def _choose_mode(self, by_component: dict[str, list[_Entry]], components: str) -> str:
        have = set(by_component)
        if "complex" in have or (have == {"magnitude"} and len(by_component["magnitude"]) == 1
                                 and by_component["magnitude"][0].source.is_complex):
            if "complex" not in have:
                by_component["complex"] = by_component.pop("magnitude")
            return "complex"
        complete = [m for m in ("real-imaginary", "magnitude-phase")
                    if set(_MODE_COMPONENTS[m]) <= have]
        if components != "auto":
            if components not in complete:
                raise QSMInputError(f"{components} requested but the acquisition holds "
                                    f"{', '.join(sorted(have))}", self.folder, "components")
            return components
        if complete:
            return complete[0]
        if "magnitude" in have:
            return "magnitude"
        files = [e.source.path for entries in by_component.values() for e in entries]
        raise QSMInputError(
            f"found {', '.join(sorted(have))} images but no magnitude to go with them",
            files or self.folder, "components")


def _image_type(sidecar: dict) -> list[str]:
    """The upper-case ImageType values of a sidecar (a list, or a DICOM-style string)."""
    value = sidecar.get("ImageType", [])
    if isinstance(value, str):
        value = re.split(r"[\\ ]+", value)
    return [str(v).upper() for v in value] if isinstance(value, (list, tuple)) else []


def _one_series_per_component(by_component: dict[str, list[_Entry]],
                              reasons: dict[Path, str]) -> None:
    """Drop normalised copies (ImageType NORM) of a series; refuse other series mixes."""
    for name, entries in list(by_component.items()):
        if len({e.source.sidecar.get("SeriesNumber") for e in entries}) < 2:
            continue
        kept = []
        for entry in entries:
            if "NORM" in _image_type(entry.source.sidecar):
                reasons[entry.source.path] = ("normalised copy (ImageType NORM) of another "
                                              "series")
            else:
                kept.append(entry)
        by_component[name] = kept
        series = {e.source.sidecar.get("SeriesNumber") for e in kept}
        if len(series) > 1:
            listing = ", ".join(str(s) for s in sorted(series, key=str))
            raise QSMInputError(
                f"{name} images from several series ({listing}) share one acquisition name; "
                "name the files with read_nifti(magnitude=[...], phase=[...])",
                [e.source.path for e in kept], "SeriesNumber")


# -- assembly: components -> MultiEchoGRE ---------------------------------------------------------
def _assemble(
    components: list[_Component],
    *,
    te_s: Sequence[float] | None,
    b0_t: float | None,
    b0_dir: Sequence[float] | None,
    phase_scale: str,
    vendor: str | None,
    reader: str,
    metadata: dict[str, Any] | None = None,
) -> MultiEchoGRE:
    """Check the components against each other, resolve the metadata and read the data."""
    if phase_scale not in PHASE_SCALINGS:
        raise QSMConfigError(
            f"phase_scale must be one of {', '.join(PHASE_SCALINGS)}, got {phase_scale!r}")
    _check_value_types(components)
    first = components[0]
    for other in components[1:]:
        if other.n_echoes != first.n_echoes:
            raise QSMInputError(
                f"{first.name} has {first.n_echoes} echoes but {other.name} has "
                f"{other.n_echoes}", [first.paths[0], other.paths[0]], "echoes")
        _check_same_grid(first.sources[0], other.sources, f"{other.name} vs {first.name}")
    sources = [s for c in components for s in c.sources]
    paths = [s.path for s in sources]
    used_keys: set[str] = set()
    te, te_origin = _resolve_te(components, te_s, used_keys)
    b0 = _resolve_scalar(sources, b0_t, "MagneticFieldStrength", used_keys)
    if b0 is None:
        raise QSMInputError(
            "field strength is missing: no MagneticFieldStrength in the JSON sidecars; give "
            "b0_t= in tesla (CLI: --b0)", paths, "MagneticFieldStrength")
    if vendor is None:
        vendor = _resolve_scalar(sources, None, "Manufacturer", used_keys, numeric=False)
    vendor = normalise_vendor(vendor)
    if b0_dir is None:
        b0_dir = _resolve_vector(sources, "B0Direction_voxel", used_keys)
    encoding = {key: value for key in ("PhaseEncodingDirection", "PhaseEncodingAxis",
                                                 "SliceEncodingDirection")
                if (value := _resolve_scalar(sources, None, key, used_keys, numeric=False))}
    signal, phase_info = _combine(components, phase_scale, vendor)
    notes = [n for s in sources for n in s.notes] + phase_info.pop("Notes", [])
    info = {
        "Reader": reader,
        "Components": "+".join(c.name for c in components),
        "EchoTimeSource": te_origin,
        "EchoOrder": first.order_rule if len(first.sources) > 1 else "volume order",
        "AffineSource": _affine_source(first.sources[0].image),
        "SidecarKeysUsed": sorted(used_keys),
        "SidecarFiles": sorted({str(p) for s in sources for p in s.sidecar_paths}),
        **phase_info,
        **encoding,
        **(metadata or {}),
    }
    if notes:
        info["Notes"] = notes
    return MultiEchoGRE(
        signal, te_s=te, b0_t=b0, affine=first.affine, b0_dir=b0_dir, vendor=vendor,
        source_files=[str(p) for p in paths], metadata=info,
        has_phase=components[0].name != "magnitude" or len(components) > 1,
    )


def _check_value_types(components: list[_Component]) -> None:
    """Complex-valued files only as ``complex_``, and a ``complex_`` file must be complex."""
    for component in components:
        for source in component.sources:
            if source.is_complex != (component.name == "complex"):
                kind = "complex-valued" if source.is_complex else "real-valued"
                raise QSMInputError(
                    f"a {kind} image was given as {component.name}"
                    + (" (give it as complex_)" if source.is_complex else ""),
                    source.path, "datatype")


def _resolve_te(components: list[_Component], te_s, used_keys: set[str]
                ) -> tuple[np.ndarray, str]:
    """Echo times (s): the argument, else the sidecars (which must agree between components)."""
    first = components[0]
    paths = [p for c in components for p in c.paths]
    found = [(c, *c.echo_times()) for c in components]
    with_te = [(c, te, keys) for c, te, keys in found if te is not None]
    for (c1, te1, _), (c2, te2, _) in itertools.pairwise(with_te):
        if np.max(np.abs(te1 - te2)) > _TE_TOLERANCE_S:
            raise QSMInputError(
                f"echo times of {c1.name} {_ms(te1)} ms and {c2.name} {_ms(te2)} ms disagree",
                [c1.paths[0], c2.paths[0]], "EchoTime")
    if te_s is not None:
        te = np.atleast_1d(np.asarray(te_s, dtype=np.float64)).ravel()
        origin, where = "argument te_s", paths
    elif with_te:
        component, te, keys = with_te[0]
        used_keys.update(keys)
        origin = "sidecar " + "/".join(keys)
        where = [p for s in component.sources for p in s.sidecar_paths] or paths
    else:
        raise QSMInputError(
            "echo times are missing: no EchoTime in the JSON sidecars; give te_s= in seconds "
            "(CLI: --te in ms)", paths, "EchoTime")
    if te.size != first.n_echoes:
        raise QSMInputError(f"{te.size} echo times ({origin}) for {first.n_echoes} echoes",
                            where, "EchoTime")
    if not np.all(np.isfinite(te)) or np.any(te <= 0):
        raise QSMInputError(f"echo times must be positive and finite, got {te.tolist()} s "
                            f"({origin})", where, "EchoTime")
    steps = np.diff(te)
    if np.any(steps == 0) or np.any(np.abs(steps) < _TE_TOLERANCE_S / 10):
        raise QSMInputError(f"duplicate echo times {_ms(te)} ms ({origin})", where,
                            "EchoTime")
    if np.any(steps < 0):
        raise QSMInputError(f"echo times {_ms(te)} ms ({origin}) are not increasing", where,
                            "EchoTime")
    return te, origin


def _ms(te: np.ndarray) -> list[float]:
    return [round(float(t) * 1e3, 4) for t in te]


def _resolve_scalar(sources: list[_Source], given: Any, key: str, used_keys: set[str],
                    numeric: bool = True) -> Any:
    """``given``, else the one value of ``key`` in the sidecars (they must agree)."""
    if given is not None:
        return given
    values = {}
    for source in sources:
        value = source.sidecar.get(key)
        if value is None:
            continue
        if numeric:
            number = _as_float_list(value)
            if number is None or len(number) != 1 or not math.isfinite(number[0]):
                raise QSMInputError(f"{key} {value!r} is not a number",
                                    list(source.sidecar_paths) or source.path, key)
            value = number[0]
        values.setdefault(value, source)
    if not values:
        return None
    if len(values) > 1:
        shown = ", ".join(f"{v!r} ({s.path.name})" for v, s in values.items())
        raise QSMInputError(f"the sidecars disagree: {shown}",
                            [s.path for s in values.values()], key)
    used_keys.add(key)
    return next(iter(values))


def _resolve_vector(sources: list[_Source], key: str, used_keys: set[str]) -> Any:
    for source in sources:
        value = source.sidecar.get(key)
        if value is not None:
            used_keys.add(key)
            return value
    return None


def _combine(components: list[_Component], phase_scale: str, vendor: str | None
             ) -> tuple[np.ndarray, dict[str, Any]]:
    """Complex64 (X, Y, Z, E) echoes from the components, and the phase-scaling record."""
    names = tuple(c.name for c in components)
    if names == ("complex",):
        return components[0].read().astype(np.complex64, copy=False), {}
    if names == ("real", "imaginary"):
        real, imag = (c.read() for c in components)
        return _complex(real, imag), {}
    magnitude = components[0].read()
    if names == ("magnitude",):
        return magnitude.astype(np.complex64), {"Notes": ["magnitude only: phase set to 0"]}
    stored = components[1].read()
    radians, scaling = phase_to_radians(stored, phase_scale, vendor, components[1].paths[0])
    info = {"PhaseScaling": scaling,
            "PhaseStoredRange": [float(stored.min()), float(stored.max())]}
    signal = np.empty(magnitude.shape, np.complex64)
    signal.real = np.cos(radians)
    signal.imag = np.sin(radians)
    signal *= magnitude
    return signal, info


def _complex(real: np.ndarray, imag: np.ndarray) -> np.ndarray:
    signal = np.empty(real.shape, np.complex64)
    signal.real = real
    signal.imag = imag
    return signal

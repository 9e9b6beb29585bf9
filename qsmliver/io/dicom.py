"""Read multi-echo gradient-echo DICOM (Siemens, GE, Philips; classic and enhanced).

:func:`read_dicom` turns a folder, a file or a list of files into a validated
:class:`~qsmliver.data.MultiEchoGRE`; :func:`scan_series` lists what a folder holds (used by
``qsmliver info --list-series``). Gzipped files (``.dcm.gz``) are read transparently.

What is read
------------
- Classic MR Image Storage (one slice per file) and Enhanced / Legacy Converted Enhanced MR
  Image Storage (multi-frame: the shared and per-frame functional groups give each frame its
  plane position, orientation, pixel spacing, EffectiveEchoTime, ComplexImageComponent and
  rescaling). Siemens mosaic images are not unpacked.
- The image component of each frame comes from, in order: the enhanced
  ComplexImageComponent; GE's private (0043,102F) of creator ``GEMS_PARM_01`` (0 magnitude,
  1 phase, 2 real, 3 imaginary; GE writes ``ORIGINAL\\PRIMARY\\OTHER`` as ImageType for all
  of them); ImageType values (``M``, ``P``, ``R``, ``I``, ``MAGNITUDE``, ``PHASE``,
  ``PHASE MAP``, ``REAL``, ``IMAGINARY``, Philips ``M_FFE``-style); Philips' private
  (2005,1011); magnitude otherwise (noted in the metadata).
- Real and imaginary images combine into complex data (preferred when present), magnitude and
  phase likewise; magnitude alone gives ``has_phase=False`` (zero phase); phase alone gives
  unit magnitude (e.g. a Siemens field-mapping phase-difference series). Both cases are
  recorded in ``metadata["Notes"]``, never as Python warnings.

Phase scaling (after RescaleSlope/RescaleIntercept)
---------------------------------------------------
=========  ===============================================================================
Siemens    12-bit: ``-4096..4095`` (raw ``0..4095`` with slope 2, intercept -4096):
           ``phase = value * pi / 4096``; raw values without rescale tags are mapped first.
Philips    milliradians (slope ``6284 / 4095``, intercept -3142): ``phase = value / 1000``.
GE         milliradians (int16 within +-3142): ``phase = value / 1000``.
other      detected from the value range by :func:`qsmliver.io.phase.phase_to_radians`.
=========  ===============================================================================

A vendor rule whose value range does not fit falls back to detection; the scaling used is
recorded in ``metadata["PhaseScaling"]``.

Phase sign (:data:`PHASE_SIGN`)
-------------------------------
The project convention is "positive chi = paramagnetic": the phase of ``exp(+i 2 pi f TE)``
as Siemens and Philips store it. GE stores the opposite sign, so GE data are conjugated
(the practice of MEDI and SEPIA). Other manufacturers are taken as Siemens-like, which the
metadata says. ``ge_slice_chop=True`` also negates every other slice (odd slice index in the
sorted order) of GE data acquired with z-chopping (alternating RF/receiver phase of pi from
slice to slice); a global sign is immaterial, so only alternate slices matter.

Philips magnitude scaling
-------------------------
Philips images carry a RescaleSlope/Intercept ("displayed value", DV) and a private MR scale
slope SS (2005,100E) giving the "floating-point value" FP = DV / (RescaleSlope * SS). When
slope, intercept and SS are the same for every magnitude/real/imaginary image, DV is used (FP
would only multiply everything by one constant). When they differ between images (per-image
scaling), FP is used for all of them so that echoes and slices compare quantitatively.
``metadata["PhilipsScaling"]`` says which. Phase images always use DV (milliradians).

Geometry
--------
``signal[i, j, k] = pixel[row=j, column=i]`` of the k-th slice sorted along the slice normal
``n = row_cosine x column_cosine``. The LPS affine has columns ``row_cosine *
PixelSpacing[1]``, ``column_cosine * PixelSpacing[0]``, the mean step between consecutive
ImagePositionPatient values (``n`` times the slice spacing for untilted slices; SliceThickness
is not used; a tilt shears the affine and is noted) and the first slice's position; it is
turned to RAS+ with :data:`qsmliver.geometry.LPS_TO_RAS`. The B0 direction in the voxel frame
is :func:`qsmliver.geometry.world_b0_to_voxel` of it. Slice spacing must be regular: missing,
duplicated and irregular slices are refused, naming the files.

Series choice
-------------
Series of the same acquisition (same study, frame of reference, matrix, orientation, slice
positions and echo times) with different image components are merged, in series-number
order: Siemens stores magnitude and phase as two consecutive series. Of the resulting
acquisitions, complex multi-echo ones are preferred, then complex single-echo, then
magnitude-only (or phase-only) multi-echo, then single-echo ones. When more than one
acquisition of the best kind is found, :class:`~qsmliver.errors.QSMInputError` lists them and
asks for ``series=``: an int or a SeriesInstanceUID selects the acquisition that series
belongs to (with its automatically paired partner), a list selects exactly those series.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import io
import math
import os
import struct
import sys
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from qsmliver.data import MultiEchoGRE
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.geometry import LPS_TO_RAS, world_b0_to_voxel
from qsmliver.io.phase import phase_to_radians, wrap_to_pi

__all__ = [
    "PHASE_SIGN",
    "SeriesSummary",
    "normalise_vendor",
    "read_dicom",
    "scan_series",
]

#: Sign of each vendor's stored phase relative to the project convention (+1: kept,
#: -1: the data are conjugated on reading). Unknown vendors are taken as +1.
PHASE_SIGN: dict[str, int] = {"Siemens": +1, "Philips": +1, "GE": -1}

RAW_DATA_STORAGE = "1.2.840.10008.5.1.4.1.1.66"
_COMPONENT_ORDER = ("magnitude", "phase", "real", "imaginary")
_GE_CODES = {0: "magnitude", 1: "phase", 2: "real", 3: "imaginary"}
_TOKENS = {
    "M": "magnitude", "MAGNITUDE": "magnitude", "MAG": "magnitude",
    "P": "phase", "PHASE": "phase", "PHASE MAP": "phase", "PHA": "phase",
    "R": "real", "REAL": "real",
    "I": "imaginary", "IMAGINARY": "imaginary", "IMAG": "imaginary",
}
_DICOM_SUFFIXES = (".dcm", ".dcm.gz", ".ima", ".dicom", ".dic")
_PROGRESS_MIN_FILES = 50
_TE_DECIMALS = 4  # echo times are compared in ms to 1e-4 ms
_ORIENTATION_TOL = 1e-4
_SPACING_RTOL = 1e-2
_MAX_WARNING_NOTES = 3


# -- public types -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SeriesSummary:
    """What one DICOM series holds (one line of ``qsmliver info --list-series``).

    Attributes
    ----------
    series_number : int or None
        SeriesNumber.
    series_uid : str
        SeriesInstanceUID.
    description : str
        SeriesDescription (ProtocolName when empty).
    modality : str
        Modality, e.g. ``"MR"``.
    sop_class : str
        SOP class name, e.g. ``"MR Image Storage"``, ``"Raw Data Storage"``.
    manufacturer : str or None
        Normalised vendor (``"Siemens"``, ``"GE"``, ``"Philips"`` or the raw string).
    n_files : int
        Number of files.
    n_frames : int
        Number of 2-D images (frames) in those files.
    echo_times_s : tuple of float
        Distinct echo times in seconds, increasing.
    components : tuple of str
        Image components found ("magnitude", "phase", "real", "imaginary").
    is_multi_echo_gre : bool
        True for image data with at least two echo times, one orientation and one matrix
        size: a usable multi-echo GRE (or half of one, e.g. a Siemens magnitude series).
    note : str
        Why the series is not usable, when it is not.
    files : tuple of str
        The files (not shown in the repr).
    """

    series_number: int | None
    series_uid: str
    description: str
    modality: str
    sop_class: str
    manufacturer: str | None
    n_files: int
    n_frames: int
    echo_times_s: tuple[float, ...]
    components: tuple[str, ...]
    is_multi_echo_gre: bool
    note: str = ""
    files: tuple[str, ...] = dataclasses.field(default=(), repr=False)

    def __str__(self) -> str:
        number = "?" if self.series_number is None else str(self.series_number)
        te = ", ".join(f"{t * 1e3:.3f}" for t in self.echo_times_s) or "-"
        comps = "+".join(self.components) or "-"
        usable = "multi-echo GRE" if self.is_multi_echo_gre else (self.note or "not usable")
        return (f"series {number:>5}  {self.description!r}  {self.manufacturer or '?'} "
                f"{self.modality or '?'} ({self.sop_class})  {self.n_files} files / "
                f"{self.n_frames} images  components {comps}  TE [{te}] ms  -> {usable}")


def normalise_vendor(manufacturer: str | None) -> str | None:
    """Map a DICOM Manufacturer string to "Siemens", "GE", "Philips" or itself.

    Examples
    --------
    >>> normalise_vendor("GE MEDICAL SYSTEMS"), normalise_vendor("Siemens Healthineers")
    ('GE', 'Siemens')
    """
    raw = str(manufacturer or "").strip()
    low = raw.lower()
    if "siemens" in low:
        return "Siemens"
    if "philips" in low:
        return "Philips"
    if low == "ge" or low.startswith(("ge ", "ge_", "gems")) or "general electric" in low:
        return "GE"
    return raw or None


# -- internal records -------------------------------------------------------------------------
@dataclasses.dataclass
class _Frame:
    path: Path
    index: int | None  # frame of a multi-frame object (0-based); None: single-frame file
    component: str
    component_assumed: bool
    te_ms: float | None
    echo_number: int | None
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    rows: int
    cols: int
    slope: float
    intercept: float
    has_rescale: bool
    philips_scale: float | None

    @property
    def label(self) -> str:
        if self.index is None:
            return os.fspath(self.path)
        return f"{self.path} (frame {self.index + 1})"


@dataclasses.dataclass
class _Header:
    path: Path
    sop_class: str
    is_image: bool
    series_uid: str
    series_number: int | None
    description: str
    protocol: str
    sequence_name: str
    modality: str
    manufacturer: str | None
    b0_t: float | None
    study_uid: str
    frame_of_reference_uid: str
    echo_train_length: int | None
    n_frames: int
    rows: int
    cols: int
    enhanced: bool
    frames: list[_Frame]
    notes: list[str]
    phase_encoding: str = ""  # InPlanePhaseEncodingDirection: "ROW", "COL" or ""

    @property
    def vendor(self) -> str | None:
        return normalise_vendor(self.manufacturer)


@dataclasses.dataclass
class _Series:
    key: str
    headers: list[_Header]

    @property
    def first(self) -> _Header:
        return self.headers[0]

    @property
    def number(self) -> int | None:
        return self.first.series_number

    @property
    def uid(self) -> str:
        return self.first.series_uid

    @property
    def description(self) -> str:
        return self.first.description or self.first.protocol

    @property
    def frames(self) -> list[_Frame]:
        return [f for h in self.headers for f in h.frames]

    @functools.cached_property
    def components(self) -> tuple[str, ...]:
        found = {f.component for f in self.frames}
        return tuple(c for c in _COMPONENT_ORDER if c in found)

    @functools.cached_property
    def te_ms(self) -> tuple[float, ...]:
        return tuple(sorted({round(f.te_ms, _TE_DECIMALS) for f in self.frames
                             if f.te_ms is not None}))

    @property
    def is_image(self) -> bool:
        return self.first.is_image

    @functools.cached_property
    def geometry(self) -> tuple[tuple[int, int], np.ndarray | None, float]:
        """Majority (Rows, Columns), majority orientation, and the share of that orientation.

        Majorities make one damaged file show up as an error on reading (naming the file)
        rather than as a different acquisition.
        """
        frames = self.frames
        shape = Counter((f.rows, f.cols) for f in frames).most_common(1)[0][0]
        oriented = [f for f in frames if f.orientation is not None]
        if not oriented:
            return shape, None, 0.0
        counts = Counter(tuple(np.round(f.orientation, 4)) for f in oriented)
        key, count = counts.most_common(1)[0]
        return shape, np.asarray(key, dtype=np.float64), count / len(frames)

    @functools.cached_property
    def excluded(self) -> str:
        """Why this series cannot be (part of) a multi-echo GRE at all; empty if it can."""
        first = self.first
        if not first.is_image:
            return f"{_sop_name(first.sop_class)} object with no pixel data"
        if first.modality and first.modality.upper() != "MR":
            return f"modality {first.modality}, not MR"
        if not self.te_ms:
            return "EchoTime missing"
        _, orientation, share = self.geometry
        if orientation is None or not any(f.position is not None for f in self.frames):
            return "ImagePositionPatient/ImageOrientationPatient missing"
        if share < 0.5:
            return "several slice orientations (localizer?)"
        return ""

    @functools.cached_property
    def problem(self) -> str:
        """What is wrong with this series (for the listing); empty if nothing."""
        if self.excluded:
            return self.excluded
        frames = self.frames
        missing_te = sum(f.te_ms is None for f in frames)
        if missing_te:
            return f"EchoTime missing in {missing_te} image{'s' if missing_te > 1 else ''}"
        if any(f.position is None or f.orientation is None for f in frames):
            return "ImagePositionPatient/ImageOrientationPatient missing in some images"
        if len({(f.rows, f.cols) for f in frames}) > 1:
            return "images of different sizes"
        if self.geometry[2] < 1.0:
            return "several slice orientations"
        return ""

    @functools.cached_property
    def slice_positions(self) -> np.ndarray:
        _, orientation, _ = self.geometry
        normal = _normal(orientation)
        depth = [float(f.position @ normal) for f in self.frames
                 if f.position is not None and f.orientation is not None
                 and np.max(np.abs(f.orientation - orientation)) <= _ORIENTATION_TOL]
        return np.unique(np.round(depth, 2))

    def describe(self) -> str:
        number = "?" if self.number is None else str(self.number)
        return f"{number} {self.description!r}"


# -- reading files ----------------------------------------------------------------------------
def _collect_files(paths) -> tuple[Any, list[tuple[Path, bool]]]:
    """Expand folders (recursively, skipping hidden names) into files; flag explicit files."""
    if isinstance(paths, (str, os.PathLike)):
        items = [Path(paths)]
    else:
        try:
            items = [Path(p) for p in paths]
        except TypeError:
            raise QSMInputError(
                f"expected a folder, a file or a list of files, got {type(paths).__name__}",
                None, "paths",
            ) from None
    if not items:
        raise QSMInputError("no DICOM files given (empty list)", None, "paths")
    files: list[tuple[Path, bool]] = []
    for item in items:
        if not item.exists():
            raise QSMInputError("no such file or folder", item)
        if item.is_dir():
            found = sorted(
                p for p in item.rglob("*")
                if p.is_file() and not any(part.startswith(".")
                                           for part in p.relative_to(item).parts)
            )
            files.extend((p, False) for p in found)
        else:
            files.append((item, True))
    label = items[0] if len(items) == 1 else [os.fspath(p) for p in items]
    if not files:
        raise QSMInputError("the folder holds no files", label)
    return label, files


def _looks_like_dicom(path: Path, head: bytes) -> bool:
    name = path.name.lower()
    return name.endswith(_DICOM_SUFFIXES) or head[128:132] == b"DICM"


def _open_bytes(path: Path) -> tuple[bytes | None, bytes]:
    """(decompressed content or None for a plain file, first 132 bytes)."""
    with open(path, "rb") as handle:
        head = handle.read(132)
        if head[:2] != b"\x1f\x8b":
            return None, head
        handle.seek(0)
        try:
            with gzip.GzipFile(fileobj=handle) as unzipped:
                content = unzipped.read()
        except (OSError, EOFError, zlib.error) as exc:
            raise QSMInputError(f"gzipped file is corrupt or truncated ({exc})", path,
                                "file") from None
    return content, content[:132]


def _dcmread(path: Path, *, stop_before_pixels: bool, explicit: bool,
             notes: list[str] | None = None):
    """Read one file with pydicom; None when it is not DICOM and may be skipped."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise QSMInputError(f"cannot read the file ({exc.strerror})", path, "file") from None
    try:
        content, head = _open_bytes(path)
    except OSError as exc:
        raise QSMInputError(f"cannot read the file ({exc.strerror})", path, "file") from None
    dicom_like = explicit or _looks_like_dicom(path, head)
    if size == 0:
        if dicom_like:
            raise QSMInputError("the file is empty (0 bytes)", path, "file")
        return None
    source = io.BytesIO(content) if content is not None else path
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ds = pydicom.dcmread(source, stop_before_pixels=stop_before_pixels)
            except InvalidDicomError:
                if isinstance(source, io.BytesIO):
                    source.seek(0)
                ds = pydicom.dcmread(source, stop_before_pixels=stop_before_pixels,
                                     force=True)
                if "SOPClassUID" not in ds:
                    raise InvalidDicomError("no DICOM preamble and no SOP Class UID") from None
    except Exception as exc:  # pydicom raises many kinds on bad input; never leak them
        if not dicom_like:
            return None
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise QSMInputError(f"not a readable DICOM file ({reason})", path, "file") from None
    if notes is not None and caught:
        if sum(n.startswith("pydicom warning") for n in notes) < _MAX_WARNING_NOTES:
            message = str(caught[0].message).splitlines()[0] if str(caught[0].message) else ""
            notes.append(f"pydicom warning reading {path.name}: {message}")
    return ds


def _private_value(ds, group: int, creator: str, element: int):
    try:
        return ds.private_block(group, creator)[element].value
    except (KeyError, ValueError, TypeError, AttributeError):
        return None


def _as_float(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        if len(raw) == 4:
            return float(struct.unpack("<f", raw)[0])
        if len(raw) == 8:
            return float(struct.unpack("<d", raw)[0])
        try:
            value = raw.decode("ascii").strip("\0 ")
        except UnicodeDecodeError:
            return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _as_int(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        if len(raw) == 2:
            return int(struct.unpack("<h", raw)[0])
        if len(raw) == 4:
            return int(struct.unpack("<i", raw)[0])
        try:
            value = raw.decode("ascii").strip("\0 ")
        except UnicodeDecodeError:
            return None
    out = _as_float(value)
    return None if out is None else round(out)


def _as_vector(value, n: int) -> np.ndarray | None:
    try:
        vec = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return vec if vec.shape == (n,) and np.all(np.isfinite(vec)) else None


def _text(ds, keyword: str) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _component_from_tokens(values) -> str | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = values.split("\\")
    tokens = [str(v).strip().upper() for v in values]
    for token in tokens[2:] if len(tokens) > 2 else tokens:
        if token in _TOKENS:
            return _TOKENS[token]
        head, _, tail = token.partition("_")
        if tail and head in ("M", "P", "R", "I"):
            return _TOKENS[head]
    return None


def _component_enhanced_value(value) -> str | None:
    token = str(value or "").strip().upper()
    return _TOKENS.get(token)


def _functional_item(per_frame, shared, keyword: str):
    for group in (per_frame, shared):
        if group is not None and keyword in group:
            seq = group[keyword].value
            if seq:
                return seq[0]
    return None


def _philips_frame_scale(per_frame) -> float | None:
    if per_frame is None:
        return None
    inner = _private_value(per_frame, 0x2005, "Philips MR Imaging DD 005", 0x0F)
    if inner is None and (0x2005, 0x140F) in per_frame:
        inner = per_frame[0x2005, 0x140F].value
    if not inner:
        return None
    try:
        item = inner[0]
    except (TypeError, IndexError):
        return None
    return _philips_scale(item)


def _philips_scale(ds) -> float | None:
    value = _private_value(ds, 0x2005, "Philips MR Imaging DD 001", 0x0E)
    scale = _as_float(value)
    return scale if scale and scale > 0 else None


def _parse_header(ds, path: Path, notes: list[str]) -> _Header:
    sop_class = str(ds.get("SOPClassUID", "") or "")
    rows = int(ds.get("Rows", 0) or 0)
    cols = int(ds.get("Columns", 0) or 0)
    n_frames = _as_int(ds.get("NumberOfFrames", 1)) or 1
    is_image = bool(rows and cols) and sop_class != RAW_DATA_STORAGE
    enhanced = "PerFrameFunctionalGroupsSequence" in ds
    manufacturer = _text(ds, "Manufacturer") or None
    shared = None
    if "SharedFunctionalGroupsSequence" in ds and ds.SharedFunctionalGroupsSequence:
        shared = ds.SharedFunctionalGroupsSequence[0]
    timing = _functional_item(None, shared, "MRTimingAndRelatedParametersSequence")
    etl = _as_int(ds.get("EchoTrainLength"))
    if etl is None and timing is not None:
        etl = _as_int(timing.get("EchoTrainLength"))
    header = _Header(
        path=path, sop_class=sop_class, is_image=is_image,
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        series_number=_as_int(ds.get("SeriesNumber")),
        description=_text(ds, "SeriesDescription"), protocol=_text(ds, "ProtocolName"),
        sequence_name=_text(ds, "SequenceName") or _text(ds, "PulseSequenceName"),
        modality=_text(ds, "Modality"), manufacturer=manufacturer,
        b0_t=_as_float(ds.get("MagneticFieldStrength")),
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
        echo_train_length=etl, n_frames=n_frames, rows=rows, cols=cols, enhanced=enhanced,
        frames=[], notes=notes,
    )
    if not is_image:
        return header
    header.phase_encoding = _phase_encoding(ds, shared)
    vendor = normalise_vendor(manufacturer)
    top_component = _component_from_tokens(ds.get("ImageType"))
    top_enhanced = _component_enhanced_value(ds.get("ComplexImageComponent"))
    if enhanced:
        per_frames = ds.PerFrameFunctionalGroupsSequence
        if len(per_frames) != n_frames:
            raise QSMInputError(
                f"PerFrameFunctionalGroupsSequence has {len(per_frames)} items for "
                f"{n_frames} frames", path, "PerFrameFunctionalGroupsSequence",
            )
        for index, per in enumerate(per_frames):
            header.frames.append(_enhanced_frame(ds, path, index, per, shared, top_component,
                                                 top_enhanced, vendor))
        return header
    if n_frames > 1:
        raise QSMInputError(
            f"multi-frame object ({n_frames} frames) without functional groups is not "
            "supported", path, "NumberOfFrames",
        )
    header.frames.append(_classic_frame(ds, path, vendor, top_component))
    return header


def _phase_encoding(ds, shared) -> str:
    """InPlanePhaseEncodingDirection (top level, or the enhanced MR FOV/geometry group)."""
    value = _text(ds, "InPlanePhaseEncodingDirection").upper()
    if not value:
        per = None
        if "PerFrameFunctionalGroupsSequence" in ds and ds.PerFrameFunctionalGroupsSequence:
            per = ds.PerFrameFunctionalGroupsSequence[0]
        geometry = _functional_item(per, shared, "MRFOVGeometrySequence")
        if geometry is not None:
            value = str(geometry.get("InPlanePhaseEncodingDirection", "") or "").upper()
    return value if value in ("ROW", "COL") else ""


def _classic_frame(ds, path: Path, vendor: str | None, top_component: str | None) -> _Frame:
    component = None
    ge_code = _as_int(_private_value(ds, 0x0043, "GEMS_PARM_01", 0x2F))
    if ge_code in _GE_CODES and (vendor == "GE" or top_component is None):
        component = _GE_CODES[ge_code]
    if component is None:
        component = top_component
    if component is None:
        component = _TOKENS.get(str(_private_value(ds, 0x2005, "Philips MR Imaging DD 001",
                                                   0x11) or "").strip().upper())
    slope = _as_float(ds.get("RescaleSlope"))
    intercept = _as_float(ds.get("RescaleIntercept"))
    spacing = _as_vector(ds.get("PixelSpacing") or [], 2)
    return _Frame(
        path=path, index=None, component=component or "magnitude",
        component_assumed=component is None, te_ms=_as_float(ds.get("EchoTime")),
        echo_number=_as_int(ds.get("EchoNumbers")),
        position=_as_vector(ds.get("ImagePositionPatient") or [], 3),
        orientation=_as_vector(ds.get("ImageOrientationPatient") or [], 6),
        pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        rows=int(ds.Rows), cols=int(ds.Columns),
        slope=1.0 if slope is None or slope == 0 else slope,
        intercept=intercept or 0.0, has_rescale=slope is not None,
        philips_scale=_philips_scale(ds) if vendor == "Philips" else None,
    )


def _enhanced_frame(ds, path, index, per, shared, top_component, top_enhanced, vendor) -> _Frame:
    frame_type = _functional_item(per, shared, "MRImageFrameTypeSequence")
    component = None
    if frame_type is not None:
        component = _component_enhanced_value(frame_type.get("ComplexImageComponent"))
        if component is None:
            component = _component_from_tokens(frame_type.get("FrameType"))
    component = component or top_enhanced or top_component
    echo = _functional_item(per, shared, "MREchoSequence")
    te = _as_float(echo.get("EffectiveEchoTime")) if echo is not None else None
    if te is None:
        te = _as_float(ds.get("EchoTime"))
    plane = _functional_item(per, shared, "PlanePositionSequence")
    orient = _functional_item(per, shared, "PlaneOrientationSequence")
    measures = _functional_item(per, shared, "PixelMeasuresSequence")
    transform = _functional_item(per, shared, "PixelValueTransformationSequence")
    spacing_src = measures.get("PixelSpacing") if measures is not None else ds.get("PixelSpacing")
    spacing = _as_vector(spacing_src or [], 2)
    slope = intercept = None
    if transform is not None:
        slope = _as_float(transform.get("RescaleSlope"))
        intercept = _as_float(transform.get("RescaleIntercept"))
    if slope is None:
        slope = _as_float(ds.get("RescaleSlope"))
        intercept = _as_float(ds.get("RescaleIntercept"))
    return _Frame(
        path=path, index=index, component=component or "magnitude",
        component_assumed=component is None, te_ms=te,
        echo_number=None,
        position=None if plane is None
        else _as_vector(plane.get("ImagePositionPatient") or [], 3),
        orientation=_as_vector(
            (orient.get("ImageOrientationPatient") if orient is not None
             else ds.get("ImageOrientationPatient")) or [], 6),
        pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        rows=int(ds.Rows), cols=int(ds.Columns),
        slope=1.0 if slope is None or slope == 0 else slope,
        intercept=intercept or 0.0, has_rescale=slope is not None,
        philips_scale=_philips_frame_scale(per) if vendor == "Philips" else None,
    )


def _sop_name(uid: str) -> str:
    if not uid:
        return "DICOM"
    name = pydicom.uid.UID(uid).name
    return name if name and name != uid else f"SOP class {uid}"


def _show_progress(progress: bool | None, n_files: int) -> bool:
    if progress is not None:
        return bool(progress)
    try:
        return n_files > _PROGRESS_MIN_FILES and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _iterate(items, progress: bool, desc: str):
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="file", file=sys.stderr, leave=False)


def _read_headers(paths, progress: bool | None) -> tuple[Any, list[_Header], list[str], int]:
    label, files = _collect_files(paths)
    notes: list[str] = []
    headers: list[_Header] = []
    skipped = 0
    show = _show_progress(progress, len(files))
    for path, explicit in _iterate(files, show, "reading DICOM headers"):
        ds = _dcmread(path, stop_before_pixels=True, explicit=explicit, notes=notes)
        if ds is None:
            skipped += 1
            continue
        try:
            headers.append(_parse_header(ds, path, notes))
        except QSMInputError:
            raise
        except Exception as exc:  # malformed values deep inside a header
            raise QSMInputError(f"malformed DICOM header ({exc})", path, "header") from None
    if not headers:
        raise QSMInputError(
            f"no DICOM files found ({skipped} non-DICOM file{'s' if skipped != 1 else ''} "
            "skipped)", label,
        )
    return label, headers, notes, skipped


def _group_series(headers: list[_Header]) -> list[_Series]:
    groups: dict[str, list[_Header]] = defaultdict(list)
    for header in headers:
        # The SOP class is part of the key: Philips exports one series both as classic and
        # as enhanced objects, and Raw Data objects share the image series' UID.
        key = header.series_uid or f"#{header.series_number}|{header.description}"
        groups[f"{key}|{header.sop_class}"].append(header)
    series = [_Series(key, sorted(hs, key=lambda h: os.fspath(h.path)))
              for key, hs in groups.items()]
    return sorted(series, key=lambda s: (s.number is None, s.number or 0, s.key))


def _summary(series: _Series) -> SeriesSummary:
    first = series.first
    problem = series.problem
    tes = series.te_ms
    usable = not problem and len(tes) >= 2
    note = problem or ("" if usable else "single echo")
    return SeriesSummary(
        series_number=series.number, series_uid=series.uid, description=series.description,
        modality=first.modality, sop_class=_sop_name(first.sop_class),
        manufacturer=first.vendor, n_files=len(series.headers),
        n_frames=sum(len(h.frames) if h.is_image else 0 for h in series.headers),
        echo_times_s=tuple(t * 1e-3 for t in tes), components=series.components,
        is_multi_echo_gre=usable, note=note,
        files=tuple(os.fspath(h.path) for h in series.headers),
    )


def scan_series(paths, *, progress: bool | None = None) -> list[SeriesSummary]:
    """List the DICOM series found in a folder, a file or a list of files.

    Only headers are read (``stop_before_pixels``), so this is quick.

    Parameters
    ----------
    paths : path or sequence of paths
        A folder (searched recursively; non-DICOM files are skipped), a file or a list.
    progress : bool, optional
        Show a progress bar; default when stderr is a terminal and there are many files.

    Returns
    -------
    list of SeriesSummary
        One per series, by series number; non-image objects (e.g. Raw Data Storage) are
        listed with ``is_multi_echo_gre=False``.

    Raises
    ------
    QSMInputError
        If the path does not exist, holds no DICOM file, or a DICOM file is unreadable.
    """
    _, headers, _, _ = _read_headers(paths, progress)
    return [_summary(s) for s in _group_series(headers)]


# -- series selection -------------------------------------------------------------------------
def _orientation_ok(orientation: np.ndarray) -> bool:
    row, col = orientation[:3], orientation[3:]
    return (abs(np.linalg.norm(row) - 1) < 1e-2 and abs(np.linalg.norm(col) - 1) < 1e-2
            and abs(float(row @ col)) < 1e-2)


def _normal(orientation: np.ndarray) -> np.ndarray:
    normal = np.cross(orientation[:3], orientation[3:])
    norm = float(np.linalg.norm(normal))
    return normal / norm if norm > 1e-6 else np.array([0.0, 0.0, 1.0])


def _same_acquisition(a: _Series, b: _Series) -> bool:
    fa, fb = a.first, b.first
    if fa.study_uid and fb.study_uid and fa.study_uid != fb.study_uid:
        return False
    if (fa.frame_of_reference_uid and fb.frame_of_reference_uid
            and fa.frame_of_reference_uid != fb.frame_of_reference_uid):
        return False
    (shape_a, orient_a, _), (shape_b, orient_b, _) = a.geometry, b.geometry
    if shape_a != shape_b or np.max(np.abs(orient_a - orient_b)) > _ORIENTATION_TOL:
        return False
    spacing_a = Counter(f.pixel_spacing for f in a.frames).most_common(1)[0][0]
    spacing_b = Counter(f.pixel_spacing for f in b.frames).most_common(1)[0][0]
    if spacing_a and spacing_b and not np.allclose(spacing_a, spacing_b, rtol=1e-4):
        return False
    if len(a.te_ms) != len(b.te_ms) or not np.allclose(a.te_ms, b.te_ms, atol=1e-3):
        return False
    pa, pb = a.slice_positions, b.slice_positions
    return pa.shape == pb.shape and bool(np.allclose(pa, pb, atol=0.02))


def _candidates(series: list[_Series]) -> list[list[_Series]]:
    """Merge series of one acquisition holding different components (Siemens mag + phase)."""
    groups: list[list[_Series]] = []
    for s in series:
        if not s.is_image:
            continue
        if s.excluded:
            groups.append([s])
            continue
        for group in groups:
            if group[0].excluded:
                continue
            taken = {c for g in group for c in g.components}
            if not taken & set(s.components) and all(_same_acquisition(g, s) for g in group):
                group.append(s)
                break
        else:
            groups.append([s])
    return groups


def _tier(group: list[_Series]) -> int:
    if any(s.excluded for s in group):
        return 5
    comps = {c for s in group for c in s.components}
    n_echoes = len({t for s in group for t in s.te_ms})
    if {"real", "imaginary"} <= comps or {"magnitude", "phase"} <= comps:
        return 1 if n_echoes >= 2 else 2
    if comps & {"magnitude", "phase"}:
        return 3 if n_echoes >= 2 else 4
    return 5


def _describe_group(group: list[_Series]) -> str:
    numbers = "+".join("?" if s.number is None else str(s.number) for s in group)
    descriptions = sorted({s.description for s in group})
    comps = [c for c in _COMPONENT_ORDER if any(c in s.components for s in group)]
    tes = sorted({t for s in group for t in s.te_ms})
    te = "/".join(f"{t:g}" for t in tes) or "?"
    problem = "; ".join(p for p in (s.problem for s in group) if p)
    forms = sorted({_sop_name(s.first.sop_class) for s in group} - {"MR Image Storage"})
    form = f", {'/'.join(forms)}" if forms else ""
    text = (f"series {numbers} {'/'.join(repr(d) for d in descriptions)} "
            f"({'+'.join(comps) or 'no images'}, {len(tes)} echo{'es' if len(tes) != 1 else ''}"
            f", TE {te} ms{form})")
    return f"{text} [{problem}]" if problem else text


def _choose(series: list[_Series], selection, label) -> tuple[list[_Series], list[_Series]]:
    """The series to read, and the other image series (for the notes)."""
    images = [s for s in series if s.is_image]
    if not images:
        first = series[0].first
        raise QSMInputError(
            f"is a {_sop_name(first.sop_class)} object with no pixel data: no images to read",
            first.path, "SOPClassUID",
        )
    groups = _candidates(series)
    listing = "; ".join(_describe_group(g) for g in groups)
    if selection is None:
        best = min(_tier(g) for g in groups)
        chosen = [g for g in groups if _tier(g) == best]
        if len(chosen) > 1:
            raise QSMInputError(
                f"several acquisitions found: {listing}. Pass series= (a series number, a "
                "list of series numbers, or a SeriesInstanceUID) to choose one",
                label, "series",
            )
        picked = chosen[0]
    else:
        scalar = not isinstance(selection, (list, tuple))
        wanted = [selection] if scalar else list(selection)
        if not wanted:
            raise QSMConfigError("series= is an empty list")
        matched: list[_Series] = []
        for item in wanted:
            matches = _match_series(images, item, label, listing)
            if matches[0] not in matched:
                matched.append(matches[0])
        if scalar:
            picked = next(g for g in groups if matched[0] in g)
        else:
            picked = matched
    others = [s for s in images if s not in picked]
    return picked, others


def _match_series(images: list[_Series], item, label, listing: str) -> list[_Series]:
    if isinstance(item, bool) or not isinstance(item, (int, np.integer, str)):
        raise QSMConfigError(
            f"series= takes a series number, a SeriesInstanceUID or a list of them, got {item!r}"
        )
    if isinstance(item, str) and not item.strip().isdigit():
        matches = [s for s in images if s.uid == item.strip()]
        what = f"SeriesInstanceUID {item.strip()}"
    else:
        number = int(item)
        matches = [s for s in images if s.number == number]
        what = f"series number {number}"
        if len(matches) > 1:
            raise _several(matches, what, label)
    if isinstance(item, str) and len(matches) > 1:
        raise _several(matches, what, label)
    if not matches:
        raise QSMInputError(f"no image series with {what}; found: {listing}", label, "series")
    return matches


def _several(matches: list[_Series], what: str, label) -> QSMInputError:
    forms = "; ".join(f"{s.describe()} {_sop_name(s.first.sop_class)} UID {s.uid} "
                      f"(e.g. {s.first.path})" for s in matches)
    if len({s.uid for s in matches}) == len(matches):
        hint = "pass the SeriesInstanceUID instead"
    else:
        hint = "the same series is stored in several forms: read the files of one of them"
    return QSMInputError(f"{len(matches)} image series match {what}: {forms}; {hint}",
                         label, "series")


# -- assembling the volume --------------------------------------------------------------------
def _majority(frames: list[_Frame], key) -> tuple[Any, _Frame | None]:
    counts = Counter(key(f) for f in frames)
    value = counts.most_common(1)[0][0]
    odd = next((f for f in frames if key(f) != value), None)
    return value, odd


def _check_uniform(frames: list[_Frame]) -> None:
    (rows, cols), odd = _majority(frames, lambda f: (f.rows, f.cols))
    if odd is not None:
        example = next(f for f in frames if (f.rows, f.cols) == (rows, cols))
        raise QSMInputError(
            f"image size {odd.rows} x {odd.cols} (Rows x Columns) differs from {rows} x {cols} "
            f"of the other images (e.g. {example.label})", [odd.label], "Rows/Columns",
        )
    for f in frames:
        if f.orientation is None:
            raise QSMInputError("ImageOrientationPatient is missing", [f.label],
                                "ImageOrientationPatient")
        if f.position is None:
            raise QSMInputError("ImagePositionPatient is missing", [f.label],
                                "ImagePositionPatient")
        if f.pixel_spacing is None:
            raise QSMInputError("PixelSpacing is missing", [f.label], "PixelSpacing")
        if f.te_ms is None:
            raise QSMInputError("EchoTime is missing (no echo time for this image)",
                                [f.label], "EchoTime")
    ref = frames[0]
    for f in frames:
        if not _orientation_ok(f.orientation):
            raise QSMInputError(
                f"{np.round(f.orientation, 5).tolist()} is not two perpendicular unit vectors",
                [f.label], "ImageOrientationPatient",
            )
        if np.max(np.abs(f.orientation - ref.orientation)) > _ORIENTATION_TOL:
            raise QSMInputError(
                f"slice orientation {np.round(f.orientation, 5).tolist()} differs from "
                f"{np.round(ref.orientation, 5).tolist()} of {ref.label}", [f.label],
                "ImageOrientationPatient",
            )
        if not np.allclose(f.pixel_spacing, ref.pixel_spacing, rtol=1e-4):
            raise QSMInputError(
                f"pixel spacing {list(f.pixel_spacing)} differs from "
                f"{list(ref.pixel_spacing)} of {ref.label}", [f.label], "PixelSpacing",
            )


def _echo_keys(frames: list[_Frame]) -> tuple[dict[int, tuple], bool]:
    """Echo key per frame: the echo time, plus EchoNumbers where one TE has several."""
    numbers_per_te: dict[float, set] = defaultdict(set)
    for f in frames:
        numbers_per_te[round(f.te_ms, _TE_DECIMALS)].add(f.echo_number)
    split = any(len({n for n in nums if n is not None}) > 1 for nums in numbers_per_te.values())
    keys = {}
    for i, f in enumerate(frames):
        te = round(f.te_ms, _TE_DECIMALS)
        keys[i] = (te, f.echo_number or 0) if split else (te,)
    return keys, split


def _sort_slices(group: list[_Frame], normal: np.ndarray, what: str) -> tuple[list[_Frame],
                                                                              np.ndarray]:
    depth = np.array([float(f.position @ normal) for f in group])
    order = np.argsort(depth, kind="stable")
    group = [group[i] for i in order]
    depth = depth[order]
    if len(group) < 2:
        return group, depth
    steps = np.diff(depth)
    spacing_guess = float(np.median(steps[steps > 1e-3])) if np.any(steps > 1e-3) else 0.0
    tol = max(_SPACING_RTOL * spacing_guess, 1e-3)
    dup = np.flatnonzero(steps <= tol)
    if dup.size:
        a, b = group[dup[0]], group[dup[0] + 1]
        raise QSMInputError(
            f"two images of {what} at the same slice position {depth[dup[0]]:.3f} mm "
            f"({a.label} and {b.label}): duplicated slice or mixed series",
            [a.label, b.label], "ImagePositionPatient",
        )
    spacing = float(np.median(steps))
    irregular = np.flatnonzero(np.abs(steps - spacing) > max(_SPACING_RTOL * spacing, 1e-3))
    if irregular.size:
        i = irregular[0]
        a, b = group[i], group[i + 1]
        ratio = steps[i] / spacing
        if abs(ratio - round(ratio)) < 0.05 and round(ratio) >= 2:
            reason = (f"{round(ratio) - 1} slice(s) missing between positions "
                      f"{depth[i]:.3f} and {depth[i + 1]:.3f} mm")
        else:
            reason = (f"irregular slice spacing: {steps[i]:.4f} mm between positions "
                      f"{depth[i]:.3f} and {depth[i + 1]:.3f} mm, {spacing:.4f} mm elsewhere")
        raise QSMInputError(f"{what}: {reason} ({a.label}, {b.label})", [a.label, b.label],
                            "ImagePositionPatient")
    return group, depth


def _te_text(key: tuple) -> str:
    text = f"TE {key[0]:g} ms"
    return text + (f", echo {key[1]}" if len(key) > 1 else "")


def _layout(frames: list[_Frame], use: list[str]) -> tuple[dict, list[tuple], np.ndarray,
                                                              np.ndarray]:
    """Sort frames into {(component, echo): slices}; echo keys, slice normal, positions."""
    keys, _ = _echo_keys(frames)
    groups: dict[tuple[str, tuple], list[_Frame]] = defaultdict(list)
    for i, f in enumerate(frames):
        groups[(f.component, keys[i])].append(f)
    echoes_by_comp = {c: sorted(k for (cc, k) in groups if cc == c) for c in use}
    ref_comp = use[0]
    ref_echoes = echoes_by_comp[ref_comp]
    for comp in use[1:]:
        if echoes_by_comp[comp] != ref_echoes:
            have = ", ".join(_te_text(k) for k in echoes_by_comp[comp])
            want = ", ".join(_te_text(k) for k in ref_echoes)
            example = groups[(comp, echoes_by_comp[comp][0])][0]
            raise QSMInputError(
                f"{comp} images have {len(echoes_by_comp[comp])} echoes ({have}) but "
                f"{ref_comp} images have {len(ref_echoes)} ({want})", [example.label],
                "EchoTime",
            )
    normal = _normal(frames[0].orientation)
    layout: dict[tuple[str, int], list[_Frame]] = {}
    ref_label = f"{ref_comp} {_te_text(ref_echoes[0])}"
    ref_frames, ref_depth = _sort_slices(groups[(ref_comp, ref_echoes[0])], normal, ref_label)
    for comp in use:
        for e, key in enumerate(ref_echoes):
            what = f"{comp} {_te_text(key)}"
            ordered, depth = _sort_slices(groups[(comp, key)], normal, what)
            if depth.shape != ref_depth.shape or not np.allclose(
                    depth, ref_depth, atol=max(1e-2, 1e-3 * _spacing(ref_depth))):
                raise _slice_mismatch(what, ordered, depth, ref_label, ref_frames, ref_depth)
            layout[(comp, e)] = ordered
    return layout, ref_echoes, normal, np.array([f.position for f in ref_frames])


def _spacing(depth: np.ndarray) -> float:
    return float(np.median(np.diff(depth))) if depth.size > 1 else 1.0


def _slice_mismatch(what, frames, depth, ref_what, ref_frames, ref_depth) -> QSMInputError:
    tol = max(1e-2, 1e-3 * _spacing(ref_depth))
    missing = [i for i, d in enumerate(ref_depth) if not np.any(np.abs(depth - d) <= tol)]
    extra = [i for i, d in enumerate(depth) if not np.any(np.abs(ref_depth - d) <= tol)]
    if missing:
        i = missing[0]
        return QSMInputError(
            f"{what} has {depth.size} slices but {ref_what} has {ref_depth.size}: no "
            f"{what} image at slice position {ref_depth[i]:.3f} mm, where {ref_what} has "
            f"{ref_frames[i].label}", [ref_frames[i].label, frames[0].label],
            "ImagePositionPatient",
        )
    i = extra[0] if extra else 0
    return QSMInputError(
        f"{what} has {depth.size} slices but {ref_what} has {ref_depth.size}: "
        f"{frames[i].label} at slice position {depth[i]:.3f} mm has no counterpart",
        [frames[i].label], "ImagePositionPatient",
    )


def _affine(ref: _Frame, positions: np.ndarray, normal: np.ndarray,
            notes: list[str]) -> np.ndarray:
    row = ref.orientation[:3] / np.linalg.norm(ref.orientation[:3])
    col = ref.orientation[3:] / np.linalg.norm(ref.orientation[3:])
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row * ref.pixel_spacing[1]
    affine_lps[:3, 1] = col * ref.pixel_spacing[0]
    if len(positions) > 1:
        step = (positions[-1] - positions[0]) / (len(positions) - 1)
        along = float(step @ normal)
        if np.linalg.norm(step - along * normal) > 1e-3 * abs(along):
            notes.append("slice positions do not lie along the slice normal (gantry tilt?): "
                         "the affine is sheared accordingly")
    else:
        step = normal * 1.0
        notes.append("single slice: slice spacing taken as 1 mm")
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = positions[0]
    return LPS_TO_RAS @ affine_lps


def _load_pixels(path: Path, header: _Header, notes: list[str]) -> np.ndarray:
    ds = _dcmread(path, stop_before_pixels=False, explicit=True, notes=notes)
    if "PixelData" not in ds:
        raise QSMInputError("the file has no pixel data", path, "PixelData")
    rows, cols, frames = header.rows, header.cols, header.n_frames
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    compressed = bool(syntax is not None and syntax.is_compressed)
    if not compressed:
        expected = rows * cols * frames * samples * bits // 8
        actual = len(ds.PixelData)
        if actual < expected:
            raise QSMInputError(
                f"pixel data is truncated: {actual} bytes where Rows x Columns x frames x "
                f"bytes per pixel = {rows} x {cols} x {frames} x {bits // 8} = {expected}",
                path, "PixelData",
            )
    if samples != 1:
        raise QSMInputError(f"{samples} samples per pixel: expected greyscale images", path,
                            "SamplesPerPixel")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        name = f" ({syntax.name})" if syntax is not None else ""
        raise QSMInputError(f"cannot decode the pixel data{name}: {reason}", path,
                            "PixelData") from None
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.shape != (frames, rows, cols):
        raise QSMInputError(
            f"pixel data of shape {pixels.shape} where (frames, Rows, Columns) = "
            f"{(frames, rows, cols)}", path, "PixelData",
        )
    return pixels


def _phase_radians(values: np.ndarray, vendor: str | None, frames: list[_Frame],
                   path) -> tuple[np.ndarray, str]:
    lo, hi = float(values.min()), float(values.max())
    rescaled = all(f.has_rescale for f in frames)
    if vendor == "Siemens":
        if rescaled and lo >= -4096.5 and hi <= 4095.5:
            return wrap_to_pi(values * (np.pi / 4096.0)), "siemens 12-bit: value * pi / 4096"
        if not rescaled and lo >= -0.5 and hi <= 4095.5:
            return (wrap_to_pi((values * 2.0 - 4096.0) * (np.pi / 4096.0)),
                    "siemens 12-bit raw: (value * 2 - 4096) * pi / 4096")
    elif vendor in ("Philips", "GE") and lo >= -3142.5 and hi <= 3142.5:
        return wrap_to_pi(values / 1000.0), "milliradians: value / 1000"
    converted, scaling = phase_to_radians(values, "auto", vendor, path)
    return converted, f"detected from the value range: {scaling}"


def read_dicom(
    paths,
    *,
    series: int | str | Sequence[int | str] | None = None,
    b0_t: float | None = None,
    progress: bool | None = None,
    ge_slice_chop: bool = False,
) -> MultiEchoGRE:
    """Read a multi-echo GRE acquisition from DICOM files.

    Parameters
    ----------
    paths : path or sequence of paths
        A folder (searched recursively; non-DICOM files and hidden names are skipped), one
        file, or a list of files. Plain, extension-less and gzipped (``.dcm.gz``) files.
    series : int, str or sequence of them, optional
        Which series to read when the folder holds several acquisitions: a series number or
        SeriesInstanceUID selects the acquisition that series belongs to (with its paired
        magnitude/phase partner), a list selects exactly those series. Default: choose
        automatically (module docstring) and refuse when ambiguous.
    b0_t : float, optional
        Field strength in tesla; overrides MagneticFieldStrength.
    progress : bool, optional
        Show a progress bar; default when reading more than 50 files to a terminal.
    ge_slice_chop : bool
        Negate every other slice (odd slice index) of GE data acquired with z-chopping.

    Returns
    -------
    MultiEchoGRE
        Complex echoes (X, Y, Z, E) in the project's phase convention, TEs in seconds, the
        RAS+ affine, B0 and its direction in the voxel frame, ``vendor``, ``source_files``
        (the files used, sorted) and ``metadata`` (SeriesDescription, Series, SeriesNumbers,
        ProtocolName, SequenceName, EchoTrainLength, ImageComponents, ComplexFrom,
        PhaseScaling, PhaseSign, SOPClass, PhilipsScaling, Notes).

    Raises
    ------
    QSMInputError
        For a missing path, no readable DICOM, non-image objects (e.g. Raw Data Storage),
        truncated or undecodable pixel data, missing or inconsistent echo times, slices,
        sizes or orientations, a missing field strength, or an ambiguous choice of series.
        The message names the file(s) and the DICOM field.
    QSMConfigError
        For a malformed ``series`` value or ``ge_slice_chop`` on non-GE data.

    Examples
    --------
    >>> gre = read_dicom("dicom/series_folder")  # doctest: +SKIP
    >>> gre.te_s, gre.vendor, gre.metadata["Series"]  # doctest: +SKIP
    """
    label, headers, notes, skipped = _read_headers(paths, progress)
    all_series = _group_series(headers)
    picked, others = _choose(all_series, series, label)
    notes = list(notes)
    if skipped:
        notes.append(f"{skipped} non-DICOM file{'s' if skipped != 1 else ''} skipped")
    for s in all_series:
        if not s.is_image:
            notes.append(f"skipped {len(s.headers)} {_sop_name(s.first.sop_class)} object(s) "
                         f"(series {s.describe()}): no pixel data")
    if others:
        notes.append("other series not read: " + "; ".join(s.describe() for s in others))
    return _assemble(picked, b0_t=b0_t, progress=progress, ge_slice_chop=ge_slice_chop,
                     notes=notes)


def _components_to_use(frames: list[_Frame], notes: list[str]) -> tuple[list[str], str]:
    found = {f.component for f in frames}
    if {"real", "imaginary"} <= found:
        return ["real", "imaginary"], "real+imaginary"
    if {"magnitude", "phase"} <= found:
        return ["magnitude", "phase"], "magnitude+phase"
    if "magnitude" in found:
        notes.append("magnitude only: no phase images, phase set to zero (has_phase=False)")
        return ["magnitude"], "magnitude only"
    if "phase" in found:
        notes.append("phase only: no magnitude images, magnitude set to 1 (e.g. a Siemens "
                     "field-mapping phase-difference series)")
        return ["phase"], "phase only"
    raise QSMInputError(
        f"only {'+'.join(sorted(found))} images: need magnitude, phase, or real and imaginary",
        [frames[0].label], "ImageType",
    )


def _assemble(picked: list[_Series], *, b0_t, progress, ge_slice_chop,
              notes: list[str]) -> MultiEchoGRE:
    """Check, sort and read the chosen series into a MultiEchoGRE."""
    headers = [h for s in picked for h in s.headers]
    frames = [f for h in headers for f in h.frames]
    _check_uniform(frames)
    found = [c for c in _COMPONENT_ORDER if any(f.component == c for f in frames)]
    use, complex_from = _components_to_use(frames, notes)
    if any(f.component_assumed for f in frames):
        notes.append("image component not stated in some files: taken as magnitude")
    frames = [f for f in frames if f.component in use]

    vendors = {h.vendor for h in headers}
    if len(vendors) > 1:
        raise QSMInputError(f"files from several manufacturers: {sorted(map(str, vendors))}",
                            [headers[0].path], "Manufacturer")
    vendor = vendors.pop()
    if ge_slice_chop and vendor != "GE":
        raise QSMConfigError(f"ge_slice_chop applies to GE data only (these are {vendor} data)")

    layout, echo_keys, normal, positions = _layout(frames, use)
    ref = layout[(use[0], 0)][0]
    affine = _affine(ref, positions, normal, notes)
    b0 = _field_strength(headers, b0_t, notes)
    metadata: dict[str, Any] = {}
    planes = _read_planes(layout, headers, (ref.cols, ref.rows, len(positions), len(echo_keys)),
                          vendor, progress, notes, metadata)
    signal = _to_complex(planes, complex_from, vendor, frames, notes, metadata)
    if ge_slice_chop:
        signal[:, :, 1::2, :] *= -1
        metadata["GESliceChop"] = "odd slices negated (z-chopping)"

    first = headers[0]
    metadata.update({
        "SeriesDescription": first.description,
        "Series": " + ".join(f"{s.describe()} ({'+'.join(s.components)})" for s in picked),
        "SeriesNumbers": [s.number for s in picked if s.number is not None],
        "SeriesInstanceUIDs": [s.uid for s in picked],
        "ProtocolName": first.protocol,
        "SequenceName": first.sequence_name,
        "ImageComponents": found,
        "ComplexFrom": complex_from,
        "SOPClass": _sop_name(first.sop_class),
        "Manufacturer": first.manufacturer,
    })
    if first.echo_train_length is not None:
        metadata["EchoTrainLength"] = first.echo_train_length
    if first.phase_encoding:
        metadata["InPlanePhaseEncodingDirection"] = first.phase_encoding
    if notes:
        metadata["Notes"] = notes
    return MultiEchoGRE(
        signal=signal,
        te_s=np.array([key[0] for key in echo_keys]) * 1e-3,
        b0_t=b0,
        affine=affine,
        b0_dir=world_b0_to_voxel(affine),
        vendor=vendor,
        source_files=sorted({os.fspath(f.path) for f in frames}),
        metadata=metadata,
        has_phase=complex_from != "magnitude only",
    )


def _read_planes(layout: dict, headers: list[_Header], shape: tuple[int, int, int, int],
                 vendor: str | None, progress, notes: list[str],
                 metadata: dict) -> dict[str, np.ndarray]:
    """Rescaled float32 (X, Y, Z, E) arrays per component; one pass over the files."""
    place: dict[Path, list[tuple[_Frame, str, int, int]]] = defaultdict(list)
    for (comp, e), ordered in layout.items():
        for k, f in enumerate(ordered):
            place[f.path].append((f, comp, e, k))
    planes = {comp: np.zeros(shape, dtype=np.float32) for comp, _ in layout}
    philips_fp = False
    if vendor == "Philips":
        scaled = [f for (comp, _), fs in layout.items() if comp != "phase" for f in fs]
        triples = {(f.slope, f.intercept, f.philips_scale) for f in scaled}
        philips_fp = len(triples) > 1 and all(f.philips_scale for f in scaled)
        metadata["PhilipsScaling"] = (
            "floating-point value DV / (RescaleSlope * MRScaleSlope): scalings differ "
            "between images" if philips_fp else "displayed value (RescaleSlope/Intercept)")
    header_of = {h.path: h for h in headers}
    files = sorted(place, key=os.fspath)
    for path in _iterate(files, _show_progress(progress, len(files)), "reading DICOM pixels"):
        pixels = _load_pixels(path, header_of[path], notes)
        for f, comp, e, k in place[path]:
            values = pixels[0 if f.index is None else f.index] * f.slope + f.intercept
            if philips_fp and comp != "phase":
                values = values / (f.slope * f.philips_scale)
            planes[comp][:, :, k, e] = values.T
    return planes


def _to_complex(planes: dict[str, np.ndarray], complex_from: str, vendor: str | None,
                frames: list[_Frame], notes: list[str], metadata: dict) -> np.ndarray:
    """Combine components into complex64 echoes in the project's phase convention."""
    if complex_from == "magnitude only":
        return planes["magnitude"].astype(np.complex64)
    if complex_from == "real+imaginary":
        signal = planes["real"] + np.complex64(1j) * planes["imaginary"]
    else:
        phase_frames = [f for f in frames if f.component == "phase"]
        phase, scaling = _phase_radians(planes["phase"], vendor, phase_frames,
                                        [phase_frames[0].label])
        metadata["PhaseScaling"] = scaling
        signal = np.exp(np.complex64(1j) * phase.astype(np.float32))
        if "magnitude" in planes:
            signal *= planes["magnitude"]
    sign = PHASE_SIGN.get(vendor or "", +1)
    if sign < 0:
        signal = np.conj(signal)
    if vendor in PHASE_SIGN:
        metadata["PhaseSign"] = (f"{sign:+d}: {vendor} phase "
                                 + ("conjugated to" if sign < 0 else "already in")
                                 + " the project convention (positive chi = paramagnetic)")
    else:
        metadata["PhaseSign"] = (f"+1: manufacturer {vendor!r} not in the sign table; "
                                 "Siemens/Philips convention assumed")
        notes.append(metadata["PhaseSign"])
    return signal.astype(np.complex64, copy=False)


def _field_strength(headers: list[_Header], b0_t: float | None, notes: list[str]) -> float:
    values = {round(h.b0_t, 4) for h in headers if h.b0_t is not None}
    if b0_t is not None:
        if values and not any(abs(v - float(b0_t)) < 1e-3 for v in values):
            notes.append(f"b0_t={float(b0_t):g} T given; the header says "
                         f"{', '.join(f'{v:g}' for v in sorted(values))} T")
        return float(b0_t)
    missing = next((h for h in headers if h.b0_t is None), None)
    if missing is not None:
        raise QSMInputError(
            "MagneticFieldStrength is missing; pass b0_t (CLI: --b0) to give the field in tesla",
            [missing.path], "MagneticFieldStrength",
        )
    if len(values) > 1:
        raise QSMInputError(
            f"files disagree on the field strength: {sorted(values)} T",
            [headers[0].path], "MagneticFieldStrength",
        )
    return float(values.pop())

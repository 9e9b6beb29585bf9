"""Write a :class:`~qsmliver.data.MultiEchoGRE` as vendor-style synthetic DICOM.

The files mimic how Siemens, GE and Philips scanners store multi-echo gradient-echo images,
so that the DICOM reader (:mod:`qsmliver.io.dicom`) can be tested end to end on data with a
known truth, and so that simulated phantoms can be handed to other software as DICOM.

Vendor conventions written (classic single-frame MR Image Storage unless ``enhanced=True``):

``"siemens"``
    One series per image component, consecutive series numbers (magnitude ``N``, phase
    ``N + 1``, ...). ImageType ``ORIGINAL\\PRIMARY\\M\\ND`` (``P``, ``R``, ``I`` for the
    others). Magnitude ``uint16`` with a RescaleSlope that returns the original units; phase
    12-bit ``0..4095`` with RescaleSlope 2 and RescaleIntercept -4096 (``-4096..4094`` maps to
    ``-pi..pi``). Phase sign: the project convention.
``"ge"``
    One series holding every component; ImageType ``ORIGINAL\\PRIMARY\\OTHER`` for all of
    them, the component only in the private tag (0043,102F) of creator ``GEMS_PARM_01``
    (0 magnitude, 1 phase, 2 real, 3 imaginary). Signed ``int16`` pixels without rescaling
    (one common scale for magnitude, real and imaginary), phase in milliradians. GE stores
    the phase with the opposite sign: the written data are the complex conjugate of
    ``gre.signal``. ``ge_slice_chop=True`` also negates every other slice (odd ``k``), as
    z-chopped GE acquisitions do.
``"philips"``
    One series holding every component. ImageType ``ORIGINAL\\PRIMARY\\M_FFE\\M\\FFE``
    (``PHASE MAP\\P``, ``R_FFE\\R``, ``I_FFE\\I``), 12-bit ``uint16`` pixels. Magnitude gets a
    RescaleSlope per echo (each echo fills the 12 bits) and the private MR scale slope
    (2005,100E) ``= 1 / RescaleSlope``, so that displayed and floating-point values both
    return the original units. Phase in milliradians: RescaleSlope ``6284 / 4095`` (1.53455),
    RescaleIntercept -3142, as the scanner writes it.

With ``enhanced=True`` the same values go into one Enhanced MR Image Storage object
(functional groups; per-frame ComplexImageComponent, EffectiveEchoTime, plane position and
pixel value transformation).

Geometry comes from ``gre.affine`` (RAS+ to DICOM LPS+): the first array axis runs along the
image rows (ImageOrientationPatient's first triplet), the second down the columns, the third
from slice to slice (ImagePositionPatient of each slice), so oblique and tilted affines are
kept exactly.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from qsmliver import backend
from qsmliver.data import GYROMAGNETIC_RATIO_HZ_PER_T, MultiEchoGRE
from qsmliver.errors import QSMConfigError, QSMOutputExistsError
from qsmliver.geometry import LPS_TO_RAS
from qsmliver.io.atomic import atomic_path

__all__ = [
    "COMPONENTS",
    "VENDORS",
    "build_dicom_datasets",
    "write_dicom_series",
]

#: Vendor styles the writer knows.
VENDORS = ("siemens", "ge", "philips")
#: Image components that can be written.
COMPONENTS = ("magnitude", "phase", "real", "imaginary")

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"

#: GE private image-type codes in (0043,102F), creator "GEMS_PARM_01".
GE_COMPONENT_CODES = {"magnitude": 0, "phase": 1, "real": 2, "imaginary": 3}
GE_PRIVATE_CREATOR = "GEMS_PARM_01"
PHILIPS_PRIVATE_CREATOR = "Philips MR Imaging DD 001"
PHILIPS_FRAME_CREATOR = "Philips MR Imaging DD 005"

_PHILIPS_PHASE_SLOPE = 6284.0 / 4095.0  # 1.53455 mrad per stored unit
_PHILIPS_PHASE_INTERCEPT = -3142.0

_COMPONENT_TOKEN = {"magnitude": "M", "phase": "P", "real": "R", "imaginary": "I"}
_ENHANCED_COMPONENT = {"magnitude": "MAGNITUDE", "phase": "PHASE", "real": "REAL",
                       "imaginary": "IMAGINARY"}


@dataclasses.dataclass(frozen=True)
class _Style:
    manufacturer: str
    model: str
    phase_sign: int  # sign of the stored phase relative to the project convention
    bits_stored: int
    signed: bool


_STYLES = {
    "siemens": _Style("SIEMENS", "qsmliver synthetic", +1, 16, False),
    "ge": _Style("GE MEDICAL SYSTEMS", "qsmliver synthetic", -1, 16, True),
    "philips": _Style("Philips", "qsmliver synthetic", +1, 12, False),
}


@dataclasses.dataclass
class _Plane:
    """Stored integers and their rescaling for one component of one echo."""

    stored: np.ndarray  # (X, Y, Z) integers
    slope: float | None
    intercept: float | None
    philips_scale: float | None = None


def build_dicom_datasets(
    gre: MultiEchoGRE,
    *,
    vendor: str = "siemens",
    enhanced: bool = False,
    components: Sequence[str] = ("magnitude", "phase"),
    series_number: int = 1,
    series_description: str | None = None,
    ge_slice_chop: bool = False,
) -> list[tuple[str, FileDataset]]:
    """Build vendor-style DICOM datasets for a multi-echo GRE, without writing them.

    Parameters
    ----------
    gre : MultiEchoGRE
        The acquisition (``signal`` NumPy or CuPy, any affine with orthogonal in-plane axes).
    vendor : {"siemens", "ge", "philips"}
        Which scanner's conventions to follow (module docstring).
    enhanced : bool
        Write one Enhanced MR Image Storage object instead of one file per slice.
    components : sequence of {"magnitude", "phase", "real", "imaginary"}
        The image components to store, e.g. ``("magnitude", "phase")`` or
        ``("magnitude", "real", "imaginary")``.
    series_number : int
        Series number (Siemens classic: of the first component's series; the next components
        get the following numbers).
    series_description : str, optional
        SeriesDescription; default ``"qsmliver <vendor> multi-echo GRE"``.
    ge_slice_chop : bool
        GE only: negate every other slice (odd slice index), as z-chopped acquisitions store
        them.

    Returns
    -------
    list of (str, pydicom.dataset.FileDataset)
        File names (no folder) and datasets, in writing order.

    Raises
    ------
    QSMConfigError
        For an unknown vendor or component, or an affine DICOM cannot represent.
    """
    vendor = _check_vendor(vendor)
    components = _check_components(components)
    if ge_slice_chop and vendor != "ge":
        raise QSMConfigError("ge_slice_chop applies to vendor='ge' only")
    style = _STYLES[vendor]
    geometry = _Geometry.from_affine(gre.affine)
    native = backend.to_numpy(gre.signal).astype(np.complex128)
    if style.phase_sign < 0:
        native = np.conj(native)
    if ge_slice_chop:
        native = native.copy()
        native[:, :, 1::2, :] *= -1
    planes = {c: _quantise(native, c, vendor) for c in components}

    description = series_description or f"qsmliver {vendor} multi-echo GRE"
    common = _common_attributes(gre, style, description)
    if enhanced:
        ds = _enhanced_dataset(gre, style, vendor, geometry, planes, common, series_number)
        return [(f"{series_number:04d}_enhanced.dcm", ds)]

    out: list[tuple[str, FileDataset]] = []
    if vendor == "siemens":  # one series per component
        groups = [[c] for c in components]
    else:
        groups = [list(components)]
    for offset, group in enumerate(groups):
        number = series_number + offset
        series_uid = generate_uid()
        instance = 0
        for component in group:
            for e in range(gre.n_echoes):
                for k in range(gre.shape[2]):
                    instance += 1
                    ds = _classic_dataset(
                        gre, style, vendor, geometry, planes[component][e], component, e, k,
                        common, number, series_uid, instance,
                    )
                    out.append((f"{number:04d}_{instance:05d}.dcm", ds))
    return out


def write_dicom_series(
    gre: MultiEchoGRE,
    folder: str | os.PathLike,
    *,
    vendor: str = "siemens",
    enhanced: bool = False,
    components: Sequence[str] = ("magnitude", "phase"),
    series_number: int = 1,
    series_description: str | None = None,
    ge_slice_chop: bool = False,
    overwrite: bool = False,
) -> list[Path]:
    """Write a multi-echo GRE as vendor-style DICOM files into ``folder``.

    Parameters
    ----------
    gre : MultiEchoGRE
        The acquisition to write.
    folder : path
        Output folder (created if missing).
    vendor, enhanced, components, series_number, series_description, ge_slice_chop
        As in :func:`build_dicom_datasets`.
    overwrite : bool
        Replace existing files of the same names; otherwise refuse before writing anything.

    Returns
    -------
    list of Path
        The files written, in order.

    Raises
    ------
    QSMOutputExistsError
        If a target file exists and ``overwrite`` is False.
    QSMConfigError
        For an unknown vendor or component.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> gre = MultiEchoGRE(np.ones((4, 3, 2, 2), complex), te_s=[0.004, 0.008], b0_t=3.0)
    >>> files = write_dicom_series(gre, tempfile.mkdtemp(), vendor="siemens")
    >>> len(files)  # 2 components x 2 echoes x 2 slices
    8
    """
    folder = Path(folder)
    datasets = build_dicom_datasets(
        gre, vendor=vendor, enhanced=enhanced, components=components,
        series_number=series_number, series_description=series_description,
        ge_slice_chop=ge_slice_chop,
    )
    targets = [folder / name for name, _ in datasets]
    if not overwrite:
        existing = [t for t in targets if t.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise QSMOutputExistsError(
                f"{existing[0]}{more}: output exists; pass overwrite=True to replace it"
            )
    folder.mkdir(parents=True, exist_ok=True)
    for target, (_, ds) in zip(targets, datasets, strict=True):
        with atomic_path(target, overwrite=overwrite) as tmp:
            _save(ds, tmp)
    return targets


# -- checks ---------------------------------------------------------------------------------
def _check_vendor(vendor: str) -> str:
    name = str(vendor).lower()
    if name not in VENDORS:
        raise QSMConfigError(f"unknown vendor {vendor!r}; choose one of {', '.join(VENDORS)}")
    return name


def _check_components(components: Sequence[str]) -> list[str]:
    if isinstance(components, str):
        components = [components]
    names = [str(c).lower() for c in components]
    unknown = [c for c in names if c not in COMPONENTS]
    if unknown or not names:
        raise QSMConfigError(
            f"components must be a non-empty selection of {', '.join(COMPONENTS)}, "
            f"got {list(components)!r}"
        )
    if len(set(names)) != len(names):
        raise QSMConfigError(f"components repeated: {list(components)!r}")
    return names


# -- geometry -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Geometry:
    row_cosine: np.ndarray  # LPS direction of increasing column index (array axis 0)
    col_cosine: np.ndarray  # LPS direction of increasing row index (array axis 1)
    pixel_spacing: tuple[float, float]  # (between rows, between columns) in mm
    slice_step: np.ndarray  # LPS vector from one slice to the next
    origin: np.ndarray  # LPS position of voxel (0, 0, 0)

    @classmethod
    def from_affine(cls, affine_ras) -> _Geometry:
        lps = LPS_TO_RAS @ np.asarray(affine_ras, dtype=np.float64)
        col0, col1, col2 = lps[:3, 0], lps[:3, 1], lps[:3, 2]
        dx, dy = float(np.linalg.norm(col0)), float(np.linalg.norm(col1))
        row_cosine, col_cosine = col0 / dx, col1 / dy
        if abs(float(row_cosine @ col_cosine)) > 1e-6:
            raise QSMConfigError(
                "the affine's first two axes are not orthogonal: DICOM cannot store an "
                "in-plane shear"
            )
        return cls(row_cosine, col_cosine, (dy, dx), col2.copy(), lps[:3, 3].copy())

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosine, self.col_cosine)

    def position(self, k: int) -> np.ndarray:
        return self.origin + k * self.slice_step

    @property
    def slice_spacing(self) -> float:
        return float(abs(self.slice_step @ self.normal))


# -- quantisation ---------------------------------------------------------------------------
def _quantise(native: np.ndarray, component: str, vendor: str) -> list[_Plane]:
    """Integers and rescaling per echo for one component, in the vendor's convention."""
    n_echoes = native.shape[3]
    magnitude = np.abs(native)
    if component == "phase":
        phase = np.angle(native)
        if vendor == "siemens":
            stored = np.mod(np.round((phase * 4096.0 / np.pi + 4096.0) / 2.0), 4096)
            return [_Plane(stored[..., e].astype(np.int64), 2.0, -4096.0)
                    for e in range(n_echoes)]
        if vendor == "philips":
            stored = np.clip(
                np.round((phase * 1000.0 - _PHILIPS_PHASE_INTERCEPT) / _PHILIPS_PHASE_SLOPE),
                0, 4095,
            )
            scale = 4095.0 / (2 * np.pi)
            return [_Plane(stored[..., e].astype(np.int64), _PHILIPS_PHASE_SLOPE,
                           _PHILIPS_PHASE_INTERCEPT, scale) for e in range(n_echoes)]
        stored = np.round(phase * 1000.0)  # GE: milliradians, signed
        return [_Plane(stored[..., e].astype(np.int64), None, None) for e in range(n_echoes)]

    values = {"magnitude": magnitude, "real": native.real, "imaginary": native.imag}[component]
    if vendor == "ge":
        # One scale shared by magnitude, real and imaginary so they stay consistent.
        peak = float(magnitude.max()) or 1.0
        stored = np.round(values * (0.9 * 32767 / peak))
        return [_Plane(stored[..., e].astype(np.int64), None, None) for e in range(n_echoes)]
    bits = _STYLES[vendor].bits_stored
    top = 2**bits - 1
    planes = []
    for e in range(n_echoes):
        echo = values[..., e]
        if vendor == "philips" and component == "magnitude":
            peak = float(echo.max()) or 1.0  # each echo fills the range (per-image scaling)
        else:
            peak = float(np.abs(values).max()) or 1.0
        if component == "magnitude":
            slope, intercept = peak / (0.95 * top), 0.0
        else:  # signed values in an unsigned range: shift by an intercept
            slope, intercept = 2 * peak / (0.95 * top), -peak
        slope = float(format_number_as_ds(slope))
        intercept = float(format_number_as_ds(intercept))
        stored = np.clip(np.round((echo - intercept) / slope), 0, top).astype(np.int64)
        planes.append(_Plane(stored, slope, intercept,
                             1.0 / slope if vendor == "philips" else None))
    return planes


# -- dataset building -----------------------------------------------------------------------
def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def _ds_list(values) -> list[str]:
    return [_ds(v) for v in values]


def _common_attributes(gre: MultiEchoGRE, style: _Style, description: str) -> dict:
    now = datetime.datetime.now()
    return {
        "StudyInstanceUID": generate_uid(),
        "FrameOfReferenceUID": generate_uid(),
        "StudyDate": now.strftime("%Y%m%d"),
        "StudyTime": now.strftime("%H%M%S"),
        "Manufacturer": style.manufacturer,
        "ManufacturerModelName": style.model,
        "SeriesDescription": description[:64],
        "ProtocolName": description[:64],
        "MagneticFieldStrength": _ds(gre.b0_t),
        "ImagingFrequency": _ds(GYROMAGNETIC_RATIO_HZ_PER_T * gre.b0_t / 1e6),
    }


def _phase_encoding(gre: MultiEchoGRE) -> dict[str, str]:
    """InPlanePhaseEncodingDirection when the acquisition's metadata carry it."""
    value = str(gre.metadata.get("InPlanePhaseEncodingDirection") or "").upper()
    return {"InPlanePhaseEncodingDirection": value} if value in ("ROW", "COL") else {}


def _base_dataset(sop_class: str, common: dict, style: _Style, number: int,
                  series_uid: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.PatientName = "QSMLIVER^SYNTHETIC"
    ds.PatientID = "qsmliver-synthetic"
    ds.PatientPosition = "HFS"
    ds.StudyID = "1"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = int(number)
    ds.AcquisitionNumber = 1
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SP"
    ds.MRAcquisitionType = "3D"
    ds.PositionReferenceIndicator = ""
    for key, value in common.items():
        setattr(ds, key, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = style.bits_stored
    ds.HighBit = style.bits_stored - 1
    ds.PixelRepresentation = 1 if style.signed else 0
    return ds


def _image_type(vendor: str, component: str) -> list[str]:
    token = _COMPONENT_TOKEN[component]
    if vendor == "ge":
        return ["ORIGINAL", "PRIMARY", "OTHER"]
    if vendor == "philips":
        first = "PHASE MAP" if component == "phase" else f"{token}_FFE"
        return ["ORIGINAL", "PRIMARY", first, token, "FFE"]
    return ["ORIGINAL", "PRIMARY", token, "ND"]


def _pixel_bytes(stored: np.ndarray, signed: bool) -> bytes:
    return np.ascontiguousarray(stored, dtype="<i2" if signed else "<u2").tobytes()


def _set_rescale(ds: Dataset, plane: _Plane) -> None:
    if plane.slope is not None:
        ds.RescaleIntercept = _ds(plane.intercept or 0.0)
        ds.RescaleSlope = _ds(plane.slope)
        ds.RescaleType = "US"


def _classic_dataset(gre, style, vendor, geometry: _Geometry, plane: _Plane, component: str,
                     echo: int, k: int, common: dict, number: int, series_uid: str,
                     instance: int) -> FileDataset:
    ds = _base_dataset(MR_IMAGE_STORAGE, common, style, number, series_uid)
    ds.ImageType = _image_type(vendor, component)
    for key, value in _phase_encoding(gre).items():
        setattr(ds, key, value)
    ds.SequenceName = "*fl3d" if vendor == "siemens" else "GRE"
    ds.InstanceNumber = instance
    ds.EchoTime = _ds(gre.te_s[echo] * 1e3)
    ds.EchoNumbers = echo + 1
    ds.EchoTrainLength = gre.n_echoes
    ds.ImagePositionPatient = _ds_list(geometry.position(k))
    ds.ImageOrientationPatient = _ds_list([*geometry.row_cosine, *geometry.col_cosine])
    ds.SliceLocation = _ds(geometry.position(k) @ geometry.normal)
    ds.SliceThickness = _ds(geometry.slice_spacing)
    ds.SpacingBetweenSlices = _ds(geometry.slice_spacing)
    ds.PixelSpacing = _ds_list(geometry.pixel_spacing)
    nx, ny = gre.shape[:2]
    ds.Rows, ds.Columns = ny, nx
    _set_rescale(ds, plane)
    if vendor == "ge":
        block = ds.private_block(0x0043, GE_PRIVATE_CREATOR, create=True)
        block.add_new(0x2F, "SS", GE_COMPONENT_CODES[component])
    elif vendor == "philips":
        block = ds.private_block(0x2005, PHILIPS_PRIVATE_CREATOR, create=True)
        if plane.philips_scale is not None:
            block.add_new(0x0E, "FL", float(plane.philips_scale))
        block.add_new(0x11, "CS", _COMPONENT_TOKEN[component])
    ds.PixelData = _pixel_bytes(plane.stored[:, :, k].T, style.signed)
    return ds


def _item(**attributes) -> Dataset:
    item = Dataset()
    for key, value in attributes.items():
        setattr(item, key, value)
    return item


def _enhanced_dataset(gre, style, vendor, geometry: _Geometry, planes: dict, common: dict,
                      number: int) -> FileDataset:
    ds = _base_dataset(ENHANCED_MR_IMAGE_STORAGE, common, style, number, generate_uid())
    names = list(planes)
    mixed = len(names) > 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "T2_STAR",
                    "MIXED" if mixed else _COMPONENT_TOKEN[names[0]]]
    ds.ComplexImageComponent = "MIXED" if mixed else _ENHANCED_COMPONENT[names[0]]
    ds.PulseSequenceName = "qsmliver_gre"
    ds.InstanceNumber = 1
    ds.ContentQualification = "RESEARCH"
    ds.VolumetricProperties = "VOLUME"
    ds.PixelPresentation = "MONOCHROME"
    phase_encoding = _phase_encoding(gre)
    nx, ny, nz = gre.shape
    ds.Rows, ds.Columns = ny, nx
    ds.SharedFunctionalGroupsSequence = DicomSequence([_item(
        PlaneOrientationSequence=DicomSequence([_item(
            ImageOrientationPatient=_ds_list([*geometry.row_cosine, *geometry.col_cosine]))]),
        PixelMeasuresSequence=DicomSequence([_item(
            PixelSpacing=_ds_list(geometry.pixel_spacing),
            SliceThickness=_ds(geometry.slice_spacing),
            SpacingBetweenSlices=_ds(geometry.slice_spacing))]),
        MRTimingAndRelatedParametersSequence=DicomSequence([_item(
            EchoTrainLength=gre.n_echoes)]),
        **({"MRFOVGeometrySequence": DicomSequence([_item(**phase_encoding)])}
           if phase_encoding else {}),
    )])
    frames = []
    pixels = []
    for c_index, component in enumerate(names):
        token = _COMPONENT_TOKEN[component]
        for e in range(gre.n_echoes):
            plane = planes[component][e]
            for k in range(nz):
                frame = _item(
                    FrameContentSequence=DicomSequence([_item(
                        StackID="1", InStackPositionNumber=k + 1, TemporalPositionIndex=1,
                        FrameAcquisitionNumber=c_index + 1)]),
                    PlanePositionSequence=DicomSequence([_item(
                        ImagePositionPatient=_ds_list(geometry.position(k)))]),
                    MREchoSequence=DicomSequence([_item(
                        EffectiveEchoTime=float(gre.te_s[e] * 1e3))]),
                    MRImageFrameTypeSequence=DicomSequence([_item(
                        FrameType=["ORIGINAL", "PRIMARY", "T2_STAR", token],
                        PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
                        VolumeBasedCalculationTechnique="NONE",
                        ComplexImageComponent=_ENHANCED_COMPONENT[component],
                        AcquisitionContrast="T2_STAR")]),
                )
                transform = Dataset()
                _set_rescale(transform, plane if plane.slope is not None
                             else _Plane(plane.stored, 1.0, 0.0))
                frame.PixelValueTransformationSequence = DicomSequence([transform])
                if vendor == "philips" and plane.philips_scale is not None:
                    private = Dataset()
                    inner = private.private_block(0x2005, PHILIPS_PRIVATE_CREATOR, create=True)
                    inner.add_new(0x0E, "FL", float(plane.philips_scale))
                    inner.add_new(0x11, "CS", token)
                    outer = frame.private_block(0x2005, PHILIPS_FRAME_CREATOR, create=True)
                    outer.add_new(0x0F, "SQ", DicomSequence([private]))
                frames.append(frame)
                pixels.append(plane.stored[:, :, k].T)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.NumberOfFrames = len(frames)
    ds.PixelData = _pixel_bytes(np.stack(pixels), style.signed)
    return ds


def _save(ds: FileDataset, path: Path) -> None:
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.4
        ds.save_as(path, write_like_original=False)

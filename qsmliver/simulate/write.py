"""Write a phantom to disk: the acquisition (BIDS MEGRE, NIfTI, vendor-style DICOM) and its
truth maps as BIDS-derivatives NIfTI with JSON sidecars, through the foundation writers.

Layout under the output folder ``OUT``::

    OUT/rawdata/sub-<s>/anat/sub-<s>_echo-<n>_part-{mag,phase}_MEGRE.nii.gz   (bids)
    OUT/nifti/sub-<s>_{mag,phase}.nii.gz                                        (nifti)
    OUT/dicom/*.dcm                                                             (dicom)
    OUT/derivatives/truth/sub-<s>/anat/sub-<s>_Chimap.nii.gz, ..._fieldmap, ..._dseg ...
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qsmliver.data import QuantitativeMap
from qsmliver.errors import QSMConfigError
from qsmliver.io.atomic import write_json_atomic
from qsmliver.io.bids import validate_label
from qsmliver.io.dicom_write import write_dicom_series
from qsmliver.io.writers import write_bids_megre, write_gre_nifti, write_map
from qsmliver.simulate.phantom import TRUTH_UNITS, Phantom

__all__ = ["FORMATS", "TRUTH_FILE_SUFFIXES", "phantom_summary", "write_phantom"]

FORMATS = ("bids", "nifti", "dicom")

#: BIDS-derivatives suffix (or desc- label) of each truth map (DESIGN section 2).
TRUTH_FILE_SUFFIXES: dict[str, str] = {
    "chi_ppm": "Chimap",
    "total_field_hz": "fieldmap",
    "total_field_ppm": "desc-totalfield_map",
    "local_field_ppm": "desc-localfield_map",
    "background_field_ppm": "desc-backgroundfield_map",
    "r2star_per_s": "R2starmap",
    "water": "desc-water_map",
    "fat": "desc-fat_map",
    "pdff_percent": "desc-PDFF_map",
    "lic_mg_per_g": "desc-LIC_map",
    "phi0_rad": "desc-phi0_map",
}


def write_phantom(
    phantom: Phantom,
    output: str | os.PathLike,
    *,
    formats: Sequence[str] = FORMATS,
    subject: str = "sim",
    vendor: str = "siemens",
    overwrite: bool = False,
) -> list[Path]:
    """Write a phantom's acquisition and truth maps under ``output``.

    Parameters
    ----------
    phantom : Phantom
        The phantom (e.g. from :func:`qsmliver.simulate.brain_phantom`).
    output : path
        Output folder.
    formats : sequence of {"bids", "nifti", "dicom"}
        Formats of the acquisition to write.
    subject : str
        BIDS subject label.
    vendor : {"siemens", "ge", "philips"}
        Vendor conventions of the DICOM output.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    list of Path
        Every file written.

    Raises
    ------
    QSMConfigError
        For an unknown format or a bad subject label.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise QSMConfigError(f"unknown phantom output format(s) {unknown}; choose from {FORMATS}")
    subject = validate_label(subject, "sub")
    output = Path(output)
    gre = phantom.gre
    written: list[Path] = []
    if "bids" in formats:
        written += write_bids_megre(gre, output / "rawdata", subject, overwrite=overwrite)
    if "nifti" in formats:
        written += write_gre_nifti(gre, output / "nifti" / f"sub-{subject}", overwrite=overwrite)
    if "dicom" in formats:
        written += write_dicom_series(gre, output / "dicom", vendor=vendor,
                                      series_description=f"qsmliver phantom sub-{subject}",
                                      overwrite=overwrite)
    anat = output / "derivatives" / "truth" / f"sub-{subject}" / "anat"
    inputs = [str(p) for p in written[:1]]
    extra = {"Phantom": phantom.config}
    for key, array in phantom.truth.items():
        qmap = QuantitativeMap(np.asarray(array, dtype=np.float32), TRUTH_FILE_SUFFIXES[key],
                               TRUTH_UNITS[key], gre.affine, method="simulation truth")
        path = anat / f"sub-{subject}_{TRUTH_FILE_SUFFIXES[key]}.nii.gz"
        written.append(write_map(qmap, path, inputs=inputs, overwrite=overwrite, extra=extra))
    labels = QuantitativeMap(np.asarray(phantom.labels, dtype=np.int16), "dseg", "1", gre.affine,
                             method="simulation truth")
    written.append(write_map(labels, anat / f"sub-{subject}_desc-tissue_dseg.nii.gz",
                             inputs=inputs, overwrite=overwrite, extra=extra))
    table = anat / f"sub-{subject}_desc-tissue_dseg.tsv"
    written.append(_write_label_table(phantom.label_names, table, overwrite))
    for name, mask in phantom.masks.items():
        qmask = QuantitativeMap(np.asarray(mask, dtype=bool), "mask", "1", gre.affine,
                                method="simulation truth")
        written.append(write_map(qmask, anat / f"sub-{subject}_desc-{name}_mask.nii.gz",
                                 inputs=inputs, overwrite=overwrite))
    description = output / "derivatives" / "truth" / "dataset_description.json"
    if overwrite or not description.exists():
        from qsmliver import __version__

        written.append(write_json_atomic({
            "Name": "qsmliver phantom truth", "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "qsmliver.simulate", "Version": __version__}],
        }, description, overwrite=True))
    return written


def _write_label_table(label_names: dict[int, str], path: Path, overwrite: bool) -> Path:
    from qsmliver.io.atomic import atomic_path

    lines = ["index\tname"] + [f"{int(k)}\t{v}" for k, v in sorted(label_names.items())]
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def phantom_summary(phantom: Phantom) -> str:
    """One JSON line describing a phantom (used by ``qsmliver simulate``)."""
    return json.dumps({"Phantom": phantom.config.get("phantom", phantom.gre.metadata.get(
        "Phantom")), **{k: v for k, v in phantom.gre.describe().items() if k in (
            "Shape", "Echoes", "MagneticFieldStrength_T", "VoxelSize_mm")}})

"""Writing a reconstruction (maps, sidecars, QC montage, run record) and reading user masks."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qsmliver.errors import QSMInputError
from qsmliver.io.atomic import write_json_atomic
from qsmliver.io.sidecar import provenance
from qsmliver.io.staging import staged_output_dir
from qsmliver.io.writers import write_map

if TYPE_CHECKING:
    from qsmliver.pipeline import ReconResult

__all__ = ["read_mask", "write_recon"]


def read_mask(path: str | os.PathLike, *, shape: tuple[int, ...],
              affine: np.ndarray | None = None, atol_mm: float = 1e-2) -> np.ndarray:
    """Read a NIfTI mask and check it fits the data (shape and, when given, the affine).

    Non-zero voxels are inside. A 4-D mask with a single volume is accepted.

    Raises
    ------
    QSMInputError
        Missing or unreadable file, wrong shape, different geometry, or an empty mask.
    """
    import nibabel as nib

    file = Path(path)
    if not file.is_file():
        raise QSMInputError("no such mask file", file)
    try:
        image = nib.load(str(file))
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types for broken files
        raise QSMInputError(f"cannot read the mask: {exc}", file) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if tuple(data.shape) != tuple(shape):
        raise QSMInputError(f"mask shape {data.shape} does not match the data {tuple(shape)}",
                            file, "shape")
    if affine is not None and not np.allclose(image.affine, affine, atol=atol_mm):
        raise QSMInputError("mask geometry (affine) differs from the data's; resample it "
                            "to the GRE grid first", file, "affine")
    mask = np.asarray(data) != 0
    if not mask.any():
        raise QSMInputError("the mask is empty", file)
    return mask


#: Montage rows: (map key, title, colour map, symmetric window), in display order.
_MONTAGE_ROWS = (
    ("fieldmap", "field (Hz)", "RdBu_r", True),
    ("desc-localfield_map", "local field (ppm)", "RdBu_r", True),
    ("Chimap", "χ (ppm)", "gray", True),
    ("R2starmap", "R2* (1/s)", "magma", False),
    ("desc-PDFF_map", "PDFF (%)", "viridis", False),
    ("desc-water_map", "water (a.u.)", "gray", False),
    ("desc-fat_map", "fat (a.u.)", "gray", False),
)


def write_recon(result: ReconResult, output: str | os.PathLike, prefix: str, *,
                inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False,
                montage: bool = True) -> list[Path]:
    """Write every map of a reconstruction with sidecars, a QC montage and ``<prefix>_recon.json``.

    All files are staged and moved into ``output`` together (nothing partial is left, and
    existing files are replaced only with ``overwrite``).

    Returns
    -------
    list of Path
        The files written, in ``output``.
    """
    from qsmliver.report import Panel, qc_montage

    output = Path(output)
    inputs = [str(p) for p in inputs]
    written: list[str] = []
    extra = {"Pipeline": result.provenance, "Configuration": result.config}
    with staged_output_dir(output, overwrite=overwrite) as stage:
        for suffix, qmap in result.maps.items():
            path = write_map(qmap, stage / f"{prefix}_{suffix}.nii.gz", inputs=inputs,
                             overwrite=True, extra={"Pipeline": {
                                 "Device": result.provenance.get("Device"),
                                 "Timings_s": result.provenance.get("Timings_s")}})
            written.append(path.name)
        record = {**provenance(inputs), **extra, "Outputs": sorted(written)}
        write_json_atomic(record, stage / f"{prefix}_recon.json", overwrite=True)
        written.append(f"{prefix}_recon.json")
        if montage:
            mask = result.maps["mask"].data.astype(bool)
            panels = [Panel("magnitude (a.u.)", result.magnitude)]
            panels += [Panel(title, result.maps[key].data, cmap, symmetric=symmetric)
                       for key, title, cmap, symmetric in _MONTAGE_ROWS if key in result.maps]
            method = (result.maps["Chimap"].method if "Chimap" in result.maps
                      else result.provenance.get("QSMRefused", "no χ")[:60])
            qc_montage(panels, stage / f"{prefix}_desc-qc_montage.png", mask=mask,
                       title=f"{prefix}: {method}", overwrite=True)
            written.append(f"{prefix}_desc-qc_montage.png")
    return [output / name for name in written]

"""Background field removal: V-SHARP, PDF, LBV and RESHARP.

Every method has the call shape ``method(field_ppm, mask, voxel_size_mm, ...) ->
(local_field_ppm, eroded_mask)`` (PDF also takes ``b0_dir`` and a ``weight``);
:func:`remove_background` dispatches by name and records the parameters used.
"""

from qsmliver.bgremove.api import METHODS, BackgroundRemoval, remove_background
from qsmliver.bgremove.lbv import dirichlet_laplacian, lbv, lbv_operator
from qsmliver.bgremove.pdf import pdf, pdf_operator
from qsmliver.bgremove.resharp import resharp, resharp_operator
from qsmliver.bgremove.smv import smv_erode, smv_kernel, sphere_voxel_count
from qsmliver.bgremove.vsharp import default_vsharp_radii, vsharp

__all__ = [
    "METHODS",
    "BackgroundRemoval",
    "default_vsharp_radii",
    "dirichlet_laplacian",
    "lbv",
    "lbv_operator",
    "pdf",
    "pdf_operator",
    "remove_background",
    "resharp",
    "resharp_operator",
    "smv_erode",
    "smv_kernel",
    "sphere_voxel_count",
    "vsharp",
]

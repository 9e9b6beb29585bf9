"""Dipole inversion: local field (ppm) to susceptibility χ (ppm).

Methods (all ``method(local_field_ppm, mask, voxel_size_mm, b0_dir, *, ...) -> chi_ppm``):
:func:`tkd` (truncated k-space division), :func:`tikhonov` (closed-form L2, identity or
gradient), :func:`ilsqr` (LSQR with early stopping), :func:`tv_admm` (FANSI-style TV by ADMM,
the default), :func:`medi` (morphology-enabled, optionally MEDI+0) and :func:`ndi` (nonlinear
dipole inversion); :func:`tfi` (preconditioned total field inversion) takes the TOTAL field
instead, with no background removal before it; :func:`invert_dipole` dispatches by name and
records the parameters.
The dipole kernel itself is :func:`dipole_kernel`.
"""

from qsmliver.inversion.closed_form import lcurve_lambda, tikhonov, tkd
from qsmliver.inversion.dipole import dipole_kernel, kspace_grid
from qsmliver.inversion.dispatch import METHODS, DipoleInversion, invert_dipole
from qsmliver.inversion.lsqr_method import ilsqr
from qsmliver.inversion.medi import medi
from qsmliver.inversion.nonlinear import ndi
from qsmliver.inversion.tfi import tfi
from qsmliver.inversion.tv import tv_admm

__all__ = [
    "METHODS",
    "DipoleInversion",
    "dipole_kernel",
    "ilsqr",
    "invert_dipole",
    "kspace_grid",
    "lcurve_lambda",
    "medi",
    "ndi",
    "tfi",
    "tikhonov",
    "tkd",
    "tv_admm",
]

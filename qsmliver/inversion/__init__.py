"""Dipole inversion: the dipole kernel now; TKD, Tikhonov, iLSQR, TV-ADMM, MEDI to come."""

from qsmliver.inversion.dipole import dipole_kernel, kspace_grid

__all__ = ["dipole_kernel", "kspace_grid"]

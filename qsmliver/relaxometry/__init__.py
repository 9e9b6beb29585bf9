"""Relaxometry: R2* (log-linear, ARLO, nonlinear with noise floor / truncation / noise
correction) and R2 (spin echo), vectorised over voxels on NumPy or CuPy.

>>> import numpy as np
>>> from qsmliver.relaxometry import fit_r2star
>>> te = 0.99e-3 + 1.41e-3 * np.arange(12)
>>> fit = fit_r2star(1000.0 * np.exp(-300.0 * te)[None, :], te, method="nlls")
>>> round(float(fit.r2star_per_s[0]), 3)
300.0
"""

from qsmliver.relaxometry.noise import estimate_noise_sigma, noise_floor, noncentral_chi_mean
from qsmliver.relaxometry.r2 import R2_RANGE_PER_S, R2Fit, fit_r2
from qsmliver.relaxometry.r2star import (
    R2STAR_METHODS,
    R2STAR_RANGE_PER_S,
    R2StarFit,
    fit_r2star,
)

__all__ = [
    "R2STAR_METHODS",
    "R2STAR_RANGE_PER_S",
    "R2_RANGE_PER_S",
    "R2Fit",
    "R2StarFit",
    "estimate_noise_sigma",
    "fit_r2",
    "fit_r2star",
    "noise_floor",
    "noncentral_chi_mean",
]

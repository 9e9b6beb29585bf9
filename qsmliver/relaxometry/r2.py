"""R2 mapping from multi-echo spin-echo magnitudes (mono-exponential with a noise floor).

The same vectorised fits as :func:`qsmliver.relaxometry.fit_r2star`, applied to spin-echo
decays ``S(TE) = S0·exp(−R2·TE)``: by default nonlinear least squares with a constant noise
floor/offset (``"nlls"``, as used for liver R2 by St Pierre TG et al., Blood 2005;105:855 and
Wood JC et al., Blood 2005;106:1460), or the noise-corrected Rician model
(``"noise_corrected"``), echo truncation (``"truncation"``) or a weighted log-linear fit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from numpy.typing import ArrayLike

from qsmliver.errors import QSMConfigError
from qsmliver.relaxometry.r2star import R2STAR_METHODS, fit_r2star

__all__ = ["R2_RANGE_PER_S", "R2Fit", "fit_r2"]

#: Default range R2 (1/s) is clipped to; liver R2 at 1.5 T stays below about 300 1/s even at
#: LIC 40 mg/g (St Pierre 2005), so 1000 1/s leaves room for 3 T.
R2_RANGE_PER_S = (0.0, 1000.0)


@dataclasses.dataclass(eq=False)
class R2Fit:
    """Result of :func:`fit_r2` (arrays on the input's backend, zero outside the mask).

    Attributes
    ----------
    r2_per_s : (...) ndarray
        R2 in 1/s.
    s0 : (...) ndarray
        Signal at TE = 0 (magnitude units).
    goodness : (...) ndarray
        R² of the fit over the echoes used (dimensionless).
    method : str
    parameters : dict
        JSON-serialisable settings.
    offset : (...) ndarray or None
        Fitted noise floor/offset (``"nlls"``).
    """

    r2_per_s: Any
    s0: Any
    goodness: Any
    method: str
    parameters: dict
    offset: Any = None


def fit_r2(
    magnitude,
    te_s: ArrayLike,
    *,
    method: str = "nlls",
    mask=None,
    noise_sigma: float | Any | None = None,
    r2_range: tuple[float, float] = R2_RANGE_PER_S,
    **options: Any,
) -> R2Fit:
    """Fit R2 (1/s) and S0 to multi-echo spin-echo magnitudes, vectorised over voxels.

    Parameters
    ----------
    magnitude : (..., E) ndarray
        Spin-echo magnitudes; NumPy or CuPy.
    te_s : (E,) array_like
        Echo times in seconds.
    method : {"nlls", "noise_corrected", "truncation", "loglinear", "arlo"}
        Default "nlls": ``S0·exp(−R2·TE) + C`` (mono-exponential with a noise floor).
    mask : (...) bool ndarray, optional
    noise_sigma : float or (...) ndarray, optional
        Needed by "noise_corrected" and "truncation" (estimated from the background if None).
    r2_range : (float, float)
        Clip range of R2 in 1/s.
    **options
        As for :func:`qsmliver.relaxometry.fit_r2star`.

    Returns
    -------
    R2Fit

    Examples
    --------
    >>> import numpy as np
    >>> te = 0.006 + 0.003 * np.arange(16)
    >>> fit = fit_r2(500.0 * np.exp(-40.0 * te)[None, :] + 10.0, te)
    >>> round(float(fit.r2_per_s[0]), 3)
    40.0
    """
    if method not in R2STAR_METHODS:
        raise QSMConfigError(f"unknown R2 method {method!r}; use one of {R2STAR_METHODS}")
    fit = fit_r2star(magnitude, te_s, method=method, mask=mask, noise_sigma=noise_sigma,
                     r2star_range=r2_range, **options)
    params = dict(fit.parameters)
    params["r2_range_per_s"] = params.pop("r2star_range_per_s")
    params["model"] = "spin-echo mono-exponential"
    return R2Fit(r2_per_s=fit.r2star_per_s, s0=fit.s0, goodness=fit.goodness, method=method,
                 parameters=params, offset=fit.offset)

"""R2* mapping from multi-echo gradient-echo magnitudes, vectorised over all voxels.

Methods (``fit_r2star(..., method=...)``):

``"loglinear"``
    Weighted linear fit of ``ln S = ln S0 − R2*·TE`` with weights ``S²`` (the inverse variance
    of ``ln S``). Fast, closed form; biased low once late echoes reach the noise floor.
``"arlo"``
    Auto-regression on linear operations (Pei M et al., Algorithm for fast monoexponential
    fitting based on auto-regression on linear operations (ARLO) of data, MRM 2015;73:843):
    Simpson integrals over echo triplets regressed on echo differences. Needs uniform echo
    spacing and at least 3 echoes. Closed form.
``"nlls"``
    Nonlinear least squares of ``S = S0·exp(−R2*·TE) + C`` with a constant noise floor/offset
    ``C >= 0`` (e.g. Wood JC et al., Blood 2005;106:1460; Hernando D et al., MRM
    2013;70:1319 compare offset models), by Levenberg-Marquardt.
``"truncation"``
    Mono-exponential NLLS on the leading echoes only: late echoes whose signal fell to the
    noise floor are dropped per voxel (He T et al., Myocardial T2* measurements in
    iron-overloaded thalassemia: an in vivo study to investigate optimal methods of
    quantification, MRM 2008;60:1082; the method of the seed study, where echoes "below the
    noise level" were excluded). An echo is kept while its magnitude exceeds
    ``floor_factor`` times the noise floor, with at least ``min_echoes`` echoes; by default
    the kept echoes are also first-moment corrected for the Rician bias (``bias_correction``).
``"noise_corrected"``
    NLLS of the magnitudes to the expected magnitude of the Rician / non-central chi
    distribution, ``E[M](S0·exp(−R2*·TE), σ, N)`` (Feng Y et al., Improved MRI R2*
    relaxometry of iron-loaded liver with noise correction, MRM 2013;70:1765; Koay & Basser,
    J Magn Reson 2006;179:317), with σ known (given or estimated from the background).

R2* is clipped to :data:`R2STAR_RANGE_PER_S` = (0, 3000) 1/s by default: it covers iron
overload at 1.5 T and 3 T (R2* up to about 2000 1/s at 1.5 T, DESIGN section 5).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.relaxometry._lm import levenberg_marquardt
from qsmliver.relaxometry.noise import estimate_noise_sigma, noise_floor, noncentral_chi_mean

__all__ = [
    "DEFAULT_CHUNK_VOXELS",
    "R2STAR_METHODS",
    "R2STAR_RANGE_PER_S",
    "R2StarFit",
    "fit_r2star",
]

#: Methods of :func:`fit_r2star`.
R2STAR_METHODS = ("loglinear", "arlo", "nlls", "truncation", "noise_corrected")
#: Default range R2* (1/s) is clipped to (and bounded in the nonlinear fits).
R2STAR_RANGE_PER_S = (0.0, 3000.0)
#: Voxels fitted at once (bounds the memory of the nonlinear fits: about 1 kB per voxel).
DEFAULT_CHUNK_VOXELS = 262144

_NEEDS_SIGMA = ("truncation", "noise_corrected")
_OPTIONS = {
    "loglinear": {"weighting"},
    "arlo": set(),
    "nlls": {"max_iter", "tol"},
    "truncation": {"max_iter", "tol", "floor_factor", "min_echoes", "bias_correction",
                   "n_coils"},
    "noise_corrected": {"max_iter", "tol", "n_coils"},
}
_COMMON = {"r2star_range", "chunk_size"}
#: Options the CUDA kernel of "truncation" (``kernels/r2star_fit.cu``) implements; any other
#: option sends a CuPy fit to the vectorised path.
_KERNEL_OPTIONS = _OPTIONS["truncation"] | _COMMON


@dataclasses.dataclass(eq=False)
class R2StarFit:
    """Result of :func:`fit_r2star` (arrays on the backend of the input, zero outside the mask).

    Attributes
    ----------
    r2star_per_s : (...) ndarray
        R2* in 1/s, clipped to ``parameters["r2star_range_per_s"]``.
    s0 : (...) ndarray
        Signal at TE = 0, in the units of the magnitude.
    goodness : (...) ndarray
        Coefficient of determination R² (dimensionless, <= 1) of the fitted curve against the
        magnitudes over the echoes used; 1 is a perfect fit.
    method : str
        The method name.
    parameters : dict
        JSON-serialisable settings: echo times (s), noise σ, options, R2* range.
    n_echoes_used : (...) ndarray or None
        Echoes used per voxel (``"truncation"``), else None.
    offset : (...) ndarray or None
        Fitted constant offset ``C`` (``"nlls"``), else None.
    """

    r2star_per_s: Any
    s0: Any
    goodness: Any
    method: str
    parameters: dict
    n_echoes_used: Any = None
    offset: Any = None

    @property
    def t2star_ms(self):
        """T2* in ms (``1000 / R2*``; 0 where R2* is 0)."""
        xp = backend.get_array_module(self.r2star_per_s)
        r = self.r2star_per_s
        return xp.where(r > 0, 1000.0 / xp.where(r > 0, r, 1.0), 0.0).astype(r.dtype)


def fit_r2star(
    magnitude,
    te_s: ArrayLike,
    *,
    method: str = "loglinear",
    mask=None,
    noise_sigma: float | Any | None = None,
    use_kernel: bool | None = None,
    **options: Any,
) -> R2StarFit:
    """Fit R2* (and S0) voxel by voxel, vectorised over all voxels, on NumPy or CuPy.

    Parameters
    ----------
    magnitude : (..., E) ndarray
        Multi-echo magnitudes (complex input: its modulus), e.g. (X, Y, Z, E); NumPy or CuPy.
    te_s : (E,) array_like
        Echo times in seconds, strictly increasing.
    method : {"loglinear", "arlo", "nlls", "truncation", "noise_corrected"}
        See the module docstring.
    mask : (...) bool ndarray, optional
        Voxels to fit; default all. Results are 0 elsewhere.
    noise_sigma : float or (...) ndarray, optional
        Noise standard deviation per real/imaginary channel (magnitude units), scalar or per
        voxel. Needed by "truncation" and "noise_corrected"; default
        :func:`estimate_noise_sigma` on the whole ``magnitude`` (background air voxels).
    use_kernel : bool or None
        The CUDA kernel of the "truncation" fit (``kernels/r2star_fit.cu``, one GPU thread per
        voxel, no ``(N, E, P)`` temporaries; ``parameters["implementation"]`` then says
        "cuda-kernel"). None (default): used automatically for ``method="truncation"`` on
        CuPy input when every option is one the kernel implements; NumPy input and the other
        methods take the vectorised path. True: require it (QSMConfigError when it cannot
        run). False: always the vectorised path. The kernel agrees with the vectorised fit
        to about the LM tolerance, not bit for bit.
    **options
        ``r2star_range`` (lo, hi) in 1/s (default :data:`R2STAR_RANGE_PER_S`);
        ``chunk_size`` voxels per batch (default :data:`DEFAULT_CHUNK_VOXELS`);
        "loglinear": ``weighting`` "signal2" (default) or "none";
        nonlinear methods: ``max_iter`` (default 60), ``tol`` (1e-7);
        "truncation": ``floor_factor`` (default 2.0), ``min_echoes`` (default 2),
        ``bias_correction`` (default True: kept echoes ``√max(M² − σ²(2N−1), 0)``), ``n_coils``;
        "noise_corrected": ``n_coils`` (default 1, Rician).

    Returns
    -------
    R2StarFit

    Raises
    ------
    QSMInputError
        Echo count vs ``te_s`` mismatch, bad echo times, non-finite magnitudes, mask shape.
    QSMConfigError
        Unknown method or option; ARLO with non-uniform echo spacing; ``use_kernel=True``
        where the kernel cannot run.

    Examples
    --------
    >>> te = 0.99e-3 + 1.41e-3 * np.arange(12)
    >>> mag = 1000.0 * np.exp(-np.array([[50.0], [400.0]]) * te)
    >>> fit = fit_r2star(mag, te, method="loglinear")
    >>> np.round(fit.r2star_per_s, 3).tolist()
    [50.0, 400.0]
    """
    xp = backend.get_array_module(magnitude)
    if method not in R2STAR_METHODS:
        raise QSMConfigError(f"unknown R2* method {method!r}; use one of {R2STAR_METHODS}")
    if _kernel_applies(xp, method, options, use_kernel):
        from qsmliver.relaxometry import _gpu

        return _gpu._fit_with_kernel(xp, magnitude, te_s, mask, noise_sigma, options)
    mag, te = checked_magnitude(xp, magnitude, te_s, method, options)
    out_dtype = xp.float32 if mag.dtype in (xp.float32, xp.float16) else xp.float64
    spatial = mag.shape[:-1]
    vox_mask = _validate_mask(xp, mask, spatial)
    r_lo, r_hi = (float(v) for v in options.get("r2star_range", R2STAR_RANGE_PER_S))
    if not (0 <= r_lo < r_hi):
        raise QSMConfigError(f"r2star_range must be 0 <= lo < hi, got {(r_lo, r_hi)}")
    if method == "arlo":
        _check_uniform(te)

    sigma_map = None
    sigma_record: Any = None
    if method in _NEEDS_SIGMA:
        n_coils = int(options.get("n_coils", 1))
        if noise_sigma is None:
            noise_sigma = estimate_noise_sigma(mag, n_coils=n_coils)
        sigma_map = xp.broadcast_to(xp.asarray(noise_sigma, dtype=xp.float64), spatial)
        if not bool(xp.all(xp.isfinite(sigma_map))) or bool(xp.any(sigma_map[vox_mask] <= 0)):
            raise QSMInputError("noise sigma must be positive and finite", field="noise_sigma")
        sigma_record = (float(noise_sigma) if xp.ndim(xp.asarray(noise_sigma)) == 0
                        else "per-voxel map")

    y_all = mag[vox_mask].astype(xp.float64)  # (N, E)
    if not bool(xp.all(xp.isfinite(y_all))):
        raise QSMInputError("magnitude has non-finite values inside the mask", field="magnitude")
    sig_all = sigma_map[vox_mask] if sigma_map is not None else None
    chunk = max(1, int(options.get("chunk_size", DEFAULT_CHUNK_VOXELS)))
    te_x = xp.asarray(te)
    parts: dict[str, list] = {}
    for start in range(0, y_all.shape[0], chunk):
        y = y_all[start:start + chunk]
        sig = sig_all[start:start + chunk] if sig_all is not None else None
        result = _fit_decay(xp, method, y, te_x, sig, (r_lo, r_hi), options)
        for key, value in result.items():
            parts.setdefault(key, []).append(value)

    def scatter(key: str, dtype=out_dtype):
        full = xp.zeros(spatial, dtype=dtype)
        if parts.get(key):
            values = xp.concatenate(parts[key])
            values = xp.where(xp.isfinite(values), values, 0)
            full[vox_mask] = values.astype(dtype)
        return full

    rate = xp.clip(scatter("rate"), r_lo, r_hi) * vox_mask
    params: dict[str, Any] = {
        "method": method,
        "te_s": [float(t) for t in te],
        "r2star_range_per_s": [r_lo, r_hi],
        "goodness": "R2 (coefficient of determination) of the fit over the echoes used",
        **{k: _jsonable(v) for k, v in options.items() if k != "r2star_range"},
    }
    if sigma_record is not None:
        params["noise_sigma"] = sigma_record
    return R2StarFit(
        r2star_per_s=rate.astype(out_dtype),
        s0=scatter("s0"),
        goodness=scatter("goodness"),
        method=method,
        parameters=params,
        n_echoes_used=scatter("n_used", xp.int16) if "n_used" in parts else None,
        offset=scatter("offset") if "offset" in parts else None,
    )


def _kernel_applies(xp, method: str, options: dict[str, Any], use_kernel: bool | None) -> bool:
    """Whether :func:`fit_r2star` runs the CUDA kernel of "truncation" (see ``use_kernel``)."""
    if use_kernel is False:
        return False
    if use_kernel is not None and use_kernel is not True:
        raise QSMConfigError(f"use_kernel must be True, False or None, got {use_kernel!r}")
    reasons = []
    if method != "truncation":
        reasons.append(f"it implements method 'truncation' only, not {method!r}")
    if xp is np:
        reasons.append("the magnitudes are NumPy arrays (move them to the GPU first)")
    unsupported = sorted(set(options) - _KERNEL_OPTIONS)
    if unsupported:
        reasons.append(f"it does not implement option(s) {unsupported}")
    if use_kernel and reasons:
        raise QSMConfigError("use_kernel=True but the R2* CUDA kernel cannot run: "
                             + "; ".join(reasons))
    return not reasons


# -- the per-method workers on (N, E) arrays --------------------------------------------------
def checked_magnitude(xp, magnitude, te_s, method: str, options: dict[str, Any]):
    """``(magnitude, te)`` validated for ``method``: known options, real magnitudes, TEs."""
    unknown = set(options) - _OPTIONS[method] - _COMMON
    if unknown:
        raise QSMConfigError(f"R2* method {method!r} has no option(s) {sorted(unknown)}; "
                             f"it takes {sorted(_OPTIONS[method] | _COMMON)}")
    mag = xp.asarray(magnitude)
    if mag.dtype.kind == "c":
        mag = xp.abs(mag)
    return mag, _validate_te(te_s, mag)


def _fit_decay(xp, method: str, y, te, sigma, r_range, options) -> dict[str, Any]:
    """Fit one chunk: ``y`` (N, E) float64 magnitudes, ``sigma`` (N,) or None."""
    e = y.shape[-1]
    scale = xp.max(y, axis=-1)
    scale = xp.where(scale > 0, scale, 1.0)
    yn = y / scale[:, None]
    sig = None if sigma is None else sigma / scale
    ones = xp.ones_like(yn)
    max_iter = int(options.get("max_iter", 60))
    tol = float(options.get("tol", 1e-7))
    out: dict[str, Any] = {}
    if method == "loglinear":
        weighting = options.get("weighting", "signal2")
        if weighting not in ("signal2", "none"):
            raise QSMConfigError(f"weighting must be 'signal2' or 'none', got {weighting!r}")
        s0, rate = _loglinear(xp, yn, te, ones, weighted=weighting == "signal2")
        fitted = s0[:, None] * xp.exp(-rate[:, None] * te)
        use = ones
    elif method == "arlo":
        s0, rate = _arlo(xp, yn, te, r_range)
        fitted = s0[:, None] * xp.exp(-rate[:, None] * te)
        use = ones
    elif method == "nlls":
        s0, rate = _loglinear(xp, yn, te, ones, weighted=True)
        c0 = xp.maximum(xp.min(yn, axis=-1) * 0.5, 0.0)
        p0 = xp.stack([s0, xp.clip(rate, *r_range), c0], axis=-1)

        def model(p, rows=None):
            decay = xp.exp(-p[:, 1:2] * te)
            f = p[:, 0:1] * decay + p[:, 2:3]
            jac = xp.stack([decay, -p[:, 0:1] * te * decay, xp.ones_like(decay)], axis=-1)
            return f, jac

        p, _, _ = levenberg_marquardt(xp, model, p0, yn, ones, [0.0, r_range[0], 0.0],
                                      [np.inf, r_range[1], np.inf], max_iter=max_iter, tol=tol)
        s0, rate = p[:, 0], p[:, 1]
        out["offset"] = p[:, 2] * scale
        fitted, _ = model(p)
        use = ones
    elif method == "truncation":
        n_coils = int(options.get("n_coils", 1))
        factor = float(options.get("floor_factor", 2.0))
        min_echoes = int(options.get("min_echoes", 2))
        if not 2 <= min_echoes <= e:
            raise QSMConfigError(f"min_echoes must be between 2 and the echo count {e}")
        floor = noise_floor(sig, n_coils)
        above = (yn > factor * floor[:, None]).astype(xp.int8)
        n_used = xp.maximum(xp.sum(xp.cumprod(above, axis=-1), axis=-1), min_echoes)
        use = (xp.arange(e)[None, :] < n_used[:, None]).astype(yn.dtype)
        target = yn
        if options.get("bias_correction", True):
            target = xp.sqrt(xp.maximum(yn * yn - (2 * n_coils - 1) * (sig * sig)[:, None],
                                        (0.25 * yn) ** 2))
        s0, rate = _loglinear(xp, target, te, use, weighted=True)
        p0 = xp.stack([s0, xp.clip(rate, *r_range)], axis=-1)

        def model(p, rows=None):
            decay = xp.exp(-p[:, 1:2] * te)
            f = p[:, 0:1] * decay
            return f, xp.stack([decay, -p[:, 0:1] * te * decay], axis=-1)

        p, _, _ = levenberg_marquardt(xp, model, p0, target, use, [0.0, r_range[0]],
                                      [np.inf, r_range[1]], max_iter=max_iter, tol=tol)
        s0, rate = p[:, 0], p[:, 1]
        fitted, _ = model(p)
        out["n_used"] = n_used
    else:  # noise_corrected
        n_coils = int(options.get("n_coils", 1))
        first = _leading_estimate(xp, yn, te, sig, n_coils, r_range)
        sig_col = sig[:, None]

        def model(p, rows=None):
            decay = xp.exp(-p[:, 1:2] * te)
            amp = p[:, 0:1] * decay
            s_rows = sig_col if rows is None else sig_col[rows]
            f, slope = noncentral_chi_mean(amp, s_rows, n_coils, derivative=True)
            jac = xp.stack([slope * decay, -slope * p[:, 0:1] * te * decay], axis=-1)
            return f, jac

        p, _, _ = levenberg_marquardt(xp, model, first, yn, ones, [0.0, r_range[0]],
                                      [np.inf, r_range[1]], max_iter=max_iter, tol=tol)
        s0, rate = p[:, 0], p[:, 1]
        fitted, _ = model(p)
        use = ones
    target_y = yn if method != "truncation" else target
    out["goodness"] = _r_squared(xp, target_y, fitted, use)
    out["s0"] = s0 * scale
    out["rate"] = rate
    return out


def _loglinear(xp, y, te, use, *, weighted: bool):
    """Weighted LS of ln y on TE over the echoes with ``use`` > 0: returns (S0, R)."""
    tiny = 1e-12
    logy = xp.log(xp.maximum(y, tiny))
    w = use * (xp.maximum(y, tiny) ** 2 if weighted else 1.0)
    sw = xp.sum(w, axis=-1)
    st = xp.sum(w * te, axis=-1)
    stt = xp.sum(w * te * te, axis=-1)
    sl = xp.sum(w * logy, axis=-1)
    stl = xp.sum(w * te * logy, axis=-1)
    det = sw * stt - st * st
    ok = xp.abs(det) > 1e-30 * xp.maximum(sw * stt, 1e-300)
    det = xp.where(ok, det, 1.0)
    slope = xp.where(ok, (sw * stl - st * sl) / det, 0.0)
    intercept = (sl - slope * st) / xp.where(sw > 0, sw, 1.0)
    return xp.exp(xp.minimum(intercept, 700.0)), -slope


def _arlo(xp, y, te, r_range):
    """ARLO (Pei et al. MRM 2015;73:843) on uniformly spaced echoes: returns (S0, R)."""
    dt = float(te[1] - te[0])
    s_int = dt / 3.0 * (y[:, :-2] + 4.0 * y[:, 1:-1] + y[:, 2:])  # Simpson integrals
    d = y[:, :-2] - y[:, 2:]
    num = xp.sum(s_int * s_int, axis=-1) + dt / 3.0 * xp.sum(s_int * d, axis=-1)
    den = dt / 3.0 * xp.sum(d * d, axis=-1) + xp.sum(s_int * d, axis=-1)
    t2 = xp.where(den > 0, num / xp.where(den > 0, den, 1.0), np.inf)
    rate = xp.where((t2 > 0) & xp.isfinite(t2), 1.0 / xp.where(t2 > 0, t2, 1.0), r_range[0])
    rate = xp.clip(rate, *r_range)
    decay = xp.exp(-rate[:, None] * te)
    s0 = xp.sum(y * decay, axis=-1) / xp.maximum(xp.sum(decay * decay, axis=-1), 1e-300)
    return s0, rate


def _leading_estimate(xp, y, te, sigma, n_coils, r_range):
    """Start values for the noise-corrected fit: log-linear on echoes above 3 noise floors."""
    floor = noise_floor(sigma, n_coils)
    above = (y > 3.0 * floor[:, None]).astype(xp.int8)
    n_used = xp.maximum(xp.sum(xp.cumprod(above, axis=-1), axis=-1), 2)
    use = (xp.arange(y.shape[-1])[None, :] < n_used[:, None]).astype(y.dtype)
    s0, rate = _loglinear(xp, y, te, use, weighted=True)
    return xp.stack([s0, xp.clip(rate, *r_range)], axis=-1)


def _r_squared(xp, y, fitted, use):
    count = xp.maximum(xp.sum(use, axis=-1), 1.0)
    mean = xp.sum(use * y, axis=-1) / count
    ss_tot = xp.sum(use * (y - mean[:, None]) ** 2, axis=-1)
    ss_res = xp.sum(use * (y - fitted) ** 2, axis=-1)
    return xp.where(ss_tot > 0, 1.0 - ss_res / xp.where(ss_tot > 0, ss_tot, 1.0), 0.0)


# -- validation ---------------------------------------------------------------------------------
def _validate_te(te_s: ArrayLike, mag) -> np.ndarray:
    te = np.atleast_1d(np.asarray(backend.to_numpy(te_s), dtype=np.float64)).ravel()
    if mag.ndim < 1 or mag.shape[-1] != te.size:
        raise QSMInputError(f"{te.size} echo times for data with {mag.shape[-1] if mag.ndim else 0}"
                            " echoes on the last axis", field="EchoTime")
    if te.size < 2:
        raise QSMInputError("R2* fitting needs at least 2 echoes", field="EchoTime")
    if not np.all(np.isfinite(te)) or np.any(te < 0) or np.any(np.diff(te) <= 0):
        raise QSMInputError(f"echo times must be finite, >= 0 and increasing, got {te}",
                            field="EchoTime")
    if te.max() > 1.0:
        raise QSMInputError(f"echo times up to {te.max():g} s: give them in seconds",
                            field="EchoTime")
    return te


def _validate_mask(xp, mask, spatial: Sequence[int]):
    if mask is None:
        return xp.ones(tuple(spatial), dtype=bool)
    m = xp.asarray(mask)
    if tuple(m.shape) != tuple(spatial):
        raise QSMInputError(f"mask shape {tuple(m.shape)} does not match the data "
                            f"{tuple(spatial)}", field="mask")
    m = m.astype(bool)
    if not bool(xp.any(m)):
        raise QSMInputError("mask is empty", field="mask")
    return m


def _check_uniform(te: np.ndarray) -> None:
    if te.size < 3:
        raise QSMConfigError("ARLO needs at least 3 echoes")
    dte = np.diff(te)
    if np.max(np.abs(dte - dte.mean())) > 1e-3 * dte.mean():
        raise QSMConfigError("ARLO needs uniformly spaced echoes; use method 'nlls' or "
                             "'loglinear'")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value

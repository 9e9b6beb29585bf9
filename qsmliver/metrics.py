"""Image-quality metrics of the QSM reconstruction challenges: NRMSE, HFEN, XSIM, ROI slope.

All take NumPy or CuPy arrays (the array module comes from the data) and return Python floats.

References
----------
Langkammer C, Schweser F, Shmueli K, et al. Quantitative susceptibility mapping: report from
the 2016 reconstruction challenge. MRM 2018;79:1661-1673 (RMSE, HFEN, SSIM).
QSM Challenge 2.0 Organization Committee (Bilgic B, Langkammer C, Marques JP, et al.).
QSM reconstruction challenge 2.0: design and report of results. MRM 2021;86:1241-1255 (XSIM).
Ravishankar S, Bresler Y. MR image reconstruction from highly undersampled k-space data by
dictionary learning. IEEE TMI 2011;30:1028-1041 (HFEN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from qsmliver import backend
from qsmliver.errors import QSMInputError

__all__ = ["hfen", "log_kernel", "nrmse", "roi_slope", "xsim"]

Array = Any

#: XSIM constants of the QSM challenge 2.0: K1, K2 and the dynamic range L (ppm).
XSIM_K1, XSIM_K2, XSIM_L = 0.01, 0.001, 1.0
#: Gaussian window of the SSIM/XSIM statistics (σ in voxels, as in Wang et al. 2004).
XSIM_SIGMA = 1.5


def _prepare(estimate: Array, truth: Array, mask: Array | None, demean: bool):
    xp = backend.get_array_module(estimate, truth)
    est = xp.asarray(estimate, dtype=xp.float64)
    ref = xp.asarray(truth, dtype=xp.float64)
    if est.shape != ref.shape:
        raise QSMInputError(f"estimate shape {est.shape} does not match truth shape {ref.shape}")
    m = xp.ones(est.shape, dtype=bool) if mask is None else xp.asarray(mask) != 0
    if m.shape != est.shape:
        raise QSMInputError(f"mask shape {m.shape} does not match image shape {est.shape}")
    if not bool(m.any()):
        raise QSMInputError("mask is empty", field="mask")
    if demean:
        est = est - est[m].mean()
        ref = ref - ref[m].mean()
    return xp, est * m, ref * m, m


def nrmse(estimate: Array, truth: Array, mask: Array | None = None, demean: bool = True) -> float:
    """Normalised root-mean-square error in per cent (QSM challenge 2016 definition).

    ``100 ||x − y|| / ||y||`` over the mask, after subtracting each image's mean in the mask
    when ``demean`` (QSM has no absolute reference).

    Parameters
    ----------
    estimate, truth : (X, Y, Z) arrays
        χ in ppm.
    mask : (X, Y, Z) bool array, optional
        Evaluation region (everything when omitted).
    demean : bool

    Returns
    -------
    float
        Per cent; 0 for identical images.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.arange(8.0).reshape(2, 2, 2)
    >>> nrmse(y, y)
    0.0
    """
    xp, est, ref, m = _prepare(estimate, truth, mask, demean)
    denominator = float(xp.linalg.norm(ref[m]))
    if denominator == 0:
        raise QSMInputError("truth is constant (zero after demeaning) inside the mask")
    return 100.0 * float(xp.linalg.norm((est - ref)[m])) / denominator


def log_kernel(size: int = 15, sigma: float = 1.5) -> np.ndarray:
    """The 3-D Laplacian-of-Gaussian kernel of the challenge HFEN (zero sum), ``size³``."""
    half = (size - 1) / 2.0
    axis = np.arange(size) - half
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    r2 = x * x + y * y + z * z
    gauss = np.exp(-r2 / (2 * sigma**2))
    gauss /= gauss.sum()
    kernel = gauss * (r2 - 3 * sigma**2) / sigma**4
    return kernel - kernel.sum() / kernel.size


def _convolve_same(xp, image: Array, kernel: np.ndarray) -> Array:
    """Linear (zero-padded) convolution cropped to the image ('same'), by FFT."""
    fft = backend.fft(xp)
    k = xp.asarray(kernel)
    shape = [int(fft.next_fast_len(n + s - 1)) for n, s in zip(image.shape, k.shape, strict=True)]
    product = fft.irfftn(fft.rfftn(image, s=shape) * fft.rfftn(k, s=shape), s=shape)
    start = [(s - 1) // 2 for s in k.shape]
    return product[tuple(slice(a, a + n) for a, n in zip(start, image.shape, strict=True))]


def hfen(estimate: Array, truth: Array, mask: Array | None = None, demean: bool = True,
         *, size: int = 15, sigma: float = 1.5) -> float:
    """High-frequency error norm in per cent (QSM challenge 2016).

    ``100 ||LoG(x) − LoG(y)|| / ||LoG(y)||`` with the 15×15×15 Laplacian-of-Gaussian of
    σ = 1.5 voxels (:func:`log_kernel`) applied to the masked images (zero outside).

    Parameters
    ----------
    estimate, truth : (X, Y, Z) arrays
        χ in ppm.
    mask : (X, Y, Z) bool array, optional
    demean : bool
        Subtract each image's mean in the mask first.
    size, sigma : int, float
        LoG kernel size and width (voxels).

    Returns
    -------
    float
        Per cent.
    """
    xp, est, ref, m = _prepare(estimate, truth, mask, demean)
    kernel = log_kernel(size, sigma)
    filtered_ref = _convolve_same(xp, ref, kernel)
    filtered_diff = _convolve_same(xp, est - ref, kernel)
    denominator = float(xp.linalg.norm(filtered_ref[m]))
    if denominator == 0:
        raise QSMInputError("truth has no high-frequency content inside the mask")
    return 100.0 * float(xp.linalg.norm(filtered_diff[m])) / denominator


def xsim(estimate: Array, truth: Array, mask: Array | None = None, demean: bool = False) -> float:
    """XSIM, the structural similarity index adapted to QSM (QSM challenge 2.0).

    SSIM (Wang et al., IEEE TIP 2004;13:600) with Gaussian-weighted local statistics
    (σ = 1.5 voxels), computed on the masked images in ppm *without* rescaling them to a
    grey-level range, with ``K1 = 0.01``, ``K2 = 0.001`` and ``L = 1`` ppm, and averaged
    over the mask.

    Parameters
    ----------
    estimate, truth : (X, Y, Z) arrays
        χ in ppm.
    mask : (X, Y, Z) bool array, optional
    demean : bool
        Subtract each image's mean in the mask first (off by default, as in the challenge).

    Returns
    -------
    float
        1 for identical images.
    """
    xp, est, ref, m = _prepare(estimate, truth, mask, demean)
    nd = backend.ndimage(xp)

    def smooth(a):
        return nd.gaussian_filter(a, XSIM_SIGMA, mode="nearest", truncate=3.5)

    c1 = (XSIM_K1 * XSIM_L) ** 2
    c2 = (XSIM_K2 * XSIM_L) ** 2
    mu_x, mu_y = smooth(est), smooth(ref)
    var_x = smooth(est * est) - mu_x * mu_x
    var_y = smooth(ref * ref) - mu_y * mu_y
    cov = smooth(est * ref) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)
                / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)))
    return float(ssim_map[m].mean())


def roi_slope(estimate: Array, truth: Array, labels: Array,
              label_values: Sequence[int]) -> float:
    """Slope of the ROI means of ``estimate`` against those of ``truth``.

    Ordinary least squares with a free intercept over the regions ``labels == v`` for
    ``v`` in ``label_values`` (1 means the estimate has the right contrast scale).

    Parameters
    ----------
    estimate, truth : (X, Y, Z) arrays
        χ in ppm.
    labels : (X, Y, Z) int array
    label_values : sequence of int
        At least two non-empty regions with different true means.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.repeat([0.0, 0.1, 0.2], 4).reshape(3, 2, 2)
    >>> labels = np.repeat([1, 2, 3], 4).reshape(3, 2, 2)
    >>> round(roi_slope(2 * truth + 0.5, truth, labels, [1, 2, 3]), 12)
    2.0
    """
    xp = backend.get_array_module(estimate, truth, labels)
    est_means, true_means = [], []
    for value in label_values:
        region = labels == value
        count = int(region.sum())
        if count == 0:
            raise QSMInputError(f"label {value} has no voxels", field="labels")
        est_means.append(float(estimate[region].sum()) / count)
        true_means.append(float(truth[region].sum()) / count)
    if len(est_means) < 2:
        raise QSMInputError("roi_slope needs at least two regions", field="label_values")
    x = np.asarray(true_means)
    y = np.asarray(est_means)
    x_centred = x - x.mean()
    denominator = float(x_centred @ x_centred)
    if denominator == 0:
        raise QSMInputError("the true ROI means are all equal; the slope is undefined")
    del xp
    return float(x_centred @ (y - y.mean())) / denominator

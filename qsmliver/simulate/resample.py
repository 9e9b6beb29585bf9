"""Downsampling an oversampled simulation to the acquired grid, as an MRI scanner does.

A scanner measures a band-limited image: the k-space samples inside the acquired window,
nothing beyond it. A phantom simulated at ``factor`` times the acquired resolution becomes
such an image by keeping the central ``1/factor`` of its spectrum on every axis
(:func:`kspace_downsample`; the approach of QSM reconstruction challenge 2.0, Marques et al.,
Magn Reson Med 2021;86:526, and of qsm-forward). Tissue properties that are defined per voxel
(χ, R2*, proton density) are averaged over the ``factor³`` fine voxels that make up each
acquired voxel instead (:func:`block_mean`).

Both keep the acquired voxel centres where :func:`qsmliver.geometry.centred_affine` puts
them: acquired voxel ``i`` covers fine voxels ``factor·i … factor·i + factor − 1``, whose
centre lies ``(factor − 1)/2`` fine voxels after the first; the spectrum is shifted by that
amount (Fourier shift theorem) before it is cropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from qsmliver.errors import QSMConfigError

__all__ = ["block_mean", "kspace_downsample"]


def _check(array: np.ndarray, factor: int, axes: Sequence[int]) -> None:
    if isinstance(factor, bool) or int(factor) != factor or factor < 1:
        raise QSMConfigError(f"the downsampling factor must be a positive integer, got {factor!r}")
    for axis in axes:
        if array.shape[axis] % factor:
            raise QSMConfigError(f"axis {axis} of length {array.shape[axis]} is not a multiple "
                                 f"of the downsampling factor {factor}")


def kspace_downsample(array: NDArray, factor: int,
                      axes: Sequence[int] = (0, 1, 2)) -> NDArray:
    """Band-limit ``array`` to ``1/factor`` of its spectrum and sample it on the coarse grid.

    Parameters
    ----------
    array : ndarray
        Real or complex, sampled on the fine grid (``factor`` samples per coarse voxel along
        each of ``axes``).
    factor : int
        Oversampling factor (1 returns a copy).
    axes : sequence of int
        Spatial axes (other axes, e.g. echoes, are carried along).

    Returns
    -------
    ndarray
        Shape divided by ``factor`` along ``axes``; real input gives a real result (the
        imaginary part that the asymmetric Nyquist bin of an even size leaves is dropped),
        complex input a complex one, in the input's precision. The mean is preserved.

    Examples
    --------
    >>> fine = np.cos(2 * np.pi * (np.arange(16) + 0.5) / 16)  # one cycle over the FOV
    >>> coarse = kspace_downsample(fine, 2, axes=(0,))
    >>> bool(np.allclose(coarse, np.cos(2 * np.pi * (np.arange(8) + 0.5) / 8)))
    True
    """
    array = np.asarray(array)
    _check(array, factor, axes)
    if factor == 1:
        return array.copy()
    axes = tuple(int(a) for a in axes)
    spectrum = np.fft.fftn(array, axes=axes)
    slices: list[slice | NDArray] = [slice(None)] * array.ndim
    shift = (factor - 1) / 2.0  # fine voxels from the block's first voxel to its centre
    for axis in axes:
        n_fine = array.shape[axis]
        n = n_fine // factor
        k = np.fft.fftfreq(n_fine)  # cycles per fine voxel
        ramp = np.exp(2j * np.pi * k * shift).reshape(
            [-1 if a == axis else 1 for a in range(array.ndim)])
        spectrum = spectrum * ramp
        # the n lowest frequencies of the fine grid, in the coarse grid's FFT order
        keep = np.fft.fftfreq(n, 1.0 / n).astype(int) % n_fine
        slices[axis] = keep
        spectrum = spectrum[tuple(slices)]
        slices[axis] = slice(None)
    coarse = np.fft.ifftn(spectrum, axes=axes) / float(factor) ** len(axes)
    if np.iscomplexobj(array):
        return coarse.astype(array.dtype, copy=False)
    return coarse.real.astype(array.dtype if array.dtype.kind == "f" else np.float64,
                              copy=False)


def block_mean(array: NDArray, factor: int, axes: Sequence[int] = (0, 1, 2)) -> NDArray:
    """Mean of ``array`` over blocks of ``factor`` samples along each of ``axes``.

    Parameters
    ----------
    array : ndarray
        Sampled on the fine grid.
    factor : int
        Block size (1 returns a copy).
    axes : sequence of int
        Axes to average over.

    Returns
    -------
    ndarray
        Float (input precision for float input, float64 otherwise), shape divided by
        ``factor`` along ``axes``.
    """
    array = np.asarray(array)
    _check(array, factor, axes)
    out = array.astype(array.dtype if array.dtype.kind in "fc" else np.float64, copy=True)
    for axis in sorted(int(a) for a in axes):
        shape = list(out.shape)
        shape[axis : axis + 1] = [shape[axis] // factor, factor]
        out = out.reshape(shape).mean(axis=axis + 1)
    return out

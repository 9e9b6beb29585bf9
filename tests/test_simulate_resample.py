"""Downsampling an oversampled simulation to the acquired grid (qsmliver.simulate.resample)."""

import numpy as np
import pytest

from qsmliver.errors import QSMConfigError
from qsmliver.simulate.resample import block_mean, kspace_downsample


def _centres(n: int, factor: int = 1) -> np.ndarray:
    """Voxel-centre positions as fractions of the field of view (fine grid: ``n·factor``)."""
    m = n * factor
    return (np.arange(m) + 0.5) / m


def _band_limited(coords, shape) -> np.ndarray:
    """A sum of plane waves below the coarse grid's Nyquist frequency (cycles per FOV)."""
    x, y, z = np.meshgrid(*coords, indexing="ij")
    out = np.zeros(shape)
    for (kx, ky, kz), amp, phase in (((1, 0, 0), 1.0, 0.3), ((2, -3, 1), 0.5, 1.1),
                                     ((-3, 1, 2), 0.25, -0.7), ((0, 0, 3), 0.4, 2.0)):
        out += amp * np.cos(2 * np.pi * (kx * x + ky * y + kz * z) + phase)
    return out


@pytest.mark.parametrize("factor", [2, 3])
def test_band_limited_function_is_sampled_exactly_at_the_acquired_centres(factor):
    """A function inside the acquired band, sampled on the fine grid and downsampled, equals
    the same function sampled at the acquired voxel centres (the shift theorem keeps them
    where the centred affine puts them)."""
    n = (8, 10, 12)
    fine = _band_limited([_centres(k, factor) for k in n], tuple(k * factor for k in n))
    coarse = _band_limited([_centres(k) for k in n], n)
    out = kspace_downsample(fine, factor)
    assert out.shape == n and out.dtype == fine.dtype
    np.testing.assert_allclose(out, coarse, atol=1e-12)


def test_complex_echoes_are_carried_along():
    n, factor = (8, 8, 8), 2
    fine = _band_limited([_centres(k, factor) for k in n], tuple(k * factor for k in n))
    coarse = _band_limited([_centres(k) for k in n], n)
    echoes = np.stack([np.exp(1j * fine * t) for t in (0.02, 0.04)], axis=-1).astype(np.complex64)
    out = kspace_downsample(echoes, factor)
    assert out.shape == (*n, 2) and out.dtype == np.complex64
    # exp(iφ) is band-limited only to first order in φ: its out-of-band part is O(φ²/2)
    for echo, t in enumerate((0.02, 0.04)):
        error = np.abs(np.angle(out[..., echo]) - t * coarse).max()
        assert error <= np.abs(t * fine).max() ** 2, (echo, error)


def test_out_of_band_content_is_removed_and_the_mean_kept():
    n, factor = (8, 8, 8), 2
    x = _centres(n[0], factor)[:, None, None] * np.ones((1, 16, 16))
    fine = 3.0 + np.cos(2 * np.pi * 6 * x)  # 6 cycles: beyond the coarse Nyquist (4)
    out = kspace_downsample(fine, factor)
    np.testing.assert_allclose(out, 3.0, atol=1e-12)


def test_block_mean():
    rng = np.random.default_rng(0)
    fine = rng.standard_normal((6, 4, 8))
    out = block_mean(fine, 2)
    assert out.shape == (3, 2, 4)
    np.testing.assert_allclose(out[1, 0, 3], fine[2:4, 0:2, 6:8].mean())
    np.testing.assert_allclose(out.mean(), fine.mean())
    labels = np.ones((4, 4, 4), dtype=np.int16)
    assert block_mean(labels, 2).dtype == np.float64
    np.testing.assert_array_equal(block_mean(fine, 1), fine)


def test_bad_factor_or_shape():
    with pytest.raises(QSMConfigError, match="multiple"):
        kspace_downsample(np.zeros((5, 4, 4)), 2)
    with pytest.raises(QSMConfigError, match="positive integer"):
        block_mean(np.zeros((4, 4, 4)), 0)
    with pytest.raises(QSMConfigError, match="positive integer"):
        kspace_downsample(np.zeros((4, 4, 4)), 1.5)

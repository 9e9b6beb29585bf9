"""Chunked per-voxel stages and device-memory helpers of qsmliver.backend."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from qsmliver import backend
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.relaxometry import fit_r2star

TE = 0.99e-3 + 1.41e-3 * np.arange(12)


def _decays(rng, n=3000):
    r2star = rng.uniform(20.0, 1200.0, n)
    sigma = rng.uniform(5.0, 30.0, n)
    clean = 1000.0 * np.exp(-r2star[:, None] * TE)
    noise = rng.standard_normal(clean.shape) + 1j * rng.standard_normal(clean.shape)
    return np.abs(clean + sigma[:, None] * noise), sigma


@pytest.mark.parametrize("method", ["loglinear", "truncation"])
def test_chunked_r2star_fit_equals_unchunked(rng, method):
    """A per-voxel fit on (N, E) data in 2 kB chunks gives the unchunked result exactly."""
    mag, sigma = _decays(rng)
    calls = []

    def fit(m, s):
        calls.append(m.nbytes + s.nbytes)
        kwargs = {"noise_sigma": s[:, None]} if method == "truncation" else {}
        result = fit_r2star(m[:, None, :], TE, method=method, **kwargs)
        return result.r2star_per_s[:, 0], result.s0[:, 0]

    whole = fit(mag, sigma)
    calls.clear()
    rate, s0 = backend.chunked_apply(fit, (mag, sigma), max_bytes=2048)
    assert len(calls) == int(np.ceil(mag.shape[0] / (2048 // (13 * 8))))
    assert max(calls) <= 2048
    np.testing.assert_array_equal(rate, whole[0])
    np.testing.assert_array_equal(s0, whole[1])


def test_chunked_apply_other_axis_single_output_and_one_chunk(rng):
    data = rng.standard_normal((5, 1000))
    weights = rng.random(1000)
    expected = np.exp(data).sum(axis=0) * weights
    out = backend.chunked_apply(lambda d, w: np.exp(d).sum(axis=0) * w, [data, weights],
                                axis=-1, max_bytes=777)
    np.testing.assert_array_equal(out, expected)
    # enough room for everything: one call on the arrays themselves, no copy
    seen = []

    def double(d):
        seen.append(d)
        return d * 2

    out = backend.chunked_apply(double, data, axis=1)
    np.testing.assert_array_equal(out, data * 2)
    assert len(seen) == 1 and seen[0] is data


def test_chunked_apply_moves_chunks_to_a_device_and_back(rng):
    """With device='cpu' the chunks travel through to_device; results come back as NumPy."""
    data = rng.standard_normal((100, 4))
    out = backend.chunked_apply(lambda d: d.max(axis=1), data, max_bytes=256, device="cpu")
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, data.max(axis=1))


def test_chunked_apply_errors(rng):
    a, b = np.zeros((10, 3)), np.zeros(9)
    with pytest.raises(QSMInputError, match="different lengths"):
        backend.chunked_apply(lambda x, y: x, (a, b))
    with pytest.raises(QSMInputError, match="at least one"):
        backend.chunked_apply(lambda: None, ())
    with pytest.raises(QSMConfigError, match="max_bytes"):
        backend.chunked_apply(lambda x: x, a, max_bytes=0)
    with pytest.raises(QSMConfigError, match="keep that length"):
        backend.chunked_apply(lambda x: x.sum(axis=0), a, max_bytes=24)


def test_device_memory_info_and_fits_on_device_without_gpu():
    assert backend.device_memory_info("cpu") is None
    if backend.cupy_available():
        pytest.skip("a GPU is usable here; see the gpu test")
    assert backend.device_memory_info() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend.fits_on_device(1) is False  # nothing to fall back from: no warning


def test_fits_on_device_warns_clearly(monkeypatch):
    monkeypatch.setattr(backend, "device_memory_info", lambda device=None: (2**30, 2**32))
    assert backend.fits_on_device(500 * 2**20)
    with pytest.warns(backend.QSMDeviceMemoryWarning,
                      match=r"R2\* fit needs about 2\.00 GiB .* 1\.00 GiB free of 4\.00 GiB; "
                            "falling back to the CPU"):
        assert not backend.fits_on_device(2 * 2**30, what="R2* fit")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not backend.fits_on_device(2 * 2**30, warn=False)
    assert not backend.fits_on_device(int(0.95 * 2**30), headroom=0.9, warn=False)
    with pytest.raises(QSMConfigError, match="headroom"):
        backend.fits_on_device(1, headroom=0)
    with pytest.raises(QSMConfigError, match="nbytes"):
        backend.fits_on_device(-1)


@pytest.mark.gpu
def test_device_memory_and_chunks_on_gpu(rng):
    free, total = backend.device_memory_info()
    assert 0 < free <= total
    assert backend.fits_on_device(1024)
    mag, sigma = _decays(rng, 20000)

    def fit(m, s):
        return fit_r2star(m[:, None, :], TE, method="truncation",
                          noise_sigma=s[:, None]).r2star_per_s[:, 0]

    reference = backend.to_numpy(fit(backend.to_device(mag, "cuda"),
                                      backend.to_device(sigma, "cuda")))
    out = backend.chunked_apply(fit, (mag, sigma), max_bytes=2**18, device="cuda")
    assert isinstance(out, np.ndarray)  # host in, host out, GPU in between
    np.testing.assert_allclose(out, reference, rtol=1e-6)

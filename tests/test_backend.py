"""Backend: device resolution, array module dispatch, host/device moves, FFT and ndimage."""

from __future__ import annotations

import numpy as np
import pytest

from qsmliver import backend
from qsmliver.errors import QSMConfigError


def test_resolve_cpu_and_auto():
    assert backend.resolve_device("cpu") == backend.Device("cpu")
    assert backend.resolve_device(" CPU ") == backend.Device("cpu")
    auto = backend.resolve_device("auto")
    assert auto == backend.resolve_device(None)
    expected = "cuda" if backend.cupy_available() else "cpu"
    assert auto.kind == expected
    assert str(backend.Device("cuda", 1)) == "cuda:1"


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "cuda:-1", "", "cpu:0:1"])
def test_resolve_rejects_unknown(bad):
    with pytest.raises(QSMConfigError, match="unknown device"):
        backend.resolve_device(bad)


def test_cuda_request_without_gpu_is_clear(monkeypatch):
    monkeypatch.setitem(backend._cupy_state, "module", None)
    monkeypatch.setitem(backend._cupy_state, "reason", "CuPy is not installed")
    with pytest.raises(QSMConfigError, match="cuda:0.*CuPy is not installed"):
        backend.resolve_device("cuda:0")
    assert backend.resolve_device("auto").kind == "cpu"


def test_cuda_index_out_of_range():
    if not backend.cupy_available():
        pytest.skip("needs a GPU")
    with pytest.raises(QSMConfigError, match="only"):
        backend.resolve_device("cuda:999")


def test_round_trip_and_module(xp):
    host = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    device = "cpu" if xp is np else "cuda"
    moved = backend.to_device(host, device)
    assert backend.get_array_module(moved) is xp
    assert backend.device_of(moved).kind == device
    back = backend.to_numpy(moved)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, host)
    assert backend.to_numpy(host) is host  # no copy on the host


def test_get_array_module_mixed_inputs(xp):
    a = xp.zeros(3)
    assert backend.get_array_module(np.zeros(2), a) is xp
    assert backend.get_array_module(1.0, [1, 2]) is np


def test_fft_matches_numpy(xp, rng):
    data = rng.standard_normal((16, 12, 10)) + 1j * rng.standard_normal((16, 12, 10))
    fft = backend.fft(xp)
    result = backend.to_numpy(fft.ifftn(fft.fftn(xp.asarray(data))))
    np.testing.assert_allclose(result, data, atol=1e-12)
    spectrum = backend.to_numpy(fft.fftn(xp.asarray(data)))
    np.testing.assert_allclose(spectrum, np.fft.fftn(data), rtol=1e-10, atol=1e-9)
    freqs = backend.to_numpy(fft.fftfreq(8, d=0.5))
    np.testing.assert_allclose(freqs, np.fft.fftfreq(8, d=0.5))


def test_fft_workers_from_environment(monkeypatch):
    monkeypatch.setenv("QSMLIVER_FFT_WORKERS", "3")
    assert backend.fft(np).workers == 3


def test_ndimage_per_backend(xp):
    volume = xp.zeros((9, 9, 9))
    volume[4, 4, 4] = 1.0
    nd = backend.ndimage(xp)
    dilated = nd.binary_dilation(volume > 0, iterations=1)
    assert int(dilated.sum()) == 7
    smoothed = nd.gaussian_filter(volume, 1.0)
    assert float(smoothed.sum()) == pytest.approx(1.0, rel=1e-6)


def test_disable_gpu_environment(monkeypatch):
    monkeypatch.setattr(backend, "_cupy_state", {})
    monkeypatch.setenv("QSMLIVER_DISABLE_GPU", "1")
    assert not backend.cupy_available()
    assert "QSMLIVER_DISABLE_GPU" in backend.gpu_unavailable_reason()

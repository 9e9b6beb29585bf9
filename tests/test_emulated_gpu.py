"""The CuPy stand-in of ``tests/emulated_gpu.py`` enforces CuPy's host/device rules.

The stand-in runs the ``gpu`` tests in CI (``make test``'s second pass); a stand-in that let a
host/device mix-up through would make that pass meaningless, so each rule is checked here on
the fake modules directly (``build_modules``; nothing is installed in this process).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
from emulated_gpu import DeviceArray, build_modules


@pytest.fixture(scope="module")
def fake():
    return build_modules()


@pytest.fixture
def cupy(fake):
    return fake["cupy"]


def test_device_arrays_refuse_implicit_conversion(cupy):
    device = cupy.arange(6.0)
    for convert in (np.asarray, np.array, np.ascontiguousarray,
                    lambda a: scipy.ndimage.gaussian_filter(a, 1.0),
                    lambda a: scipy.fft.fftn(a)):
        with pytest.raises(TypeError, match="Implicit conversion"):
            convert(device)
    np.testing.assert_array_equal(device.get(), np.arange(6.0))
    np.testing.assert_array_equal(cupy.asnumpy(device), np.arange(6.0))


@pytest.mark.parametrize("operation", [
    lambda d, h: d + h, lambda d, h: h * d, lambda d, h: d < h,
    lambda d, h: np.add(d, h), lambda d, h: np.where(d > 0, h, 0.0),
])
def test_host_arrays_do_not_mix_into_device_operations(cupy, operation):
    with pytest.raises(TypeError, match="host array"):
        operation(cupy.ones(3), np.ones(3))


def test_cupy_functions_take_device_arrays_and_copy_host_ones(cupy):
    host = np.arange(4.0)
    with pytest.raises(TypeError, match="host array"):
        cupy.where(host > 1, host, 0.0)
    with pytest.raises(TypeError, match="host array"):
        cupy.concatenate([cupy.zeros(2), host])
    device = cupy.asarray(host)
    host[0] = 99.0  # the device copy does not share memory with the host array
    assert float(device[0]) == 0.0
    assert isinstance(cupy.where(device > 1, device, 0.0), DeviceArray)


def test_out_must_be_on_the_device(cupy):
    a = cupy.ones(3)
    with pytest.raises(TypeError, match="out="):
        cupy.multiply(a, 2.0, out=np.empty(3))
    out = cupy.empty(3)
    assert cupy.multiply(a, 2.0, out=out) is out  # CuPy returns the out= array itself
    np.testing.assert_array_equal(out.get(), [2.0, 2.0, 2.0])
    assert np.subtract(a, out, out=out) is out
    np.testing.assert_array_equal(out.get(), [-1.0, -1.0, -1.0])


def test_reductions_and_elements_are_zero_dimensional_device_arrays(cupy):
    a = cupy.arange(5.0)
    for value in (a.sum(), cupy.max(a), a[2], np.mean(a)):
        assert isinstance(value, DeviceArray) and value.ndim == 0
    assert float(a.sum()) == 10.0 and int(a[2]) == 2 and bool(a.any())
    assert f"{a.mean():.1f}" == "2.0"


def test_numpy_functions_dispatch_to_the_device(cupy):
    a = cupy.asarray(np.array([[3.0, 1.0], [2.0, 5.0]]))
    result = np.linalg.norm(a)
    assert isinstance(result, DeviceArray)
    assert float(result) == pytest.approx(np.sqrt(39.0))
    assert isinstance(np.flatnonzero(a > 2), DeviceArray)


def test_indexing_and_assignment(cupy):
    a = cupy.zeros((3, 4))
    with pytest.raises(TypeError, match="host array"):
        a[np.array([True, False, True])] = 1.0
    with pytest.raises(TypeError, match="host array"):
        a[0] = np.ones(4)
    a[cupy.asarray(np.array([True, False, True]))] = 1.0
    a[1, cupy.asarray(np.array([0, 3]))] = cupy.asarray(np.array([5.0, 6.0]))
    np.testing.assert_array_equal(a.get(), [[1, 1, 1, 1], [5, 0, 0, 6], [1, 1, 1, 1]])
    a.real = cupy.full((3, 4), 2.0)
    assert float(a.sum()) == 24.0


def test_ndimage_and_fft_take_device_input(fake, cupy):
    ndimage, fft = fake["cupyx.scipy.ndimage"], fake["cupyx.scipy.fft"]
    host = np.zeros((5, 5, 5), dtype=bool)
    host[1:4, 1:4, 1:4] = True
    with pytest.raises(TypeError, match="cupy.ndarray"):
        ndimage.binary_erosion(host)
    eroded = ndimage.binary_erosion(cupy.asarray(host))
    assert isinstance(eroded, DeviceArray)
    np.testing.assert_array_equal(eroded.get(), scipy.ndimage.binary_erosion(host))
    labels, count = ndimage.label(cupy.asarray(host))
    assert isinstance(labels, DeviceArray) and count == 1
    spectrum = fft.rfftn(cupy.asarray(host.astype(np.float32)))
    assert isinstance(spectrum, DeviceArray) and spectrum.dtype == np.complex64
    with pytest.raises(TypeError, match="host array"):
        fft.fftn(host)


def test_the_emulated_complex_kernels(cupy):
    z = cupy.asarray(np.array([3 + 4j, -1j], dtype=np.complex64))
    magnitude, phase = cupy.empty(2, dtype=np.float32), cupy.empty(2, dtype=np.float32)
    cupy.RawModule(code="").get_function("complex_to_polar")((1,), (2,),
                                                             (z, magnitude, phase, np.int64(2)))
    np.testing.assert_allclose(magnitude.get(), [5.0, 1.0])
    np.testing.assert_allclose(phase.get(), [np.arctan2(4, 3), -np.pi / 2], rtol=1e-6)


def test_install_makes_the_backend_see_a_gpu():
    """In a fresh interpreter: after ``install`` the pipeline's device path runs on the fake."""
    code = (
        "import emulated_gpu, numpy as np\n"
        "from qsmliver import backend\n"
        "cupy = emulated_gpu.install()\n"
        "x = backend.to_device(np.arange(4.0), 'cuda')\n"
        "assert backend.get_array_module(x) is cupy and str(backend.device_of(x)) == 'cuda:0'\n"
        "assert backend.fft(cupy).backend == 'cupy'\n"
        "y = backend.fft(cupy).irfftn(backend.fft(cupy).rfftn(x), s=(4,))\n"
        "np.testing.assert_allclose(backend.to_numpy(y), np.arange(4.0), atol=1e-12)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).parent, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

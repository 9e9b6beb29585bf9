"""CUDA kernels: every source compiles with nvcc (where nvcc exists) and matches its NumPy twin."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from qsmliver import backend
from qsmliver.complexops import complex_to_polar, polar_to_complex

KERNEL_FAMILIES = backend.list_kernel_sources()


def test_kernel_sources_are_shipped():
    assert "complex_ops" in KERNEL_FAMILIES
    source = backend.kernel_source("complex_ops", np.float64)
    assert source.startswith("#define real_t double\n")
    assert "complex_to_polar" in source


def test_kernel_source_rejects_other_dtypes():
    with pytest.raises(ValueError, match="float32 and float64"):
        backend.kernel_source("complex_ops", np.int16)
    with pytest.raises(FileNotFoundError, match="complex_ops"):
        backend.kernel_source("no_such_family")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("family", KERNEL_FAMILIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_kernel_compiles_with_nvcc(tmp_path, family, dtype):
    """Compile exactly the source the loader would hand to cupy.RawModule."""
    source = tmp_path / f"{family}.cu"
    source.write_text(backend.kernel_source(family, dtype))
    result = subprocess.run(
        ["nvcc", "--ptx", "-std=c++14", "-o", str(tmp_path / f"{family}.ptx"), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    ptx = (tmp_path / f"{family}.ptx").read_text()
    assert ".entry" in ptx


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_polar_round_trip(xp, rng, dtype):
    shape = (7, 6, 5, 3)
    host = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    z = xp.asarray(host)
    magnitude, phase = complex_to_polar(z)
    real_dtype = np.float32 if dtype == np.complex64 else np.float64
    assert magnitude.dtype == real_dtype and phase.dtype == real_dtype
    tol = 1e-6 if dtype == np.complex64 else 1e-13
    np.testing.assert_allclose(backend.to_numpy(magnitude), np.abs(host), rtol=tol)
    np.testing.assert_allclose(backend.to_numpy(phase), np.angle(host), atol=tol * 4)
    rebuilt = polar_to_complex(magnitude, phase)
    assert rebuilt.dtype == dtype
    np.testing.assert_allclose(backend.to_numpy(rebuilt), host, rtol=tol * 10, atol=tol * 10)


def test_polar_to_complex_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        polar_to_complex(np.ones(3), np.ones(4))


@pytest.mark.gpu
def test_complex_ops_kernel_parity_with_numpy_twin(rng):
    """The raw kernel against the NumPy reference, on non-contiguous (Fortran) input."""
    cupy = backend._cupy()
    host = (rng.standard_normal((33, 17, 9)) + 1j * rng.standard_normal((33, 17, 9)))
    host = np.asfortranarray(host.astype(np.complex64))
    magnitude, phase = complex_to_polar(cupy.asarray(host))
    ref_mag, ref_phase = np.abs(host), np.angle(host)
    rel = np.linalg.norm(backend.to_numpy(magnitude) - ref_mag) / np.linalg.norm(ref_mag)
    assert rel < 1e-6
    assert np.max(np.abs(backend.to_numpy(phase) - ref_phase)) < 1e-5

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


# -- tv_update and r2star_fit: the kernel sources run on the host, and GPU parity ---------------
# Without a GPU the CUDA sources are still executed: compiled as C++ for the host with the
# CUDA built-ins defined for a single serial thread (blockDim = gridDim = 1, so each grid-stride
# loop visits every voxel in order). That checks the index arithmetic, boundaries and the
# arithmetic of the very source cupy.RawModule compiles; the parity tests marked gpu check the
# compiled device code.
import ctypes  # noqa: E402

from qsmliver.errors import QSMInputError  # noqa: E402
from qsmliver.optim import divergence, gradient, soft_threshold  # noqa: E402
from qsmliver.optim.fused import (  # noqa: E402
    tv_grad_adjoint,
    tv_shrink_update,
    tv_shrink_update_adjoint,
)
from qsmliver.relaxometry import fit_r2star  # noqa: E402
from qsmliver.relaxometry._gpu import fit_r2star_truncation  # noqa: E402

_HOST_SHIM = """
#include <math.h>
struct qsm_dim3 { unsigned int x, y, z; };
static const qsm_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0};
static const qsm_dim3 blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
#define __global__
#define __device__
#define __forceinline__ inline
"""
_HOST_LIBS: dict[tuple[str, str], ctypes.CDLL] = {}
_REAL_C = {np.float32: ctypes.c_float, np.float64: ctypes.c_double}

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not on PATH")


def host_kernels(family, dtype, tmp_path_factory):
    """The kernel source compiled for the host (serial CUDA built-ins), loaded with ctypes."""
    key = (family, np.dtype(dtype).name)
    if key not in _HOST_LIBS:
        folder = tmp_path_factory.mktemp(f"host-{family}-{key[1]}")
        source = folder / f"{family}.cpp"
        source.write_text(_HOST_SHIM + backend.kernel_source(family, dtype))
        library = folder / f"{family}.so"
        result = subprocess.run(
            ["g++", "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-o", str(library),
             str(source)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        _HOST_LIBS[key] = ctypes.CDLL(str(library))
    return _HOST_LIBS[key]


def _ptr(array):
    return ctypes.c_void_p(array.ctypes.data)


def host_tv(lib, name, dtype, *arrays, shape, voxel, threshold=None, neumann=False):
    real = _REAL_C[dtype]
    function = getattr(lib, name)
    scalars = [real(dtype(v)) for v in voxel]
    if threshold is not None:
        scalars.append(real(dtype(threshold)))
    function.argtypes = ([ctypes.c_void_p] * len(arrays) + [ctypes.c_longlong] * 3
                         + [real] * len(scalars) + [ctypes.c_int])
    function(*[_ptr(a) for a in arrays], *[ctypes.c_longlong(n) for n in shape], *scalars,
             ctypes.c_int(int(neumann)))


@needs_gxx
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("boundary", ["periodic", "neumann"])
@pytest.mark.parametrize("shape", [(7, 6, 5), (5, 1, 4)], ids=["7x6x5", "5x1x4"])
def test_tv_update_source_on_host_equals_twin_bitwise(tmp_path_factory, rng, dtype, boundary,
                                                      shape):
    """All three kernels of tv_update.cu against the chained operations, to the last bit."""
    lib = host_kernels("tv_update", dtype, tmp_path_factory)
    voxel = (0.9, 1.1, 2.5)
    threshold = 0.4
    chi = rng.standard_normal(shape).astype(dtype)
    s1 = (0.3 * rng.standard_normal((3, *shape))).astype(dtype)
    neumann = boundary == "neumann"
    # the chained reference, written out from the operators (not through fused.py)
    g = gradient(chi, voxel, boundary)
    z1 = soft_threshold(g + s1, dtype(threshold))
    s1_ref = s1 + (g - z1)
    u_ref = z1 - s1_ref
    adjoint_ref = -divergence(u_ref, voxel, boundary)
    assert np.count_nonzero(z1) and np.count_nonzero(z1 == 0)  # both branches of the shrink

    s1_new, u = np.empty_like(s1), np.empty_like(s1)
    host_tv(lib, "tv_shrink_update", dtype, chi, s1, s1_new, u, shape=shape, voxel=voxel,
            threshold=threshold, neumann=neumann)
    np.testing.assert_array_equal(s1_new, s1_ref)
    np.testing.assert_array_equal(u, u_ref)
    in_place = s1.copy()  # s1_new aliasing s1 (the in-place variant)
    host_tv(lib, "tv_shrink_update", dtype, chi, in_place, in_place, u, shape=shape, voxel=voxel,
            threshold=threshold, neumann=neumann)
    np.testing.assert_array_equal(in_place, s1_ref)

    adjoint = np.empty_like(chi)
    host_tv(lib, "tv_grad_adjoint", dtype, u_ref, adjoint, shape=shape, voxel=voxel,
            neumann=neumann)
    np.testing.assert_array_equal(adjoint, adjoint_ref)

    fused, s1_fused = np.empty_like(chi), np.empty_like(s1)
    host_tv(lib, "tv_shrink_update_adjoint", dtype, chi, s1, s1_fused, fused, shape=shape,
            voxel=voxel, threshold=threshold, neumann=neumann)
    np.testing.assert_array_equal(s1_fused, s1_ref)
    np.testing.assert_array_equal(fused, adjoint_ref)
    # and the Python twins of fused.py are the same chain
    u_twin, s1_twin = tv_shrink_update(chi, s1, threshold, voxel, boundary=boundary)
    np.testing.assert_array_equal(u_twin, u_ref)
    np.testing.assert_array_equal(s1_twin, s1_ref)
    np.testing.assert_array_equal(tv_grad_adjoint(u_ref, voxel, boundary=boundary), adjoint_ref)
    fused_twin, _ = tv_shrink_update_adjoint(chi, s1, threshold, voxel, boundary=boundary)
    np.testing.assert_array_equal(fused_twin, adjoint_ref)


def _liver_decays(rng, n_voxels=1500):
    """Rician mono-exponential decays (seed protocol, 12 echoes) with R2* 20-1500 1/s."""
    te = 0.99e-3 + 1.41e-3 * np.arange(12)
    r2star = rng.uniform(20.0, 1500.0, n_voxels)
    sigma = 1000.0 / rng.uniform(15.0, 80.0, n_voxels)  # SNR 15-80 at the first echo
    clean = 1000.0 * np.exp(-r2star[:, None] * (te - te[0]))
    noise = rng.standard_normal(clean.shape) + 1j * rng.standard_normal(clean.shape)
    return np.abs(clean + sigma[:, None] * noise), te, sigma, r2star


def host_r2star(lib, dtype, mag, te, sigma, *, floor_factor=2.0, min_echoes=2, bias=True,
                n_coils=1, r_range=(0.0, 3000.0), max_iter=60, tol=1e-7):
    import math

    n, n_echo = mag.shape
    outs = [np.empty(n) for _ in range(3)] + [np.empty(n, dtype=np.int32)]
    function = lib.r2star_truncation_fit
    d, i = ctypes.c_double, ctypes.c_int
    function.argtypes = ([ctypes.c_void_p] * 3 + [ctypes.c_longlong, i, d, d, d, i, i, d, d, d,
                                                  i, d] + [ctypes.c_void_p] * 4)
    y = np.ascontiguousarray(mag, dtype=dtype)
    sig = np.ascontiguousarray(np.broadcast_to(sigma, (n,)), dtype=np.float64)
    te = np.ascontiguousarray(te, dtype=np.float64)
    function(_ptr(y), _ptr(sig), _ptr(te), n, n_echo, floor_factor, math.sqrt(2.0),
             math.exp(math.lgamma(n_coils + 0.5) - math.lgamma(n_coils)), min_echoes, int(bias),
             float(2 * n_coils - 1), *r_range, max_iter, tol, *[_ptr(o) for o in outs])
    return outs


@needs_gxx
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_r2star_fit_source_on_host_matches_twin(tmp_path_factory, rng, dtype):
    """The kernel's per-thread fit against fit_r2star(method="truncation") on the same data."""
    lib = host_kernels("r2star_fit", dtype, tmp_path_factory)
    mag, te, sigma, truth = _liver_decays(rng)
    mag = mag.astype(dtype)
    twin = fit_r2star(mag, te, method="truncation", noise_sigma=sigma)
    rate, s0, goodness, n_used = host_r2star(lib, dtype, mag, te, sigma)
    np.testing.assert_array_equal(n_used, twin.n_echoes_used)
    rate = np.clip(rate, 0, 3000).astype(twin.r2star_per_s.dtype)
    rel = np.abs(rate - twin.r2star_per_s) / twin.r2star_per_s
    assert np.median(rel) < 1e-9 and np.quantile(rel, 0.99) < 1e-5, (np.median(rel), rel.max())
    assert np.max(rel) < 1e-3
    np.testing.assert_allclose(s0, twin.s0, rtol=1e-3)
    np.testing.assert_allclose(goodness, twin.goodness, atol=1e-5)
    # and it measures R2* (20-1500 1/s, SNR 15-80): measured median |error| 3.5 %, bias < 1 %
    error = rate / truth - 1
    assert np.median(np.abs(error)) < 0.06 and abs(np.median(error)) < 0.015
    # without truncation and bias correction: a plain mono-exponential fit on all echoes
    plain = fit_r2star(mag, te, method="truncation", noise_sigma=sigma, floor_factor=0.0,
                       bias_correction=False)
    rate_plain, _, _, used_plain = host_r2star(lib, dtype, mag, te, sigma, floor_factor=0.0,
                                               bias=False)
    assert np.all(used_plain == te.size)
    rel = np.abs(rate_plain - plain.r2star_per_s) / plain.r2star_per_s
    assert np.quantile(rel, 0.99) < 1e-5 and np.max(rel) < 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("boundary", ["periodic", "neumann"])
def test_tv_update_kernels_parity_with_numpy_twin(rng, dtype, boundary):
    """Device kernels against the twin on Fortran-ordered input: equal to the last bit.

    The PTX of tv_update has IEEE round-to-nearest divisions and no multiply-add except
    ``± 1 · m`` (exact), so the device values equal NumPy's (signs of zeros aside).
    """
    cupy = backend._cupy()
    shape = (37, 29, 18)
    voxel = (0.75, 0.8, 1.5)
    chi = np.asfortranarray(rng.standard_normal(shape).astype(dtype))
    s1 = np.asfortranarray((0.3 * rng.standard_normal((3, *shape))).astype(dtype))
    u_ref, s1_ref = tv_shrink_update(chi, s1, 0.4, voxel, boundary=boundary)
    adjoint_ref = tv_grad_adjoint(u_ref, voxel, boundary=boundary)
    chi_d, s1_d = cupy.asarray(chi), cupy.asarray(s1)
    u, s1_new = tv_shrink_update(chi_d, s1_d, 0.4, voxel, boundary=boundary)
    np.testing.assert_array_equal(backend.to_numpy(u), u_ref)
    np.testing.assert_array_equal(backend.to_numpy(s1_new), s1_ref)
    np.testing.assert_array_equal(backend.to_numpy(s1_d), s1)  # not in place by default
    adjoint = tv_grad_adjoint(cupy.asarray(u_ref), voxel, boundary=boundary)
    np.testing.assert_array_equal(backend.to_numpy(adjoint), adjoint_ref)
    fused, s1_fused = tv_shrink_update_adjoint(chi_d, s1_d, 0.4, voxel, boundary=boundary)
    np.testing.assert_array_equal(backend.to_numpy(fused), adjoint_ref)
    np.testing.assert_array_equal(backend.to_numpy(s1_fused), s1_ref)
    in_place = cupy.asarray(s1)
    _, returned = tv_shrink_update(chi_d, in_place, 0.4, voxel, boundary=boundary, inplace=True)
    assert returned is in_place
    np.testing.assert_array_equal(backend.to_numpy(in_place), s1_ref)


@pytest.mark.gpu
def test_tv_fused_kernel_refuses_overlapping_output(rng):
    cupy = backend._cupy()
    chi = cupy.asarray(rng.standard_normal((8, 8, 8)))
    s1 = cupy.zeros((3, 8, 8, 8))
    with pytest.raises(QSMInputError, match="overlap"):
        tv_shrink_update_adjoint(chi, s1, 0.1, (1, 1, 1), s1_out=s1)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_r2star_kernel_parity_with_vectorised_fit(rng, dtype):
    cupy = backend._cupy()
    mag, te, sigma, truth = _liver_decays(rng, 4000)
    volume = mag.reshape(20, 20, 10, te.size).astype(dtype)
    sigma_map = sigma.reshape(20, 20, 10)
    mask = np.ones((20, 20, 10), bool)
    mask[0] = False
    twin = fit_r2star(volume, te, method="truncation", mask=mask, noise_sigma=sigma_map)
    fit = fit_r2star_truncation(cupy.asarray(volume), te, mask=cupy.asarray(mask),
                                noise_sigma=cupy.asarray(sigma_map), use_kernel=True)
    assert fit.parameters["implementation"] == "cuda-kernel"
    assert fit.r2star_per_s.dtype == twin.r2star_per_s.dtype
    rate, ref = backend.to_numpy(fit.r2star_per_s)[mask], twin.r2star_per_s[mask]
    rel = np.abs(rate - ref) / ref
    assert np.median(rel) < 1e-6 and np.quantile(rel, 0.99) < 1e-4 and rel.max() < 1e-2
    np.testing.assert_array_equal(backend.to_numpy(fit.n_echoes_used), twin.n_echoes_used)
    np.testing.assert_allclose(backend.to_numpy(fit.s0), twin.s0, rtol=1e-2)
    assert np.all(backend.to_numpy(fit.r2star_per_s)[~mask] == 0)
    error = rate / truth.reshape(20, 20, 10)[mask] - 1
    assert np.median(np.abs(error)) < 0.06 and abs(np.median(error)) < 0.015

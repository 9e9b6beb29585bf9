"""Shared fixtures: the ``xp`` backend fixture, the shared real-data folder, small phantoms."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from qsmliver import backend

#: Real scanner data beside the repository (never copied into it); tests skip when absent.
SHARED_DATA = Path(
    os.environ.get("QSMLIVER_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared"
                   / "data")
).resolve()


#: ``QSMLIVER_EMULATE_GPU=1``: run the ``gpu`` tests and the ``xp="cupy"`` cases against the CuPy
#: stand-in of ``tests/emulated_gpu.py`` (NumPy behind CuPy's host/device rules), on any machine.
EMULATE_GPU = os.environ.get("QSMLIVER_EMULATE_GPU", "") not in ("", "0")


def pytest_configure(config):
    if EMULATE_GPU:
        import emulated_gpu

        emulated_gpu.install()


def _backends():
    params = [pytest.param("numpy", id="numpy")]
    params.append(pytest.param("cupy", id="cupy", marks=pytest.mark.gpu))
    return params


#: Test modules about the compiled CUDA kernels themselves: nothing to check under emulation.
KERNEL_MODULES = ("test_kernels.py",)


def pytest_collection_modifyitems(config, items):
    if EMULATE_GPU:
        skip_kernels = pytest.mark.skip(reason="compiled CUDA kernels are not emulated")
        for item in items:
            if item.path.name in KERNEL_MODULES:
                item.add_marker(skip_kernels)
        return
    if backend.cupy_available():
        return
    skip_gpu = pytest.mark.skip(reason=f"no GPU: {backend.gpu_unavailable_reason()}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(params=_backends())
def xp(request):
    """The array module under test: NumPy always, CuPy where a GPU is usable."""
    if request.param == "numpy":
        return np
    if not backend.cupy_available():
        pytest.skip(f"no GPU: {backend.gpu_unavailable_reason()}")
    return backend._cupy()


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``; skips the test when the folder is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real scanner data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261121)


def make_complex_echoes(shape=(12, 10, 8), te_s=(0.004, 0.008, 0.012, 0.016), seed=0):
    """A smooth synthetic complex multi-echo volume (magnitude decays, phase evolves with TE).

    Returns complex128 echoes of shape ``shape + (len(te_s),)`` whose phase wraps in later
    echoes, with magnitude well above zero so that phase is defined everywhere.
    """
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    field_hz = 40.0 * grids[0] + 25.0 * grids[1] ** 2 - 30.0 * grids[2] + 5.0 * rng.standard_normal(
        shape
    )
    phi0 = 0.8 * grids[1] - 0.5
    s0 = 800.0 + 300.0 * np.cos(2 * grids[0]) + 50 * rng.random(shape)
    r2s = 30.0 + 10.0 * grids[2] ** 2
    te = np.asarray(te_s)[None, None, None, :]
    return (s0[..., None] * np.exp(-r2s[..., None] * te)
            * np.exp(1j * (2 * np.pi * field_hz[..., None] * te + phi0[..., None])))


def oblique_affine(rot_x_deg=0.0, rot_y_deg=0.0, voxel_mm=(0.8, 0.9, 1.5),
                   origin_mm=(-40.5, 12.25, 31.0)):
    """A RAS affine with anisotropic voxels, rotated about x then y, and translated."""
    ax, ay = np.deg2rad(rot_x_deg), np.deg2rad(rot_y_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    affine = np.eye(4)
    affine[:3, :3] = rx @ ry @ np.diag(voxel_mm)
    affine[:3, 3] = origin_mm
    return affine


def fail_nth_nifti_save(monkeypatch, n: int = 2) -> None:
    """Make the n-th ``nibabel.save`` call raise OSError (disk full), the others save."""
    import nibabel as nib

    real_save = nib.save
    calls = {"n": 0}

    def failing_save(image, filename):
        calls["n"] += 1
        if calls["n"] == n:
            raise OSError("No space left on device")
        return real_save(image, filename)

    monkeypatch.setattr(nib, "save", failing_save)

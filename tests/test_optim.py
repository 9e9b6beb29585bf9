"""Shared operators and solvers: adjointness, exact k-space symbols, CG/LSQR on known systems."""

import numpy as np
import pytest

from qsmliver.errors import QSMNumericalError
from qsmliver.optim import (
    LinearOperator,
    adjointness_error,
    conjugate_gradient,
    divergence,
    gradient,
    gradient_kernel,
    lsqr,
    soft_threshold,
)


@pytest.mark.parametrize("boundary", ["periodic", "neumann"])
def test_gradient_divergence_adjoint(xp, boundary):
    rng = np.random.default_rng(1)
    voxel = (1.0, 0.7, 2.0)
    x = xp.asarray(rng.standard_normal((9, 8, 7)))
    g = xp.asarray(rng.standard_normal((3, 9, 8, 7)))
    op = LinearOperator(lambda a: gradient(a, voxel, boundary),
                        lambda b: -divergence(b, voxel, boundary), "grad")
    assert adjointness_error(op, x, g) < 1e-13


def test_adjointness_error_detects_wrong_adjoint():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 6, 6))
    g = rng.standard_normal((3, 6, 6, 6))
    op = LinearOperator(gradient, lambda b: divergence(b), "grad with wrong sign")
    assert adjointness_error(op, x, g) > 1e-3


def test_gradient_kernel_matches_finite_differences():
    rng = np.random.default_rng(3)
    voxel = (1.0, 1.5, 0.5)
    x = rng.standard_normal((8, 6, 5))
    kernel = gradient_kernel(x.shape, voxel)
    via_fft = np.real(np.fft.ifftn(kernel * np.fft.fftn(x)[None], axes=(1, 2, 3)))
    np.testing.assert_allclose(via_fft, gradient(x, voxel), atol=1e-12)


def test_gradient_of_linear_ramp_is_its_slope():
    ramp = np.arange(10.0)[:, None, None] * np.ones((10, 4, 4)) * 3.0
    g = gradient(ramp, (0.5, 1, 1), boundary="neumann")
    np.testing.assert_allclose(g[0, :-1], 6.0)
    assert np.all(g[0, -1] == 0) and np.all(g[1:] == 0)


def test_cg_solves_spd_system(xp):
    rng = np.random.default_rng(4)
    m = rng.standard_normal((30, 30))
    a = xp.asarray(m @ m.T + 30 * np.eye(30))
    truth = xp.asarray(rng.standard_normal(30))
    x, info = conjugate_gradient(lambda v: a @ v, a @ truth, max_iter=200, tol=1e-12)
    assert info.converged and info.iterations <= 60
    assert float(xp.linalg.norm(x - truth) / xp.linalg.norm(truth)) < 1e-9


def test_cg_reports_non_finite_operator():
    with pytest.raises(QSMNumericalError, match="stage X"):
        conjugate_gradient(lambda v: v * np.nan, np.ones(4), stage="stage X")


def test_lsqr_matches_numpy_lstsq(xp):
    rng = np.random.default_rng(5)
    m = rng.standard_normal((40, 12))
    b = rng.standard_normal(40)
    a = xp.asarray(m)
    op = LinearOperator(lambda v: a @ v, lambda u: a.T @ u)
    x, info = lsqr(op, xp.asarray(b), xp.zeros(12), max_iter=100, tol=1e-12)
    expected = np.linalg.lstsq(m, b, rcond=None)[0]
    assert info.iterations <= 40
    np.testing.assert_allclose(np.asarray(x.get() if hasattr(x, "get") else x), expected,
                               rtol=1e-8, atol=1e-10)


def test_soft_threshold():
    np.testing.assert_allclose(soft_threshold(np.array([-3.0, -0.5, 0.0, 0.2, 2.0]), 1.0),
                               [-2.0, 0.0, 0.0, 0.0, 1.0])

"""Shared operators and solvers: adjointness, exact k-space symbols, CG/LSQR on known systems."""

import numpy as np
import pytest

from qsmliver.backend import to_numpy
from qsmliver.errors import QSMConfigError, QSMNumericalError
from qsmliver.optim import (
    LinearOperator,
    adjointness_error,
    conjugate_gradient,
    deflation_space,
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


def _ill_conditioned(n=200, n_small=6, seed=5):
    """SPD matrix with ``n_small`` tiny eigenvalues (1e-5..1e-4) among others in [1, 10]."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    values = np.concatenate([np.geomspace(1e-5, 1e-4, n_small), np.linspace(1, 10, n - n_small)])
    return (q * values) @ q.T, q[:, :n_small], rng


def test_deflated_cg_removes_the_captured_eigenvalues(xp):
    a, slow, rng = _ill_conditioned()
    a, truth = xp.asarray(a), xp.asarray(rng.standard_normal(a.shape[0]))
    b = a @ truth
    _, plain = conjugate_gradient(lambda v: a @ v, b, max_iter=60, tol=1e-10)
    # the slow eigenvectors, mixed and perturbed as in a real recycled space
    vectors = [xp.asarray(slow @ rng.standard_normal(slow.shape[1]) + 1e-6 * rng.standard_normal(
        slow.shape[0])) for _ in range(slow.shape[1])]
    space = deflation_space(lambda v: a @ v, vectors)
    assert space.rank == slow.shape[1]
    x, info = conjugate_gradient(lambda v: a @ v, b, max_iter=60, tol=1e-10, deflation=space)
    # measured: plain CG needs 128 iterations (residual 1.7e-6 at 60); deflated converges in 34
    assert not plain.converged and info.converged and info.iterations <= 40
    assert float(xp.linalg.norm(x - truth) / xp.linalg.norm(truth)) < 1e-6


def test_deflated_cg_with_any_space_solves_the_same_system(xp):
    """A random, partly dependent space with a zero vector changes the path, not the answer;
    the residual stays orthogonal to the space."""
    a, _, rng = _ill_conditioned(n=60, n_small=2, seed=6)
    a, truth = xp.asarray(a), xp.asarray(rng.standard_normal(60))
    v1, v2 = (xp.asarray(rng.standard_normal(60)) for _ in range(2))
    space = deflation_space(lambda v: a @ v, [v1, v2, 2.0 * v1 - v2, xp.zeros(60)])
    assert space.size == 3 and space.rank == 2  # zero skipped, dependent vector dropped
    x, info = conjugate_gradient(lambda v: a @ v, a @ truth, max_iter=500, tol=1e-12,
                                 deflation=space)
    assert info.converged
    assert float(xp.linalg.norm(x - truth) / xp.linalg.norm(truth)) < 1e-6
    residual = a @ truth - a @ x
    assert float(xp.abs(space.basis @ residual).max()) < 1e-9 * float(xp.linalg.norm(a @ truth))


def test_deflation_on_a_semidefinite_system_ignores_the_null_space():
    # A = diag(0, 1..4): a deflation vector in the null space is dropped by the cutoff
    a = np.diag([0.0, 1.0, 2.0, 3.0, 4.0])
    null, other = np.eye(5)[0], np.array([0.0, 1.0, 1.0, 0.0, 0.0])
    space = deflation_space(lambda v: a @ v, [null, other])
    assert space.rank == 1
    b = np.array([0.0, 1.0, 4.0, 3.0, 8.0])
    x, info = conjugate_gradient(lambda v: a @ v, b, max_iter=10, tol=1e-12, deflation=space)
    assert info.converged
    np.testing.assert_allclose(x, [0.0, 1.0, 2.0, 1.0, 2.0], atol=1e-10)


def test_deflation_space_keeps_float32_and_rejects_bad_input():
    a = np.diag(np.arange(1.0, 9.0)).astype(np.float32)
    space = deflation_space(lambda v: a @ v, [np.ones(8, np.float32)])
    assert space.basis.dtype == space.coarse_inverse.dtype == np.float32
    x, _ = conjugate_gradient(lambda v: a @ v, np.ones(8, np.float32), tol=1e-5, deflation=space)
    assert x.dtype == np.float32
    assert deflation_space(lambda v: a @ v, [np.zeros(8, np.float32)]) is None
    with pytest.raises(QSMConfigError, match="real"):
        deflation_space(lambda v: v, [np.ones(4, complex)])
    with pytest.raises(QSMConfigError, match="rcond"):
        deflation_space(lambda v: v, [np.ones(4)], rcond=0.0)


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


def _roll_gradient(x, voxel, boundary):
    """The textbook definition: ``(roll(x, −1) − x) / Δ``, last face 0 for "neumann"."""
    parts = []
    for axis in range(3):
        diff = np.roll(x, -1, axis=axis) - x
        if boundary == "neumann":
            np.moveaxis(diff, axis, 0)[-1] = 0
        parts.append(diff / x.dtype.type(voxel[axis]))
    return np.stack(parts)


def _roll_divergence(g, voxel, boundary):
    out = np.zeros_like(g[0])
    for axis in range(3):
        component = g[axis].copy()
        if boundary == "neumann":
            np.moveaxis(component, axis, 0)[-1] = 0
        out += (component - np.roll(component, 1, axis=axis)) / g.dtype.type(voxel[axis])
    return out


@pytest.mark.parametrize("shape", [(5, 6, 7), (1, 4, 3), (2, 1, 5), (2, 2, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("boundary", ["periodic", "neumann"])
def test_slice_differences_equal_the_roll_definition(xp, shape, dtype, boundary):
    """The buffer-writing gradient, divergence and soft threshold give exactly the values of
    the plain expressions, also for axes of length 1 and 2 (the wrap-around faces)."""
    rng = np.random.default_rng(7)
    voxel = (0.7, 1.3, 2.1)
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal((3, *shape)).astype(dtype)
    grad = to_numpy(gradient(xp.asarray(x), voxel, boundary))
    div = to_numpy(divergence(xp.asarray(g), voxel, boundary))
    assert grad.dtype == dtype and div.dtype == dtype
    np.testing.assert_array_equal(grad, _roll_gradient(x, voxel, boundary))
    np.testing.assert_array_equal(div, _roll_divergence(g, voxel, boundary))
    threshold = dtype(0.4)
    expected = np.sign(g) * np.maximum(np.abs(g) - threshold, 0)
    np.testing.assert_array_equal(to_numpy(soft_threshold(xp.asarray(g), threshold)), expected)
    buffer = xp.asarray(g)
    assert soft_threshold(buffer, threshold, out=buffer) is buffer
    np.testing.assert_array_equal(to_numpy(buffer), expected)


def test_gradient_of_integers_is_float64():
    ramp = np.arange(24).reshape(2, 3, 4)
    grad = gradient(ramp)
    assert grad.dtype == np.float64
    np.testing.assert_array_equal(grad[2, :, :, :-1], 1.0)
    with pytest.raises(ValueError, match="boundary"):
        gradient(ramp, boundary="reflect")


@pytest.fixture
def device_scalars(monkeypatch):
    """Run the solvers' CuPy code path on NumPy: scalars stay 0-d arrays (no float())."""
    from qsmliver.optim import solvers

    monkeypatch.setattr(solvers, "_scalar", lambda xp, value: xp.asarray(value))


@pytest.mark.parametrize("scalars", ["host", "device"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex64])
def test_cg_result_does_not_depend_on_check_every(monkeypatch, scalars, dtype):
    """Between checks the iteration freezes where the every-iteration test would stop: the
    same iterate, residual and iteration count, bit for bit, however rarely it checks."""
    if scalars == "device":
        from qsmliver.optim import solvers

        monkeypatch.setattr(solvers, "_scalar", lambda xp, value: xp.asarray(value))
    rng = np.random.default_rng(6)
    m = rng.standard_normal((40, 40))
    a = (m @ m.T + 5 * np.eye(40)).astype(dtype)
    truth = rng.standard_normal(40).astype(dtype)
    b = a @ truth
    x1, info1 = conjugate_gradient(lambda v: a @ v, b, max_iter=300, tol=1e-5, check_every=1)
    assert info1.converged and info1.iterations % 7 != 0  # it converges between two checks
    x7, info7 = conjugate_gradient(lambda v: a @ v, b, max_iter=300, tol=1e-5, check_every=7)
    assert x7.dtype == dtype and info7 == info1
    np.testing.assert_array_equal(x7, x1)
    tol = 1e-4 if dtype == np.float64 else 5e-3
    assert np.linalg.norm(x7 - truth) / np.linalg.norm(truth) < tol


def test_cg_device_path_stops_on_zero_curvature_like_the_host(device_scalars):
    # exact solution after 1 iteration: frozen (α = 0) until the check at 10 stops it
    x, info = conjugate_gradient(lambda v: 2.0 * v, np.ones(5), max_iter=50, tol=0.0,
                                 check_every=10)
    np.testing.assert_allclose(x, 0.5)
    assert info.iterations == 1 and info.relative_residual == 0.0
    # a semi-definite operator: zero curvature stops the host test; the device one freezes
    project = np.diag([1.0, 1.0, 0.0])
    rhs = np.array([1.0, 2.0, 0.0])
    x1, info1 = conjugate_gradient(lambda v: project @ v, rhs, max_iter=20, tol=0.0,
                                   check_every=1)
    x10, info10 = conjugate_gradient(lambda v: project @ v, rhs, max_iter=20, tol=0.0,
                                     check_every=10)
    np.testing.assert_array_equal(x10, x1)
    assert info10 == info1


@pytest.mark.parametrize("scalars", ["host", "device"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lsqr_result_does_not_depend_on_check_every(monkeypatch, scalars, dtype):
    """LSQR freezes between checks like CG: bit-identical x and info for any interval."""
    if scalars == "device":
        from qsmliver.optim import solvers

        monkeypatch.setattr(solvers, "_scalar", lambda xp, value: xp.asarray(value))
    rng = np.random.default_rng(7)
    m = rng.standard_normal((40, 12)).astype(dtype)
    b = rng.standard_normal(40).astype(dtype)
    op = LinearOperator(lambda v: m @ v, lambda u: m.T @ u)
    x1, info1 = lsqr(op, b, np.zeros(12, dtype), max_iter=100, tol=1e-4, check_every=1)
    assert info1.converged and info1.iterations % 5 != 0  # it converges between two checks
    x5, info5 = lsqr(op, b, np.zeros(12, dtype), max_iter=100, tol=1e-4, check_every=5)
    assert x5.dtype == dtype  # no float64 promotion by the recurrence scalars
    assert info5 == info1
    np.testing.assert_array_equal(x5, x1)
    np.testing.assert_allclose(x5, np.linalg.lstsq(m, b, rcond=None)[0], rtol=1e-3, atol=1e-4)
    # capped before convergence: the same count and residual as the every-iteration run
    x1, info1 = lsqr(op, b, np.zeros(12, dtype), max_iter=3, tol=1e-12, check_every=1)
    x5, info5 = lsqr(op, b, np.zeros(12, dtype), max_iter=3, tol=1e-12, check_every=5)
    assert info5 == info1 and info1.iterations == 3 and not info1.converged
    np.testing.assert_array_equal(x5, x1)


def test_lsqr_device_path_survives_an_exact_solution(device_scalars):
    # exact after one iteration (α = β = 0 next, so ρ = 0): the frozen iterations must not
    # divide by zero and turn x into NaN before the check at 10 stops the solve
    op = LinearOperator(lambda v: 2.0 * v, lambda u: 2.0 * u)
    x1, info1 = lsqr(op, np.ones(4), np.zeros(4), max_iter=50, tol=0.0, check_every=1)
    x10, info10 = lsqr(op, np.ones(4), np.zeros(4), max_iter=50, tol=0.0, check_every=10)
    np.testing.assert_allclose(x10, 0.5)
    np.testing.assert_array_equal(x10, x1)
    assert info10 == info1 and info1.iterations == 1


def test_lsqr_keeps_float32_on_numpy():
    rng = np.random.default_rng(8)
    m = rng.standard_normal((30, 10)).astype(np.float32)
    op = LinearOperator(lambda v: m @ v, lambda u: m.T @ u)
    x, _ = lsqr(op, m @ np.ones(10, np.float32), np.zeros(10, np.float32), max_iter=30)
    assert x.dtype == np.float32


def test_check_every_must_be_positive():
    from qsmliver.errors import QSMConfigError

    with pytest.raises(QSMConfigError, match="check_every"):
        conjugate_gradient(lambda v: v, np.ones(3), check_every=0)

"""Fused TV-ADMM updates: the twin reproduces tv.py bit for bit; adjointness; kernel = chain."""

from __future__ import annotations

import numpy as np
import pytest

from qsmliver import backend
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.inversion._common import make_grid, relative_change
from qsmliver.inversion.tv import _tv_admm
from qsmliver.optim import LinearOperator, adjointness_error, gradient, soft_threshold
from qsmliver.optim.fused import tv_grad_adjoint, tv_shrink_update, tv_shrink_update_adjoint


def _random_problem(rng, shape=(20, 18, 14)):
    """A random field in an irregular mask, on the padded periodic work grid of TV-ADMM."""
    field = 0.05 * rng.standard_normal(shape)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    mask = (grids[0] ** 2 / 0.8 + grids[1] ** 2 / 0.6 + grids[2] ** 2 / 0.7) < 1
    voxel = np.array([0.9, 1.1, 1.6])
    grid = make_grid(field, mask, voxel, np.array([0.1, 0.2, 0.97]) / np.linalg.norm(
        [0.1, 0.2, 0.97]))
    data = grid.embed(np.where(mask, field, 0))
    weight = grid.embed(mask * (0.5 + rng.random(shape)))
    return grid, data, weight


def _tv_admm_fused(grid, field, weight, lam, rho, mu_data, max_iter, *, two_kernels=False):
    """``_tv_admm`` of qsmliver/inversion/tv.py with the z1/s1 updates done by fused.py.

    Line for line the loop of tv.py (tol = 0, so no early exit), except that
    ``grad(chi) -> soft threshold -> s1 update -> grad_adjoint(z1 - s1)`` is one call.
    """
    xp = grid.xp
    dt = grid.dtype.type
    kernel = grid.kernel
    laplacian = grid.laplacian_symbol()
    denominator = dt(rho) * laplacian + dt(mu_data) * kernel * kernel
    inverse = xp.where(denominator > 0, 1 / xp.where(denominator > 0, denominator, 1), 0)
    inverse = inverse.astype(grid.dtype)
    w2 = weight * weight
    w2_phi = w2 * field
    data_denominator = 1 / (w2 + dt(mu_data))
    chi = xp.zeros(grid.shape, dtype=grid.dtype)
    s1 = xp.zeros((3, *grid.shape), dtype=grid.dtype)
    adjoint = grid.grad_adjoint(xp.zeros_like(s1))  # z1 = s1 = 0 before the first iteration
    z2 = field.copy()
    s2 = xp.zeros_like(chi)
    for _ in range(max_iter):
        rhs_k = (dt(rho) * grid.rfft(adjoint) + dt(mu_data) * kernel * grid.rfft(z2 - s2))
        chi_k = inverse * rhs_k
        chi_new = grid.irfft(chi_k)
        dipole_chi = grid.irfft(kernel * chi_k)
        relative_change(xp, chi_new, chi)
        chi = chi_new
        if two_kernels:
            u, s1 = tv_shrink_update(chi, s1, dt(lam / rho), grid.voxel, inplace=True)
            adjoint = tv_grad_adjoint(u, grid.voxel)
        else:
            adjoint, s1 = tv_shrink_update_adjoint(chi, s1, dt(lam / rho), grid.voxel)
        z2 = (w2_phi + dt(mu_data) * (dipole_chi + s2)) * data_denominator
        s2 += dipole_chi - z2
    return chi


@pytest.mark.parametrize("two_kernels", [False, True], ids=["fused", "two-kernels"])
def test_twin_reproduces_tv_admm_bit_for_bit(rng, two_kernels):
    """Eight TV-ADMM iterations with the fused update give today's χ to the last bit (float64)."""
    grid, data, weight = _random_problem(rng)
    assert grid.dtype == np.float64
    lam, rho, mu = 3e-4, 3e-2, 1.0
    reference, info = _tv_admm(grid, data, weight, lam, rho, mu, max_iter=8, tol=0.0)
    assert info["iterations"] == 8
    fused = _tv_admm_fused(grid, data, weight, lam, rho, mu, 8, two_kernels=two_kernels)
    assert np.count_nonzero(reference) > 0.9 * reference.size
    np.testing.assert_array_equal(fused, reference)


def test_one_update_matches_tv_py_sequence(rng):
    """The sequence of tv.py (grad, shrink, in-place dual update, grad_adjoint) on one step."""
    grid, _, _ = _random_problem(rng)
    chi = rng.standard_normal(grid.shape)
    s1 = 0.2 * rng.standard_normal((3, *grid.shape))
    threshold = grid.dtype.type(0.3)
    # as written in qsmliver/inversion/tv.py
    s1_tv = s1.copy()
    grad_chi = grid.grad(chi)
    z1 = soft_threshold(grad_chi + s1_tv, threshold)
    s1_tv += grad_chi - z1
    adjoint_tv = grid.grad_adjoint(z1 - s1_tv)
    # fused, both variants
    adjoint, s1_new = tv_shrink_update_adjoint(chi, s1, threshold, grid.voxel)
    np.testing.assert_array_equal(adjoint, adjoint_tv)
    np.testing.assert_array_equal(s1_new, s1_tv)
    s1_in_place = s1.copy()
    u, returned = tv_shrink_update(chi, s1_in_place, threshold, grid.voxel, inplace=True)
    assert returned is s1_in_place
    np.testing.assert_array_equal(s1_in_place, s1_tv)
    np.testing.assert_array_equal(u, z1 - s1_tv)
    assert np.count_nonzero(z1 == 0) > 0 and np.count_nonzero(z1) > 0


@pytest.mark.parametrize("boundary", ["periodic", "neumann"])
def test_grad_adjoint_is_the_adjoint_of_the_gradient(xp, rng, boundary):
    """<∇x, u> = <x, ∇ᵀu>: on CuPy this checks the device kernel against the NumPy gradient."""
    voxel = (0.8, 1.3, 2.0)
    x = xp.asarray(rng.standard_normal((11, 9, 7)))
    u = xp.asarray(rng.standard_normal((3, 11, 9, 7)))
    op = LinearOperator(lambda a: gradient(a, voxel, boundary),
                        lambda b: tv_grad_adjoint(b, voxel, boundary=boundary), "grad")
    assert adjointness_error(op, x, u) < 1e-13


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("boundary", ["periodic", "neumann"])
def test_fused_equals_chained_on_every_backend(xp, rng, dtype, boundary):
    """Kernel path (CuPy) or twin (NumPy) against the chained array code on the same backend."""
    shape = (13, 10, 6)
    voxel = (1.0, 0.7, 1.5)
    chi = xp.asarray(rng.standard_normal(shape).astype(dtype))
    s1 = xp.asarray((0.3 * rng.standard_normal((3, *shape))).astype(dtype))
    u_ref, s1_ref = tv_shrink_update(chi, s1, 0.5, voxel, boundary=boundary, use_kernel=False)
    adjoint_ref = tv_grad_adjoint(u_ref, voxel, boundary=boundary, use_kernel=False)
    u, s1_new = tv_shrink_update(chi, s1, 0.5, voxel, boundary=boundary)
    adjoint, s1_fused = tv_shrink_update_adjoint(chi, s1, 0.5, voxel, boundary=boundary)
    for got, want in ((u, u_ref), (s1_new, s1_ref), (s1_fused, s1_ref), (adjoint, adjoint_ref),
                      (tv_grad_adjoint(u_ref, voxel, boundary=boundary), adjoint_ref)):
        assert got.dtype == dtype and backend.get_array_module(got) is xp
        np.testing.assert_array_equal(backend.to_numpy(got), backend.to_numpy(want))


def test_shrinkage_limits_have_known_values(rng):
    """Huge threshold: z1 = 0, so s1_new = s1 + ∇χ and u = -s1_new; zero threshold: z1 = v."""
    chi = rng.standard_normal((6, 5, 4))
    s1 = rng.standard_normal((3, 6, 5, 4))
    grad = gradient(chi, (1.0, 2.0, 0.5))
    u, s1_new = tv_shrink_update(chi, s1, 1e9, (1.0, 2.0, 0.5))
    np.testing.assert_allclose(s1_new, s1 + grad, rtol=0, atol=1e-15)
    np.testing.assert_allclose(u, -(s1 + grad), rtol=0, atol=1e-15)
    u, s1_new = tv_shrink_update(chi, s1, 0.0, (1.0, 2.0, 0.5))
    np.testing.assert_allclose(s1_new, 0.0, atol=1e-14)  # s1 + (g - (g + s1))
    np.testing.assert_allclose(u, grad + s1, atol=1e-14)


def test_neumann_boundary_has_no_difference_across_the_last_face():
    chi = np.zeros((4, 3, 3))
    chi[-1] = 1.0  # a step on the last x-face: periodic wraps it, Neumann does not
    s1 = np.zeros((3, 4, 3, 3))
    u_periodic, _ = tv_shrink_update(chi, s1, 0.0, (1, 1, 1), boundary="periodic")
    u_neumann, _ = tv_shrink_update(chi, s1, 0.0, (1, 1, 1), boundary="neumann")
    assert np.all(u_periodic[0, -1] == -1.0) and np.all(u_neumann[0, -1] == 0.0)
    np.testing.assert_array_equal(u_periodic[0, :-1], u_neumann[0, :-1])


def test_bad_inputs_are_refused():
    chi = np.zeros((4, 4, 4))
    s1 = np.zeros((3, 4, 4, 4))
    with pytest.raises(QSMInputError, match="3-D"):
        tv_shrink_update(np.zeros((4, 4)), s1, 0.1, (1, 1, 1))
    with pytest.raises(QSMInputError, match="shape"):
        tv_shrink_update(chi, np.zeros((3, 4, 4, 5)), 0.1, (1, 1, 1))
    with pytest.raises(QSMInputError, match="one precision"):
        tv_shrink_update_adjoint(chi, s1.astype(np.float32), 0.1, (1, 1, 1))
    with pytest.raises(QSMInputError, match="float32 or float64"):
        tv_shrink_update(chi.astype(np.int32), s1.astype(np.int32), 0.1, (1, 1, 1))
    with pytest.raises(QSMInputError, match="voxel_size_mm"):
        tv_shrink_update(chi, s1, 0.1, (1, 0, 1))
    with pytest.raises(QSMConfigError, match="boundary"):
        tv_shrink_update(chi, s1, 0.1, (1, 1, 1), boundary="dirichlet")
    with pytest.raises(QSMConfigError, match="threshold"):
        tv_shrink_update(chi, s1, -0.1, (1, 1, 1))
    with pytest.raises(QSMConfigError, match="threshold"):
        tv_shrink_update_adjoint(chi, s1, float("nan"), (1, 1, 1))
    with pytest.raises(QSMInputError, match=r"\(3, X, Y, Z\)"):
        tv_grad_adjoint(chi, (1, 1, 1))

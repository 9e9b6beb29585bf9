"""Dipole inversion: brute-force references, operator adjointness, phantom accuracy, dispatch."""

import json

import numpy as np
import pytest

from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.inversion import (
    METHODS,
    DipoleInversion,
    dipole_kernel,
    invert_dipole,
    medi,
    tikhonov,
    tkd,
    tv_admm,
)
from qsmliver.inversion._common import make_grid
from qsmliver.inversion.lsqr_method import weighted_dipole_operator
from qsmliver.inversion.medi import gradient_mask, medi_operators
from qsmliver.metrics import nrmse, roi_slope
from qsmliver.optim import adjointness_error, gradient
from qsmliver.simulate import brain_phantom

DGM = ("caudate", "putamen", "globus_pallidus", "thalamus", "red_nucleus", "substantia_nigra",
       "dentate_nucleus")


# -- brute force on a tiny periodic grid ----------------------------------------------------
def _dense(apply, n):
    eye = np.eye(n)
    return np.stack([apply(eye[i]) for i in range(n)], axis=1)


@pytest.fixture(scope="module")
def tiny():
    shape, voxel = (6, 6, 5), (1.0, 1.2, 0.9)
    rng = np.random.default_rng(5)
    n = int(np.prod(shape))
    kernel = dipole_kernel(shape, voxel, (0, 0, 1))

    def dipole(v):
        return np.real(np.fft.ifftn(kernel * np.fft.fftn(v.reshape(shape)))).ravel()

    def grad(v):
        return gradient(v.reshape(shape), voxel).ravel()

    a = _dense(dipole, n)
    g = _dense(grad, n)
    field = rng.standard_normal(shape)
    return shape, voxel, kernel, a, g, field


def test_tkd_matches_dense_division(tiny):
    shape, voxel, kernel, _, _, field = tiny
    t = 0.19
    inverse = np.where(np.abs(kernel) > t, 1 / np.where(kernel == 0, 1, kernel),
                       np.sign(kernel) / t)
    ft = np.fft.fft(np.eye(shape[0]))  # a dense DFT along each axis, independent of rfftn
    fz = np.fft.fft(np.eye(shape[2]))
    f3 = np.kron(np.kron(ft, ft), fz)
    expected = np.real(np.linalg.solve(f3, inverse.ravel() * (f3 @ field.ravel())))
    chi = tkd(field, np.ones(shape, bool), voxel, threshold=t, pad_fraction=0, min_pad=0)
    np.testing.assert_allclose(chi.ravel(), expected, atol=1e-10)


@pytest.mark.parametrize("regulariser", ["identity", "gradient"])
def test_tikhonov_matches_dense_normal_equations(tiny, regulariser):
    shape, voxel, _, a, g, field = tiny
    lam = 0.05
    r = np.eye(a.shape[0]) if regulariser == "identity" else g.T @ g
    normal = a.T @ a + lam * r
    expected = np.linalg.lstsq(normal, a.T @ field.ravel(), rcond=1e-12)[0]
    chi = tikhonov(field, np.ones(shape, bool), voxel, lam=lam, regulariser=regulariser,
                   pad_fraction=0, min_pad=0)
    assert np.abs(chi.ravel() - expected).max() < 1e-8 * max(1.0, np.abs(expected).max())


# -- adjointness of every operator the iterative solvers use --------------------------------
def test_solver_operators_are_adjoint(xp):
    rng = np.random.default_rng(7)
    shape = (14, 12, 10)  # even sizes and an oblique B0: the symmetrised Nyquist planes matter
    mask = np.zeros(shape, bool)
    mask[2:12, 3:10, 2:8] = True
    field = xp.asarray(rng.standard_normal(shape))
    grid = make_grid(field, xp.asarray(mask), np.array([1.0, 0.8, 1.3]),
                     np.array([0.3, 0.2, 0.93]) / np.linalg.norm([0.3, 0.2, 0.93]),
                     pad_fraction=0.2, min_pad=2)
    weight = xp.asarray(rng.random(grid.shape))
    magnitude = xp.asarray(rng.random(grid.shape))
    ops = [grid.dipole_operator(), grid.gradient_operator(),
           weighted_dipole_operator(grid, weight),
           *medi_operators(grid, weight, gradient_mask(grid, magnitude, 0.9))]
    x = xp.asarray(rng.standard_normal(grid.shape))
    for op in ops:
        y = op(x)
        y = xp.asarray(rng.standard_normal(y.shape))
        assert adjointness_error(op, x, y) < 1e-10, op.name


# -- phantom accuracy ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom():
    ph = brain_phantom(shape=(96, 96, 72), voxel_size_mm=(2, 2, 2), snr=None)
    field = ph.truth["local_field_ppm"]
    mask = ph.masks["brain"]
    rng = np.random.default_rng(11)
    noisy = field + 0.01 * field[mask].std() * rng.standard_normal(field.shape)
    dgm = [v for v, name in ph.label_names.items() if name.rsplit("_", 1)[0] in DGM]
    magnitude = np.abs(ph.gre.signal[..., 0])
    csf = np.isin(ph.labels, [v for v, n in ph.label_names.items() if n.startswith("ventricle")])
    return {"clean": field, "noisy": noisy, "mask": mask, "chi": ph.truth["chi_ppm"],
            "labels": ph.labels, "dgm": dgm, "magnitude": magnitude, "csf": csf}


def _score(phantom, chi):
    chi = np.asarray(chi, dtype=np.float64)
    error = nrmse(chi, phantom["chi"], phantom["mask"])
    slope = roi_slope(chi, phantom["chi"], phantom["labels"], phantom["dgm"])
    return error, slope


@pytest.mark.parametrize("data", ["clean", "noisy"])
def test_tkd_accuracy_on_phantom(phantom, data):
    chi = tkd(phantom[data], phantom["mask"], (2, 2, 2))
    error, _ = _score(phantom, chi)
    assert error <= 35.0


@pytest.mark.parametrize("data", ["clean", "noisy"])
def test_tv_admm_accuracy_on_phantom(phantom, data):
    chi = tv_admm(phantom[data].astype(np.float32), phantom["mask"], (2, 2, 2))
    assert chi.dtype == np.float32
    error, slope = _score(phantom, chi)
    assert error <= 22.0
    assert 0.90 <= slope <= 1.10


@pytest.mark.parametrize("data", ["clean", "noisy"])
def test_medi_accuracy_on_phantom(phantom, data):
    chi = medi(phantom[data].astype(np.float32), phantom["mask"], (2, 2, 2),
               magnitude=phantom["magnitude"])
    error, slope = _score(phantom, chi)
    assert error <= 22.0
    assert 0.90 <= slope <= 1.10


def test_medi_plus_zero_references_csf(phantom):
    result = invert_dipole(phantom["noisy"].astype(np.float32), phantom["mask"], (2, 2, 2),
                           method="medi", magnitude=phantom["magnitude"],
                           csf_mask=phantom["csf"])
    chi = result.chi_ppm
    assert abs(float(chi[phantom["csf"]].mean())) < 1e-4
    assert result.parameters["reference"] == "csf"
    error, slope = _score(phantom, chi)
    assert error <= 22.0 and 0.90 <= slope <= 1.10


# -- every method through the dispatcher, on every backend ----------------------------------
@pytest.fixture(scope="module")
def small():
    ph = brain_phantom(shape=(40, 40, 32), voxel_size_mm=(4, 4, 4), snr=None)
    return ph.truth["local_field_ppm"], ph.masks["brain"], np.abs(ph.gre.signal[..., 0])


FAST = {"tv_admm": {"max_iter": 10}, "medi": {"max_iter": 2, "cg_max_iter": 10},
        "ndi": {"max_iter": 10}, "ilsqr": {"max_iter": 10}, "tikhonov": {"lam": 0.01},
        "tfi": {"max_iter": 2, "cg_max_iter": 10}}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_method_runs_on_every_backend(xp, small, method, dtype):
    field, mask, magnitude = small
    extra = {"magnitude": xp.asarray(magnitude)} if method == "medi" else {}
    result = invert_dipole(xp.asarray(field.astype(dtype)), xp.asarray(mask), (4, 4, 4),
                           (0, 0, 1), method, **extra, **FAST.get(method, {}))
    assert isinstance(result, DipoleInversion) and result.method == method
    chi = result.chi_ppm
    assert type(chi) is type(xp.asarray(field)) and chi.dtype == dtype
    assert chi.shape == field.shape
    assert bool((chi[~xp.asarray(mask)] == 0).all())
    assert bool(xp.isfinite(chi).all()) and float(xp.abs(chi).max()) > 0
    text = json.dumps(result.parameters)
    assert "pad_fraction" in text


def test_weighted_methods_accept_a_weight(small):
    field, mask, magnitude = small
    weight = np.where(mask, 0.5 + magnitude / magnitude.max(), 0)
    for method in ("tv_admm", "ilsqr", "ndi"):
        result = invert_dipole(field, mask, (4, 4, 4), method=method, weight=weight,
                               **FAST[method])
        assert result.parameters["weighted"] is True
        assert np.isfinite(result.chi_ppm).all()


def test_dispatcher_errors(small):
    field, mask, magnitude = small
    with pytest.raises(QSMConfigError, match="valid methods: tkd"):
        invert_dipole(field, mask, (4, 4, 4), method="cosmos")
    with pytest.raises(QSMConfigError, match="valid options: .*threshold"):
        invert_dipole(field, mask, (4, 4, 4), method="tkd", lam=0.1)
    ignored = invert_dipole(field, mask, (4, 4, 4), method="tkd", magnitude=magnitude)
    assert ignored.parameters["ignored_inputs"] == ["magnitude"]
    with pytest.raises(QSMInputError, match="empty"):
        invert_dipole(field, np.zeros_like(mask), (4, 4, 4))
    with pytest.raises(QSMInputError, match="does not match"):
        invert_dipole(field, mask[:-1], (4, 4, 4))
    with pytest.raises(QSMInputError, match="magnitude"):
        invert_dipole(field, mask, (4, 4, 4), method="medi")
    with pytest.raises(QSMInputError, match="magnitude"):
        medi(field, mask, (4, 4, 4), magnitude=magnitude[:-1])
    with pytest.raises(QSMConfigError):
        tkd(field, mask, (4, 4, 4), threshold=0.9)
    with pytest.raises(QSMConfigError):
        tikhonov(field, mask, (4, 4, 4), regulariser="laplacian")
    with pytest.raises(QSMConfigError):
        tv_admm(field, mask, (4, 4, 4), lam=-1)
    with pytest.raises(QSMInputError):
        tv_admm(field, mask, (4, 4, 4), weight=-np.ones_like(field))


@pytest.mark.parametrize(("method", "tol"), [("tv_admm", 1e-2), ("ndi", 3e-3)])
def test_stop_does_not_depend_on_the_check_interval(monkeypatch, method, tol):
    """A host check every 7 iterations (as on a GPU, where it is every 10) returns the iterate,
    change and count of the every-iteration test, bit for bit: the loop runs on to the next
    check, but what it returns is frozen at the iteration that passed."""
    from qsmliver import backend

    phantom = brain_phantom(shape=(32, 32, 24), voxel_size_mm=(4.0, 4.0, 4.0), snr=100, seed=3)
    local = phantom.truth["local_field_ppm"].astype(np.float32)
    mask = phantom.masks["brain"]
    args = (local, mask, phantom.gre.voxel_size_mm, phantom.gre.b0_dir, method)
    every_one = invert_dipole(*args, tol=tol)
    count = every_one.parameters["iterations"]
    assert every_one.parameters["converged"] and count % 7 != 0
    monkeypatch.setattr(backend, "convergence_check_interval", lambda xp=np: 7)
    every_seven = invert_dipole(*args, tol=tol)
    np.testing.assert_array_equal(every_seven.chi_ppm, every_one.chi_ppm)
    for key in ("iterations", "relative_change", "converged"):
        assert every_seven.parameters[key] == every_one.parameters[key]

"""Background field removal: V-SHARP, PDF, LBV, RESHARP and the dispatcher.

Accuracy on the head phantom. The truth local field is the phantom's ``local_field_ppm`` (the
field of every source inside the brain mask). The background is built here from closed-form
fields (air spheres below and beside the brain, ``sphere_field_ppm``) plus a harmonic
polynomial shim, so it is exactly harmonic inside the mask. Grey and white matter
susceptibility are set to 0 so that the local sources are compact (deep grey matter, vein,
calcification). NRMSE = ||est − truth|| / ||truth|| over the method's returned mask, without
demeaning.

Why not the phantom's own background and GM/WM pattern (issue 4's wording; measured at
64×64×48, 3 mm, truth mask, demeaned NRMSE):

- With GM/WM susceptibility, even a fully converged PDF (tol 1e-5) loses 48 % of the *truth
  local field alone*: that much of the field of the whole-brain GM/WM pattern is reproduced by
  dipoles outside the mask, so no dipole- or harmonicity-based method can attribute it to the
  inside. With GM/WM set to 0 the same loss is 16 %.
- The phantom's own background (skull of −2.1 ppm and sinus air touching the mask, air around
  the scalp, shim) is removed by a converged PDF (see
  :func:`test_pdf_removes_the_phantoms_own_background`), but not by the Laplacian-based methods:
  the cuboid-kernel field of bone one voxel outside the mask is harmonic in the continuum but not
  for the 7-point Laplacian or the discrete SMV, so V-SHARP (0.70) and LBV (1.36) leak it; with
  the skull's χ and the sinus removed they reach 0.05 and 0.07.

Two hypotheses checked and measured (session 8; same size, truth mask):

- The loss is not the phantom's GM/WM proportions (concentric ellipsoids: GM 18 %, WM 64 % of
  the cavity). Re-painting the parenchyma with a folded GM/WM boundary (smooth random gyri,
  GM 47-59 %, WM 23-35 % of the cavity, real proportions) leaves the converged PDF's loss of
  the truth local field at 43.5-48.5 % (44 % for the ellipsoids): the field of a large-scale
  GM/WM/CSF pattern is mostly reproducible by outside dipoles whatever its folding.
- Voxel-averaging the field helps the Laplacian methods but not enough. Simulating at f times
  the matrix, averaging the fields over each voxel, and keeping only voxels wholly inside the
  cavity (GM/WM 0, the phantom's own background): f = 1, 2, 3 give V-SHARP 0.70, 0.47, 0.22,
  LBV 1.36, 0.66, 0.34, PDF 0.24, 0.30, 0.28, RESHARP 0.26, 0.18, 0.15. Keeping voxels that
  are partly bone makes every method far worse (V-SHARP 5.7 at f = 3).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from qsmliver import backend
from qsmliver.bgremove import (
    METHODS,
    BackgroundRemoval,
    default_vsharp_radii,
    lbv,
    lbv_operator,
    pdf,
    pdf_operator,
    remove_background,
    resharp,
    resharp_operator,
    smv_erode,
    smv_kernel,
    vsharp,
)
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.optim import adjointness_error
from qsmliver.simulate.analytic import sphere_field_ppm
from qsmliver.simulate.brain import brain_phantom

OBLIQUE = tuple(np.array([0.2, 0.1, 1.0]) / np.linalg.norm([0.2, 0.1, 1.0]))


def _head_case(b0_dir=(0.0, 0.0, 1.0), shape=(64, 64, 48), voxel=(3.0, 3.0, 3.0)):
    ph = brain_phantom(shape=shape, voxel_size_mm=voxel, snr=None, b0_dir=b0_dir,
                       chi_ppm={"grey_matter": 0.0, "white_matter": 0.0}, texture_ppm=0.0)
    local = ph.truth["local_field_ppm"]
    brain = ph.masks["brain"]
    fov = np.asarray(shape) * np.asarray(voxel)
    background = np.zeros(shape)
    for centre, radius in (((0, 0.37, -0.29), 0.08), ((-0.45, 0, -0.21), 0.05),
                           ((0.45, 0, -0.21), 0.05)):
        field, inside = sphere_field_ppm(shape, voxel, radius_mm=radius * fov[0],
                                         delta_chi_ppm=9.4, center_mm=np.asarray(centre) * fov,
                                         b0_dir=b0_dir)
        assert not (inside & brain).any()
        background += field
    g = np.indices(shape) / np.asarray(shape)[:, None, None, None] - 0.5
    background += 0.05 * g[0] - 0.08 * g[2] + 0.1 * (g[0] ** 2 - g[1] ** 2)
    return local + background, local, brain, voxel, b0_dir


@pytest.fixture(scope="module")
def head():
    return _head_case()


@pytest.fixture(scope="module")
def head_oblique():
    return _head_case(b0_dir=OBLIQUE)


def _nrmse(est, truth, mask):
    est, mask = backend.to_numpy(est), backend.to_numpy(mask)
    return float(np.linalg.norm(est[mask] - truth[mask]) / np.linalg.norm(truth[mask]))


# measured: vsharp 0.049, pdf 0.157, lbv 0.098, resharp 0.119
@pytest.mark.parametrize("method", METHODS)
def test_phantom_local_field_accuracy(head, method):
    total, truth, brain, voxel, b0 = head
    result = remove_background(total, brain, voxel, b0, method)
    assert result.mask.sum() > 0.6 * brain.sum()
    assert not np.any(result.local_field_ppm[~result.mask])
    assert _nrmse(result.local_field_ppm, truth, result.mask) < 0.25


# measured: vsharp 0.050, pdf 0.168, lbv 0.094
@pytest.mark.parametrize("method", ["vsharp", "pdf", "lbv"])
def test_phantom_oblique_b0(head_oblique, method):
    total, truth, brain, voxel, b0 = head_oblique
    result = remove_background(total, brain, voxel, b0, method)
    assert _nrmse(result.local_field_ppm, truth, result.mask) < 0.25


def test_pdf_removes_the_phantoms_own_background():
    """PDF's default stopping rule converges far enough for a realistic dynamic range: the
    phantom's own background (skull, sinus, air, shim: 0.5-0.8 ppm in the mask) against a local
    field of ~7 ppb RMS. Measured: 0.24 with the defaults (tol 1e-4, ~120 iterations); the former
    tol 1e-3 stopped after 14 iterations at 0.75; tol 1e-5 gives 0.17."""
    ph = brain_phantom(shape=(64, 64, 48), voxel_size_mm=(3.0, 3.0, 3.0), snr=None,
                       chi_ppm={"grey_matter": 0.0, "white_matter": 0.0}, texture_ppm=0.0)
    brain, truth = ph.masks["brain"], ph.truth["local_field_ppm"]
    result = remove_background(ph.truth["total_field_ppm"], brain, (3.0, 3.0, 3.0), method="pdf")
    local = result.local_field_ppm
    error = (local - local[brain].mean()) - (truth - truth[brain].mean())
    centred = truth[brain] - truth[brain].mean()
    assert np.linalg.norm(error[brain]) / np.linalg.norm(centred) < 0.30
    assert result.parameters["converged"]


# -- analytic: harmonic fields are removed, inside sources are kept ---------------------------
def _sphere_mask(shape=(32, 32, 32), radius_vox=11.0):
    grid = np.indices(shape) - (np.asarray(shape)[:, None, None, None] - 1) / 2.0
    return (grid ** 2).sum(axis=0) < radius_vox ** 2, grid


def _harmonic_field(shape=(32, 32, 32), voxel=(2.0, 2.0, 2.0), b0=(0.0, 0.0, 1.0)):
    field, _ = sphere_field_ppm(shape, voxel, radius_mm=6.0, delta_chi_ppm=3.0,
                                center_mm=(0.0, 8.0, 40.0), b0_dir=b0)
    grid = np.indices(shape).astype(float)
    return field + 0.004 * grid[0] - 0.006 * grid[2]


@pytest.mark.parametrize("method", METHODS)
def test_harmonic_field_is_removed(xp, method):
    mask, _ = _sphere_mask()
    field = _harmonic_field()
    options = {"lbv": {"tol": 1e-8}}.get(method, {})
    result = remove_background(xp.asarray(field), xp.asarray(mask), (2, 2, 2), (0, 0, 1),
                               method, **options)
    local = backend.to_numpy(result.local_field_ppm)
    out_mask = backend.to_numpy(result.mask)
    assert backend.get_array_module(result.local_field_ppm) is xp
    assert out_mask.sum() > 0.3 * mask.sum()
    assert np.abs(local[out_mask]).max() < 0.03 * np.abs(field[mask]).max()


def test_harmonic_field_removed_anisotropic_oblique():
    shape, voxel = (32, 32, 24), (2.0, 2.0, 2.6)
    grid = (np.indices(shape) - (np.asarray(shape)[:, None, None, None] - 1) / 2.0)
    grid = grid * np.asarray(voxel)[:, None, None, None]
    mask = (grid ** 2).sum(axis=0) < 22.0 ** 2
    field = _harmonic_field(shape, voxel, OBLIQUE)
    scale = np.abs(field[mask]).max()
    for function, kwargs in ((vsharp, {}), (lbv, {"tol": 1e-8}), (resharp, {})):
        local, eroded = function(field, mask, voxel, **kwargs)
        assert np.abs(local[eroded]).max() < 0.05 * scale, function.__name__
    local, _ = pdf(field, mask, voxel, OBLIQUE)
    assert np.abs(local[mask]).max() < 0.05 * scale


def test_pdf_keeps_a_source_inside_the_mask(xp):
    shape, voxel = (32, 32, 32), (2.0, 2.0, 2.0)
    mask, grid = _sphere_mask(shape)
    centre = np.array([4.0, -2.0, 2.0])
    inside_field, _ = sphere_field_ppm(shape, voxel, radius_mm=5.0, delta_chi_ppm=0.3,
                                       center_mm=centre)
    near = ((grid * 2.0 - centre[:, None, None, None]) ** 2).sum(axis=0) < 12.0 ** 2
    total = _harmonic_field() + inside_field
    local, out_mask = pdf(xp.asarray(total), xp.asarray(mask), voxel, (0, 0, 1))
    local = backend.to_numpy(local)
    assert backend.to_numpy(out_mask).sum() == mask.sum()
    # measured 0.06 within 12 mm of the source and 0.25 over the mask: PDF fits part of the
    # weak far field of the source with outside dipoles (the methods' known limitation)
    assert _nrmse(local, inside_field, near) < 0.1
    assert _nrmse(local, inside_field, mask) < 0.35


def test_lbv_peel_and_linear_field(xp):
    mask, grid = _sphere_mask((24, 24, 24), 10.0)
    ramp = 0.01 * grid[0] + 0.02 * grid[2]
    local, eroded = lbv(xp.asarray(ramp), xp.asarray(mask), (1, 1, 1), tol=1e-10, peel=2)
    local, eroded = backend.to_numpy(local), backend.to_numpy(eroded)
    assert eroded.sum() < mask.sum() and not eroded[~mask].any()
    assert np.abs(local).max() < 1e-7
    _, kept = lbv(ramp, mask, (1, 1, 1), peel=0)
    assert kept.sum() == mask.sum()


# -- operators ------------------------------------------------------------------------------
def test_operators_are_adjoint(xp):
    rng = np.random.default_rng(7)
    mask, _ = _sphere_mask((20, 18, 16), 6.0)
    weight = rng.uniform(0.5, 2.0, mask.shape)
    mask_x = xp.asarray(mask)
    op, shape = pdf_operator(mask_x, (1.0, 1.2, 1.5), OBLIQUE, weight=xp.asarray(weight), pad=4)
    x, y = (xp.asarray(rng.standard_normal(shape)) for _ in range(2))
    assert adjointness_error(op, x, y) < 1e-10
    op, interior = lbv_operator(mask_x, (1.0, 1.2, 1.5))
    x, y = (xp.asarray(rng.standard_normal(mask.shape)) for _ in range(2))
    assert adjointness_error(op, x, y) < 1e-10
    assert backend.to_numpy(interior).sum() < mask.sum()
    op, shape = resharp_operator(mask_x, (1.0, 1.2, 1.5), radius_mm=3.0)
    x, y = (xp.asarray(rng.standard_normal(shape)) for _ in range(2))
    assert adjointness_error(op, x, y) < 1e-10


def test_smv_kernel(xp):
    for sampling in ("image", "kspace"):
        kernel = smv_kernel((24, 20, 16), (1.0, 1.0, 1.5), 3.0, xp, np.float64,
                            sampling=sampling)
        assert float(kernel[0, 0, 0]) == pytest.approx(1.0)
        assert float(xp.abs(kernel).max()) <= 1.0 + 1e-12
        half = smv_kernel((24, 20, 16), (1.0, 1.0, 1.5), 3.0, xp, np.float64,
                          sampling=sampling, half_spectrum=True)
        np.testing.assert_allclose(backend.to_numpy(half), backend.to_numpy(kernel)[..., :9],
                                   atol=1e-12)
    with pytest.raises(ValueError):
        smv_kernel((8, 8, 8), (1, 1, 1), 6.0)
    mask, _ = _sphere_mask((24, 24, 24), 9.0)
    eroded = backend.to_numpy(smv_erode(xp.asarray(mask), (1, 1, 1), 3.0))
    expected, _ = _sphere_mask((24, 24, 24), 6.0)
    assert abs(int(eroded.sum()) - int(expected.sum())) < 0.1 * expected.sum()
    assert default_vsharp_radii((3, 3, 3)) == (12.0, 9.0, 6.0, 3.0)
    assert default_vsharp_radii((1, 1, 1))[-1] == 1.0


# -- dtype, dispatcher, record --------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_float32_in_float32_out(method):
    mask, _ = _sphere_mask((24, 24, 24), 9.0)
    field = _harmonic_field((24, 24, 24)).astype(np.float32)
    result = remove_background(field, mask, (2, 2, 2), (0, 0, 1), method)
    assert result.local_field_ppm.dtype == np.float32
    assert result.mask.dtype == bool
    assert np.isfinite(result.local_field_ppm).all()


def test_dispatcher_record_is_json():
    mask, _ = _sphere_mask((24, 24, 24), 9.0)
    field = _harmonic_field((24, 24, 24))
    for method in METHODS:
        result = remove_background(field, mask, (2, 2, 2), method=method,
                                   weight=np.ones_like(field))
        assert isinstance(result, BackgroundRemoval) and result.method == method
        text = json.dumps(result.parameters)
        assert method in text
        assert result.parameters["weighted"] is (method == "pdf")
    record = remove_background(field, mask, (2, 2, 2), method="lbv").parameters
    assert record["iterations"] > 0 and "relative_residual" in record
    assert remove_background(field, mask, (2, 2, 2), method="vsharp", radii_mm=[6, 4]
                             ).parameters["radii_mm"] == [6.0, 4.0]


def test_pdf_weight_is_normalised():
    mask, _ = _sphere_mask((24, 24, 24), 9.0)
    field = _harmonic_field((24, 24, 24))
    a, _ = pdf(field, mask, (2, 2, 2), max_iter=5)
    b, _ = pdf(field, mask, (2, 2, 2), weight=np.full(field.shape, 3.0), max_iter=5)
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_nan_outside_mask_is_ignored():
    mask, _ = _sphere_mask((24, 24, 24), 9.0)
    field = _harmonic_field((24, 24, 24))
    clean, _ = vsharp(field, mask, (2, 2, 2))
    field[~mask] = np.nan
    dirty, _ = vsharp(field, mask, (2, 2, 2))
    np.testing.assert_array_equal(clean, dirty)


# -- bad inputs ------------------------------------------------------------------------------
def test_bad_inputs():
    mask, _ = _sphere_mask((16, 16, 16), 6.0)
    field = np.zeros((16, 16, 16))
    voxel = (1, 1, 1)
    with pytest.raises(QSMInputError, match="empty"):
        vsharp(field, np.zeros_like(mask), voxel)
    with pytest.raises(QSMInputError, match="shape"):
        lbv(field, mask[:-1], voxel)
    with pytest.raises(QSMInputError, match="3-D"):
        pdf(field[0], mask[0], voxel)
    with pytest.raises(QSMInputError, match="complex"):
        vsharp(field.astype(complex), mask, voxel)
    bad = field.copy()
    bad[8, 8, 8] = np.nan
    with pytest.raises(QSMInputError, match="non-finite"):
        lbv(bad, mask, voxel)
    with pytest.raises(QSMInputError, match="voxel_size_mm"):
        vsharp(field, mask, (1, 0, 1))
    with pytest.raises(QSMInputError, match="b0_dir"):
        pdf(field, mask, voxel, (0, 0, 0))
    with pytest.raises(QSMInputError, match="weight"):
        pdf(field, mask, voxel, weight=-np.ones_like(field))
    with pytest.raises(QSMInputError, match="weight"):
        pdf(field, mask, voxel, weight=np.ones((4, 4, 4)))
    with pytest.raises(QSMInputError, match="empty after"):
        vsharp(field, mask, voxel, radii_mm=[7.0])


def test_bad_config():
    mask, _ = _sphere_mask((16, 16, 16), 6.0)
    field = np.zeros((16, 16, 16))
    with pytest.raises(QSMConfigError, match="valid: vsharp, pdf, lbv, resharp"):
        remove_background(field, mask, (1, 1, 1), method="sharp")
    with pytest.raises(QSMConfigError, match="valid: radii_mm, threshold"):
        remove_background(field, mask, (1, 1, 1), method="vsharp", tol=1e-3)
    with pytest.raises(QSMConfigError, match="threshold"):
        vsharp(field, mask, (1, 1, 1), threshold=1.5)
    with pytest.raises(QSMConfigError, match="radii_mm"):
        vsharp(field, mask, (2, 2, 2), radii_mm=[1.0])
    with pytest.raises(QSMConfigError, match="max_iter"):
        pdf(field, mask, (1, 1, 1), max_iter=0)
    with pytest.raises(QSMConfigError, match="peel"):
        lbv(field, mask, (1, 1, 1), peel=-1)
    with pytest.raises(QSMConfigError, match="lam"):
        resharp(field, mask, (1, 1, 1), lam=-1.0)

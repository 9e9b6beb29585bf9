"""Challenge metrics on analytic cases: identical images, scaled copies, known LoG properties."""

import numpy as np
import pytest

from qsmliver import backend
from qsmliver.errors import QSMInputError
from qsmliver.metrics import hfen, log_kernel, nrmse, roi_slope, xsim


def _image(xp, shape=(20, 18, 16), seed=0):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    image = 0.05 * np.sin(3 * grids[0]) + 0.03 * grids[1] * grids[2] \
        + 0.01 * rng.standard_normal(shape)
    mask = grids[0] ** 2 + grids[1] ** 2 + grids[2] ** 2 < 0.8
    return xp.asarray(image), xp.asarray(mask)


def test_identical_images(xp):
    image, mask = _image(xp)
    assert nrmse(image, image, mask) == 0.0
    assert hfen(image, image, mask) == 0.0
    assert xsim(image, image, mask) == pytest.approx(1.0, abs=1e-12)


def test_nrmse_of_scaled_and_offset_copies(xp):
    image, mask = _image(xp)
    assert nrmse(1.5 * image, image, mask, demean=False) == pytest.approx(50.0)
    # an offset disappears with demeaning and not without
    assert nrmse(image + 0.1, image, mask) == pytest.approx(0.0, abs=1e-9)
    assert nrmse(image + 0.1, image, mask, demean=False) > 1.0
    assert hfen(2 * image, image, mask) == pytest.approx(100.0)


def test_xsim_decreases_with_noise():
    image, mask = _image(np)
    rng = np.random.default_rng(1)
    slight = xsim(image + 0.005 * rng.standard_normal(image.shape), image, mask)
    strong = xsim(image + 0.05 * rng.standard_normal(image.shape), image, mask)
    assert 1.0 > slight > strong


def test_log_kernel_has_zero_sum_and_negative_centre():
    kernel = log_kernel()
    assert kernel.shape == (15, 15, 15)
    assert abs(kernel.sum()) < 1e-12
    assert kernel[7, 7, 7] == kernel.min() < 0


def test_roi_slope_of_scaled_copy(xp):
    rng = np.random.default_rng(2)
    labels = xp.asarray(rng.integers(0, 5, size=(10, 10, 10)))
    truth = xp.asarray(np.array([0.0, 0.06, 0.05, 0.18, 0.02]))[labels]
    truth = truth + xp.asarray(0.001 * rng.standard_normal((10, 10, 10)))
    assert roi_slope(0.8 * truth - 0.3, truth, labels, [1, 2, 3, 4]) == pytest.approx(0.8)
    assert roi_slope(truth, truth, labels, [1, 2, 3, 4]) == pytest.approx(1.0)


def test_metric_errors():
    image, mask = _image(np)
    with pytest.raises(QSMInputError):
        nrmse(image, image[:-1], mask)
    with pytest.raises(QSMInputError):
        nrmse(image, image, np.zeros_like(mask))
    labels = np.ones(image.shape, int)
    with pytest.raises(QSMInputError):
        roi_slope(image, image, labels, [1, 7])


def test_metrics_return_python_floats(xp):
    image, mask = _image(xp)
    other = image * 0.9
    for value in (nrmse(other, image, mask), hfen(other, image, mask), xsim(other, image, mask)):
        assert type(value) is float
    assert backend.get_array_module(image) is xp

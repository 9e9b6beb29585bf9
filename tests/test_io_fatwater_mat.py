"""Reading fat-water MATLAB files (ISMRM toolbox imDataParams, data/te/Tesla)."""

import numpy as np
import pytest
import scipy.io

from qsmliver.errors import QSMInputError
from qsmliver.io.fatwater_mat import read_fatwater_mat


def _toolbox(tmp_path, *, clockwise=1, coils=1, te=(1e-3, 2e-3, 3e-3), mask=True):
    rng = np.random.default_rng(0)
    images = (rng.normal(size=(4, 5, 2, coils, len(te)))
              + 1j * rng.normal(size=(4, 5, 2, coils, len(te)))).astype(np.complex64)
    params = {"images": images, "TE": np.asarray(te)[None, :], "FieldStrength": 1.5,
              "PrecessionIsClockwise": clockwise}
    if mask:
        params["mask"] = np.ones((4, 5, 2), np.uint8)
    path = tmp_path / "case.mat"
    scipy.io.savemat(path, {"imDataParams": params})
    return path, images


def test_toolbox_layout_and_precession(tmp_path):
    path, images = _toolbox(tmp_path)
    case = read_fatwater_mat(path)
    assert case.layout == "imDataParams" and case.b0_t == 1.5 and case.mask.all()
    np.testing.assert_array_equal(case.signal, images[:, :, :, 0, :])
    np.testing.assert_allclose(case.te_s, [1e-3, 2e-3, 3e-3])
    path, images = _toolbox(tmp_path, clockwise=-1, mask=False)
    case = read_fatwater_mat(path)
    np.testing.assert_array_equal(case.signal, np.conj(images[:, :, :, 0, :]))
    assert case.mask is None


def test_plain_layout(tmp_path):
    data = (np.ones((3, 4, 6)) * np.exp(1j * np.arange(6))).astype(np.complex64)
    path = tmp_path / "slice.mat"
    scipy.io.savemat(path, {"data": data, "te": np.arange(1, 7)[None, :] * 1.1e-3,
                            "Tesla": 2.9})
    case = read_fatwater_mat(path)
    assert case.signal.shape == (3, 4, 1, 6) and case.layout == "data/te/Tesla"
    np.testing.assert_allclose(case.signal[:, :, 0], data)


@pytest.mark.parametrize("problem, message", [
    ("coils", "combine the coils"),
    ("te_ms", "seconds"),
    ("te_count", "echo times for"),
    ("other", "neither"),
    ("garbage", "not a readable"),
    ("missing", "no such file"),
])
def test_bad_files_name_the_file(tmp_path, problem, message):
    if problem == "coils":
        path, _ = _toolbox(tmp_path, coils=2)
    elif problem == "te_ms":
        path, _ = _toolbox(tmp_path, te=(1.0, 2.0, 3.0))
    elif problem == "te_count":
        path, _ = _toolbox(tmp_path, te=(1e-3, 2e-3))
        params = scipy.io.loadmat(path)["imDataParams"][0, 0]
        assert params["images"].shape[-1] == 2  # savemat made 2 echoes; write a 3-TE header
        scipy.io.savemat(path, {"imDataParams": {"images": params["images"],
                                                 "TE": [[1e-3, 2e-3, 3e-3]],
                                                 "FieldStrength": 3.0}})
    elif problem == "other":
        path = tmp_path / "other.mat"
        scipy.io.savemat(path, {"x": 1})
    elif problem == "garbage":
        path = tmp_path / "garbage.mat"
        path.write_bytes(b"not a mat file at all" * 10)
    else:
        path = tmp_path / "absent.mat"
    with pytest.raises(QSMInputError, match=message) as error:
        read_fatwater_mat(path)
    assert path.name in str(error.value)

"""MultiEchoGRE and QuantitativeMap: validation with clear, file-naming errors."""

from __future__ import annotations

import numpy as np
import pytest

from qsmliver import backend
from qsmliver.data import GYROMAGNETIC_RATIO_HZ_PER_T, MultiEchoGRE, QuantitativeMap, hz_to_ppm
from qsmliver.errors import QSMInputError

TE = (0.004, 0.008, 0.012)


def _signal(n_echoes=3, shape=(5, 4, 3)):
    return np.ones((*shape, n_echoes), dtype=np.complex128) * np.exp(1j * 0.3)


def test_valid_instance_and_derived_quantities():
    affine = np.diag([0.8, 0.9, 1.5, 1.0])
    gre = MultiEchoGRE(_signal(), te_s=TE, b0_t=1.5, affine=affine, source_files=["a.dcm"])
    assert gre.shape == (5, 4, 3) and gre.n_echoes == 3
    assert gre.signal.dtype == np.complex128
    np.testing.assert_allclose(gre.voxel_size_mm, [0.8, 0.9, 1.5])
    np.testing.assert_allclose(gre.b0_dir, [0, 0, 1])
    assert gre.delta_te_s == pytest.approx(0.004)
    np.testing.assert_allclose(gre.phase, 0.3)
    np.testing.assert_allclose(gre.magnitude, 1.0)
    summary = gre.describe()
    assert summary["EchoTime_s"] == list(TE) and summary["SourceFiles"] == ["a.dcm"]


def test_real_input_becomes_complex64_and_3d_is_one_echo():
    gre = MultiEchoGRE(np.ones((4, 4, 4)), te_s=0.01, b0_t=3)
    assert gre.signal.dtype == np.complex64 and gre.n_echoes == 1
    assert gre.delta_te_s is None


def test_b0_dir_is_normalised():
    gre = MultiEchoGRE(_signal(), te_s=TE, b0_t=3, b0_dir=(0, 3, 4))
    np.testing.assert_allclose(gre.b0_dir, [0, 0.6, 0.8])


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"te_s": (0.004, 0.008)}, "EchoTime", "2 echo times for 3 echoes"),
        ({"te_s": (0.004, 0.004, 0.012)}, "EchoTime", "strictly increasing"),
        ({"te_s": (0.012, 0.008, 0.004)}, "EchoTime", "strictly increasing"),
        ({"te_s": (4.0, 8.0, 12.0)}, "EchoTime", "seconds, not milliseconds"),
        ({"te_s": (-0.001, 0.008, 0.012)}, "EchoTime", "positive"),
        ({"te_s": None}, "EchoTime", "missing"),
        ({"b0_t": None}, "MagneticFieldStrength", "missing"),
        ({"b0_t": -3}, "MagneticFieldStrength", "plausible"),
        ({"b0_t": "x"}, "MagneticFieldStrength", "not a number"),
        ({"b0_dir": (0, 0, 0)}, "b0_dir", "no length"),
        ({"b0_dir": (0, 1)}, "b0_dir", "3 finite numbers"),
        ({"affine": np.zeros((4, 4))}, "affine", "singular"),
        ({"affine": np.eye(3)}, "affine", "4x4"),
        ({"affine": np.eye(4), "voxel_size_mm": (2, 2, 2)}, "voxel_size_mm", "disagrees"),
        ({"voxel_size_mm": (1, -1, 1)}, "voxel_size_mm", "positive"),
    ],
)
def test_invalid_metadata_names_file_and_field(kwargs, field, message):
    arguments = {"te_s": TE, "b0_t": 3.0, "source_files": ["scan/echo1.nii.gz"], **kwargs}
    with pytest.raises(QSMInputError, match=message) as info:
        MultiEchoGRE(_signal(), **arguments)
    text = str(info.value)
    assert text.startswith("scan/echo1.nii.gz: ")
    assert field in text
    assert info.value.field == field


def test_non_finite_and_bad_shapes():
    signal = _signal()
    signal[1, 1, 1, 0] = np.nan
    signal[2, 1, 1, 2] = np.inf
    with pytest.raises(QSMInputError, match="2 voxels are NaN or infinite"):
        MultiEchoGRE(signal, te_s=TE, b0_t=3, source_files=["x.dcm"])
    with pytest.raises(QSMInputError, match="2-D"):
        MultiEchoGRE(np.ones((4, 4)), te_s=TE, b0_t=3)
    with pytest.raises(QSMInputError, match="empty"):
        MultiEchoGRE(np.ones((0, 4, 4, 3)), te_s=TE, b0_t=3)


def test_error_lists_many_files_briefly():
    files = [f"slice{i}.dcm" for i in range(10)]
    with pytest.raises(QSMInputError, match=r"slice0.dcm \(and 9 more files\)"):
        MultiEchoGRE(_signal(), te_s=None, b0_t=3, source_files=files)


def test_to_device_keeps_metadata(xp):
    gre = MultiEchoGRE(_signal(), te_s=TE, b0_t=3, vendor="Siemens")
    moved = gre.to("cpu" if xp is np else "cuda")
    assert backend.get_array_module(moved.signal) is xp
    assert moved.vendor == "Siemens"
    np.testing.assert_array_equal(moved.te_s, gre.te_s)


def test_hz_to_ppm():
    b0 = 3.0
    assert hz_to_ppm(GYROMAGNETIC_RATIO_HZ_PER_T * b0 * 1e-6, b0) == pytest.approx(1.0)


def test_quantitative_map_requires_units():
    qmap = QuantitativeMap(np.zeros((2, 2, 2)), "Chimap", "ppm", np.eye(4), method="TKD",
                           parameters={"threshold": 0.2})
    assert qmap.sidecar() == {"Units": "ppm", "Method": "TKD",
                              "Parameters": {"threshold": 0.2}}
    with pytest.raises(ValueError, match="unit"):
        QuantitativeMap(np.zeros(2), "Chimap", "", np.eye(4))
    with pytest.raises(ValueError, match="4x4"):
        QuantitativeMap(np.zeros(2), "Chimap", "ppm", np.eye(3))

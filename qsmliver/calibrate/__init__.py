"""LIC calibrations: literature curves (R2*, R2, χ → LIC) and fitting your own against chemical
LIC (OLS, Deming, Passing-Bablok, correlation, Bland-Altman, leave-one-out).

>>> from qsmliver.calibrate import convert_to_lic
>>> round(convert_to_lic(200.0, "hernando2023_1.5t", b0_t=1.5), 3)
5.046
"""

from qsmliver.calibrate.fit import (
    CalibrationReport,
    calibrate_table,
    fit_calibrations,
    load_calibration,
    read_calibration_table,
    write_calibration_outputs,
)
from qsmliver.calibrate.literature import (
    CALIBRATIONS,
    Calibration,
    CalibrationFieldWarning,
    CalibrationRangeWarning,
    chi_calibration,
    convert_to_lic,
    get_calibration,
    list_calibrations,
)
from qsmliver.calibrate.stats import (
    bland_altman,
    correlation,
    deming,
    leave_one_out,
    ols,
    passing_bablok,
)

__all__ = [
    "CALIBRATIONS",
    "Calibration",
    "CalibrationFieldWarning",
    "CalibrationRangeWarning",
    "CalibrationReport",
    "bland_altman",
    "calibrate_table",
    "chi_calibration",
    "convert_to_lic",
    "correlation",
    "deming",
    "fit_calibrations",
    "get_calibration",
    "leave_one_out",
    "list_calibrations",
    "load_calibration",
    "ols",
    "passing_bablok",
    "read_calibration_table",
    "write_calibration_outputs",
]

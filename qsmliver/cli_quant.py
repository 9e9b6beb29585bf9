"""The ``qsmliver r2star``, ``qsmliver lic`` and ``qsmliver calibrate`` commands.

Workflows only (DESIGN section 1): read the input, call :mod:`qsmliver.relaxometry` /
:mod:`qsmliver.calibrate`, write the outputs through a staging folder so that a failure leaves
no partial output. ``register(commands)`` adds the sub-commands to the parser of
:func:`qsmliver.cli.build_parser`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = ["register"]

_MAP_SUFFIX = {"r2star": "R2starmap", "r2": "R2map", "chi": "Chimap"}


def register(commands: Any) -> None:
    """Add the ``r2star``, ``lic`` and ``calibrate`` sub-commands to ``commands``.

    Parameters
    ----------
    commands : argparse._SubParsersAction
        The object returned by ``parser.add_subparsers()``.
    """
    from qsmliver.cli import _add_input_options
    from qsmliver.relaxometry import R2STAR_METHODS

    r2star = commands.add_parser(
        "r2star", help="fit an R2* map (with S0 and goodness of fit) to multi-echo magnitudes")
    _add_input_options(r2star)
    r2star.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    r2star.add_argument("--method", choices=R2STAR_METHODS, default="truncation",
                        help="fitting method (default: truncation, the seed study's model)")
    r2star.add_argument("--mask", metavar="FILE", help="NIfTI mask of the voxels to fit")
    r2star.add_argument("--noise-sigma", type=float, metavar="SIGMA",
                        help="noise standard deviation (magnitude units); default: estimated "
                             "from the background air")
    r2star.add_argument("--r2star-max", type=float, default=3000.0, metavar="PER_S",
                        help="largest R2* reported, 1/s (default 3000)")
    r2star.add_argument("--name", help="output file name prefix (default: from the input)")
    r2star.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    r2star.set_defaults(handler=_cmd_r2star)

    lic = commands.add_parser(
        "lic", help="convert an R2*, R2 or χ map (or ROI values) to liver iron concentration")
    lic.add_argument("input", nargs="?", metavar="MAP",
                     help="NIfTI map of R2*/R2 (1/s) or χ (ppm); or use --value")
    lic.add_argument("--from", dest="measure", required=True, choices=("r2star", "r2", "chi"),
                     help="what the input holds")
    lic.add_argument("--calibration", required=True, metavar="NAME|FILE",
                     help="a published calibration (see --list) or a calibration.json written "
                          "by 'qsmliver calibrate'")
    lic.add_argument("--calibration-name", metavar="NAME",
                     help="which calibration of a calibration.json holding several")
    lic.add_argument("--value", nargs="+", type=float, metavar="X",
                     help="convert these ROI values instead of a map and print the LIC")
    lic.add_argument("--b0", type=float, metavar="TESLA",
                     help="field strength of the measurement (default: the map's sidecar)")
    lic.add_argument("--allow-field-mismatch", action="store_true",
                     help="use a calibration derived at another field strength (warns)")
    lic.add_argument("--chi-slope", type=float, metavar="PPM_PER_MG_G",
                     help="chi_linear: χ per LIC slope (default 0.15, an assumption)")
    lic.add_argument("--chi-offset", type=float, metavar="PPM",
                     help="chi_linear: χ of iron-free liver (default -0.1)")
    lic.add_argument("-o", "--output", metavar="OUT", help="output folder for a map")
    lic.add_argument("--name", help="output file name prefix (default: from the input)")
    lic.add_argument("--overwrite", action="store_true")
    lic.set_defaults(handler=_cmd_lic)

    calibrate = commands.add_parser(
        "calibrate", help="fit your own LIC calibration from a CSV table (subject, "
                          "measurements, chemical LIC)")
    calibrate.add_argument("table", metavar="TABLE", help="CSV: subject, r2star/r2/chi, lic, "
                                                          "[field_strength_t], [group]")
    calibrate.add_argument("-o", "--output", required=True, metavar="OUT")
    calibrate.add_argument("--method", choices=("deming", "ols", "passing_bablok"),
                           default="deming", help="regression saved as the calibration")
    calibrate.add_argument("--alpha", type=float, default=0.05,
                           help="1 - confidence level of the intervals (default 0.05)")
    calibrate.add_argument("--error-ratio", type=float, metavar="LAMBDA",
                           help="Deming error-variance ratio Var(LIC error)/Var(x error)")
    calibrate.add_argument("--plot-format", nargs="+", default=["png", "svg"],
                           choices=("png", "svg", "pdf"))
    calibrate.add_argument("--overwrite", action="store_true")
    calibrate.set_defaults(handler=_cmd_calibrate)


# -- r2star -----------------------------------------------------------------------------------
def _cmd_r2star(args: argparse.Namespace) -> int:
    from qsmliver.cli import EXIT_OK, _default_name, _read_input
    from qsmliver.data import QuantitativeMap
    from qsmliver.io.staging import staged_output_dir
    from qsmliver.io.writers import write_map
    from qsmliver.relaxometry import fit_r2star

    gre = _read_input(args)
    mask = _read_mask(args.mask, gre.shape) if args.mask else None
    fit = fit_r2star(gre.magnitude, gre.te_s, method=args.method, mask=mask,
                     noise_sigma=args.noise_sigma, r2star_range=(0.0, args.r2star_max))
    name = args.name or _default_name(Path(args.inputs[0]))
    inputs = list(gre.source_files)
    extra = {"MagneticFieldStrength": float(gre.b0_t), "EchoTime": list(fit.parameters["te_s"])}
    maps = [
        (f"{name}_R2starmap.nii.gz",
         QuantitativeMap(fit.r2star_per_s, "R2starmap", "1/s", gre.affine,
                         f"R2* ({args.method})", fit.parameters)),
        (f"{name}_desc-S0_map.nii.gz",
         QuantitativeMap(fit.s0, "desc-S0_map", "a.u.", gre.affine, f"R2* ({args.method})",
                         fit.parameters)),
        (f"{name}_desc-R2starfit_map.nii.gz",
         QuantitativeMap(fit.goodness, "desc-R2starfit_map", "1", gre.affine,
                         f"R2* ({args.method}) goodness of fit: coefficient of determination",
                         fit.parameters)),
    ]
    out = Path(args.output)
    with staged_output_dir(out, overwrite=args.overwrite) as stage:
        for filename, qmap in maps:
            write_map(qmap, stage / filename, inputs=inputs, overwrite=True, extra=extra)
    for filename, _ in maps:
        print(out / filename)
    return EXIT_OK


def _read_mask(path: str, shape: tuple[int, ...]):
    import nibabel as nib
    import numpy as np

    from qsmliver.errors import QSMInputError

    file = Path(path)
    if not file.is_file():
        raise QSMInputError("no such file", file)
    try:
        data = np.asarray(nib.load(str(file)).dataobj)
    except Exception as exc:  # nibabel raises many types for a bad file
        raise QSMInputError(f"cannot read the mask: {exc}", file) from None
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if tuple(data.shape) != tuple(shape):
        raise QSMInputError(f"mask shape {data.shape} does not match the data {shape}", file,
                            "mask")
    return data > 0


# -- lic --------------------------------------------------------------------------------------
def _cmd_lic(args: argparse.Namespace) -> int:
    import numpy as np

    from qsmliver.calibrate import (
        CalibrationFieldWarning,
        CalibrationRangeWarning,
        chi_calibration,
        convert_to_lic,
        get_calibration,
        load_calibration,
    )
    from qsmliver.cli import EXIT_OK
    from qsmliver.errors import QSMConfigError

    if (args.input is None) == (args.value is None):
        raise QSMConfigError("give either a MAP or --value (not both)")
    if Path(args.calibration).suffix.lower() == ".json":
        calibration = load_calibration(args.calibration, args.calibration_name)
    else:
        calibration = get_calibration(args.calibration)
    if args.chi_slope is not None or args.chi_offset is not None:
        if calibration.measure != "chi":
            raise QSMConfigError("--chi-slope/--chi-offset apply to χ calibrations only")
        coeffs = calibration.coefficients
        calibration = chi_calibration(
            args.chi_slope if args.chi_slope is not None else coeffs["b"],
            args.chi_offset if args.chi_offset is not None else coeffs["a"],
            name=calibration.name)
    if calibration.measure != args.measure:
        raise QSMConfigError(f"calibration {calibration.name!r} converts {calibration.measure},"
                             f" not {args.measure} (--from)")

    if args.value is not None:
        b0 = args.b0
        _require_field(calibration, b0, "--b0")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lic = convert_to_lic(np.asarray(args.value, dtype=float), calibration, b0_t=b0,
                                 allow_field_mismatch=args.allow_field_mismatch)
        _report_warnings(caught, (CalibrationRangeWarning, CalibrationFieldWarning))
        unit = calibration.unit
        for value, result in zip(args.value, np.atleast_1d(lic), strict=True):
            print(f"{value:g} {unit} -> {result:.3f} mg Fe/g dw ({calibration.name})")
        return EXIT_OK

    if not args.output:
        raise QSMConfigError("-o/--output is required to convert a map")
    data, affine, sidecar, source = _read_map(args.input)
    b0 = args.b0 if args.b0 is not None else sidecar.get("MagneticFieldStrength")
    _require_field(calibration, b0, "--b0 (or MagneticFieldStrength in the map's sidecar)")
    mask = np.isfinite(data) & (data != 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lic = convert_to_lic(data, calibration, b0_t=b0, mask=mask,
                             allow_field_mismatch=args.allow_field_mismatch)
    _report_warnings(caught, (CalibrationRangeWarning, CalibrationFieldWarning))
    from qsmliver.cli import _default_name
    from qsmliver.data import QuantitativeMap
    from qsmliver.io.staging import staged_output_dir
    from qsmliver.io.writers import write_map

    name = args.name or _strip_map_suffix(_default_name(Path(args.input)))
    qmap = QuantitativeMap(lic, "desc-LIC_map", "mg Fe/g dw", affine,
                           f"LIC from {args.measure} ({calibration.name})",
                           {"calibration": calibration.to_dict(),
                            "field_strength_t": None if b0 is None else float(b0),
                            "allow_field_mismatch": bool(args.allow_field_mismatch)})
    out = Path(args.output)
    filename = f"{name}_desc-LIC_map.nii.gz"
    with staged_output_dir(out, overwrite=args.overwrite) as stage:
        write_map(qmap, stage / filename, inputs=[source], overwrite=True)
    print(out / filename)
    return EXIT_OK


def _require_field(calibration, b0, how: str) -> None:
    from qsmliver.errors import QSMConfigError

    if calibration.field_strength_t is not None and b0 is None:
        raise QSMConfigError(f"calibration {calibration.name!r} is for "
                             f"{calibration.field_strength_t:g} T: give the field strength "
                             f"with {how}")


def _report_warnings(caught, kinds) -> None:
    for item in caught:
        if issubclass(item.category, kinds):
            print(f"qsmliver: warning: {item.message}", file=sys.stderr)
        else:  # pass other warnings on unchanged
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)


def _strip_map_suffix(name: str) -> str:
    for suffix in ("_R2starmap", "_R2map", "_Chimap", "_desc-R2star_map"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _read_map(path: str):
    import json

    import nibabel as nib
    import numpy as np

    from qsmliver.errors import QSMInputError

    file = Path(path)
    if not file.is_file():
        raise QSMInputError("no such file", file)
    try:
        image = nib.load(str(file))
        data = np.asarray(image.dataobj, dtype=np.float64)
    except Exception as exc:  # nibabel raises many types for a bad file
        raise QSMInputError(f"cannot read the map: {exc}", file) from None
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise QSMInputError(f"expected a 3-D map, got shape {data.shape}", file)
    sidecar: dict[str, Any] = {}
    name = file.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            json_path = file.with_name(name[: -len(suffix)] + ".json")
            if json_path.is_file():
                try:
                    sidecar = json.loads(json_path.read_text(encoding="utf-8"))
                except ValueError as exc:
                    raise QSMInputError(f"cannot parse the sidecar: {exc}", json_path) from None
            break
    return data, image.affine, sidecar, str(file)


# -- calibrate --------------------------------------------------------------------------------
def _cmd_calibrate(args: argparse.Namespace) -> int:
    from qsmliver.calibrate import calibrate_table
    from qsmliver.cli import EXIT_OK

    report, files = calibrate_table(args.table, args.output, method=args.method,
                                    alpha=args.alpha, error_ratio=args.error_ratio,
                                    overwrite=args.overwrite,
                                    plot_formats=tuple(args.plot_format))
    for entry in report["calibrations"]:
        cal = entry["calibration"]
        stats = entry["statistics"]
        loo = stats.get("leave_one_out")
        extra = f", leave-one-out RMSE {loo['rmse']:.2f} mg/g" if loo else ""
        print(f"{cal.name}: {cal.formula} (n={stats['n']}, "
              f"r={stats['correlation']['pearson_r']:.3f}{extra})")
    for path in files:
        print(path)
    return EXIT_OK

"""The ``qsmliver`` command line.

Workflows only: parse arguments, call the readers/writers/pipeline, report. No array math
here (DESIGN section 1). Exit status: 0 success, 2 bad input or configuration (one line on
stderr), 1 internal failure (one line; the traceback with ``--debug``).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qsmliver import __version__
from qsmliver.errors import QSMConfigError, QSMError

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2


# -- shared option groups ---------------------------------------------------------------------
def _add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT",
        help="DICOM folder or files, a NIfTI magnitude file (phase found beside it), a folder "
             "of NIfTI files, or a BIDS subject/session folder",
    )
    group = parser.add_argument_group("input overrides")
    group.add_argument("--phase", nargs="+", metavar="FILE",
                       help="NIfTI phase file(s) matching the magnitude INPUT(s)")
    group.add_argument("--te", nargs="+", type=float, metavar="MS",
                       help="echo times in milliseconds (override the headers/sidecars)")
    group.add_argument("--b0", type=float, metavar="TESLA", help="field strength in tesla")
    group.add_argument("--b0-dir", nargs=3, type=float, metavar=("X", "Y", "Z"),
                       help="B0 direction in the voxel frame (default: from the affine)")
    group.add_argument("--phase-scale", default="auto",
                       choices=("auto", "radians", "siemens", "milliradians", "minmax"),
                       help="how NIfTI phase values are scaled (default: detect)")
    group.add_argument("--series", nargs="+", metavar="N",
                       help="DICOM series number(s) or SeriesInstanceUID to read")
    group.add_argument("--subject", help="BIDS subject label (without sub-)")
    group.add_argument("--session", help="BIDS session label (without ses-)")


def _read_options(args: argparse.Namespace, fmt: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if fmt == "dicom":
        if args.te or args.b0_dir or args.phase:
            raise QSMConfigError("--te, --b0-dir and --phase apply to NIfTI/BIDS input only")
        if args.b0 is not None:
            options["b0_t"] = args.b0
        if args.series:
            options["series"] = _parse_series(args.series)
        return options
    if args.series:
        raise QSMConfigError("--series applies to DICOM input only")
    if args.te:
        options["te_s"] = [t * 1e-3 for t in args.te]
    if args.b0 is not None:
        options["b0_t"] = args.b0
    if args.b0_dir:
        options["b0_dir"] = args.b0_dir
    options["phase_scale"] = args.phase_scale
    if fmt == "bids":
        if args.subject:
            options["subject"] = args.subject
        if args.session:
            options["session"] = args.session
    elif args.subject or args.session:
        raise QSMConfigError("--subject and --session apply to BIDS input only")
    return options


def _parse_series(values: list[str]) -> Any:
    parsed: list[Any] = [int(v) if v.isdigit() else v for v in values]
    return parsed[0] if len(parsed) == 1 else parsed


def _read_input(args: argparse.Namespace):
    from qsmliver import io

    inputs = [Path(p) for p in args.inputs]
    for path in inputs:
        if not path.exists():
            from qsmliver.errors import QSMInputError

            raise QSMInputError("no such file or folder", path)
    if args.phase:
        from qsmliver.io.nifti import read_nifti

        options = _read_options(args, "nifti")
        magnitude = inputs if len(inputs) > 1 else inputs[0]
        phase = [Path(p) for p in args.phase]
        return read_nifti(magnitude=magnitude, phase=phase if len(phase) > 1 else phase[0],
                          **options)
    if len(inputs) == 1:
        fmt = io.detect_format(inputs[0])
        return io.read(inputs[0], **_read_options(args, fmt))
    fmt = "nifti" if all(p.name.endswith((".nii", ".nii.gz")) for p in inputs) else "dicom"
    return io.read(inputs, **_read_options(args, fmt))


# -- commands ---------------------------------------------------------------------------------
def _cmd_info(args: argparse.Namespace) -> int:
    from qsmliver import io

    if (len(args.inputs) == 1 and not args.phase
            and io.detect_format(args.inputs[0]) == "dicom" and args.list_series):
        from qsmliver.io.dicom import scan_series

        for summary in scan_series(args.inputs[0]):
            print(summary)
        return EXIT_OK
    gre = _read_input(args)
    summary = gre.describe()
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    print(format_summary(summary))
    return EXIT_OK


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable lines for ``qsmliver info``."""
    te_ms = ", ".join(f"{t * 1e3:.3f}" for t in summary["EchoTime_s"])
    lines = [
        f"shape          {' x '.join(map(str, summary['Shape']))} voxels, "
        f"{summary['Echoes']} echoes",
        f"echo times     {te_ms} ms",
        f"field          {summary['MagneticFieldStrength_T']:g} T",
        "B0 direction   (" + ", ".join(f"{v:+.6f}" for v in summary["B0Direction_voxel"])
        + ") in the voxel frame",
        "voxel size     " + " x ".join(f"{v:.4g}" for v in summary["VoxelSize_mm"]) + " mm",
        f"vendor         {summary.get('Vendor') or 'unknown'}",
        f"phase          {'yes' if summary.get('PhaseAvailable', True) else 'no (magnitude only)'}",
    ]
    series = summary.get("Series")
    if series:
        lines.append(f"series         {series}")
    files = summary.get("SourceFiles", [])
    if files:
        shown = files[0] if len(files) == 1 else f"{files[0]} ... ({len(files)} files)"
        lines.append(f"read from      {shown}")
    return "\n".join(lines)


def _cmd_convert(args: argparse.Namespace) -> int:
    from qsmliver.io.staging import staged_output_dir
    from qsmliver.io.writers import write_bids_megre, write_gre_nifti

    gre = _read_input(args)
    out = Path(args.output)
    with staged_output_dir(out, overwrite=args.overwrite) as stage:
        if args.format == "bids":
            subject = args.to_subject or args.subject or "01"
            session = args.to_session or args.session
            written = write_bids_megre(gre, stage, subject, session=session, overwrite=True)
        else:
            name = args.name or _default_name(Path(args.inputs[0]))
            written = write_gre_nifti(gre, stage / name, overwrite=True)
        relative = [Path(p).relative_to(stage) for p in written]
    for path in relative:
        print(out / path)
    return EXIT_OK


def _default_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm", ".gz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "gre"


def _cmd_simulate(args: argparse.Namespace) -> int:
    from qsmliver.io.staging import staged_output_dir
    from qsmliver.simulate.write import phantom_summary, write_phantom

    options: dict[str, Any] = _load_phantom_config(args.config) if args.config else {}
    options["seed"] = args.seed if args.seed is not None else options.get("seed", 0)
    if args.snr is not None or "snr" not in options:
        options["snr"] = 100.0 if args.snr is None else args.snr
    if options["snr"] == 0:  # 0 means noise-free, on the command line and in a config
        options["snr"] = None
    for name, value in (("shape", args.shape), ("voxel_size_mm", args.voxel_size),
                        ("b0_t", args.b0), ("b0_dir", args.b0_dir)):
        if value is not None:
            options[name] = tuple(value) if isinstance(value, list) else value
    if args.te:
        options["te_s"] = tuple(t * 1e-3 for t in args.te)
    if args.anatomy == "brain":
        if args.lic is not None or args.pdff is not None or args.fat_spectrum:
            raise QSMConfigError("--lic, --pdff and --fat-spectrum apply to the abdomen phantom")
        from qsmliver.simulate.brain import brain_phantom

        phantom = brain_phantom(**options)
    else:
        from qsmliver.simulate.abdomen import abdomen_phantom

        if args.lic is not None:
            options["lic_mg_per_g"] = args.lic
        if args.pdff is not None:
            options["liver_pdff_percent"] = args.pdff
        if args.fat_spectrum:
            options["fat_spectrum"] = args.fat_spectrum
        phantom = abdomen_phantom(**options)
    out = Path(args.output)
    with staged_output_dir(out, overwrite=args.overwrite) as stage:
        written = write_phantom(phantom, stage, formats=args.format, subject=args.subject,
                                vendor=args.vendor, overwrite=True)
        count = len(written)
    print(phantom_summary(phantom))
    print(f"wrote {count} files to {out}")
    return EXIT_OK


def _load_phantom_config(path: str) -> dict[str, Any]:
    """Phantom keyword arguments from a JSON or TOML file (e.g. ``{"chi_ppm": {...}}``)."""
    from qsmliver.io.config import read_config_file

    return read_config_file(path, "phantom config")


def _parse_set(items: list[str]) -> dict[str, Any]:
    """``SECTION.KEY=VALUE`` strings to a nested mapping; VALUE is JSON when it parses."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise QSMConfigError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        section, dot, key = name.partition(".")
        if dot:
            out.setdefault(section, {})[key] = value
        else:
            out[section] = value
    return out


def _recon_prefix(args: argparse.Namespace, gre) -> str:
    if args.name:
        return args.name
    entities = gre.metadata.get("BIDSEntities")
    if entities:
        return str(entities)
    path = Path(args.inputs[0])
    for part in (path, *path.parents):
        if part.name.startswith("sub-"):
            return part.name.split("_")[0]
        if part.name.startswith("ses-") and part.parent.name.startswith("sub-"):
            return f"{part.parent.name}_{part.name}"
    return _default_name(path)


def _cmd_recon(args: argparse.Namespace) -> int:
    from qsmliver.io.results import read_mask, write_recon
    from qsmliver.pipeline import ReconConfig, load_config, recon

    config = load_config(args.config) if args.config else ReconConfig.from_mapping()
    overrides: dict[str, Any] = {"anatomy": args.anatomy}
    for section, key, value in (("field", "method", args.field_method),
                                ("field", "unwrap", args.unwrap),
                                ("bgremove", "method", args.bgremove),
                                ("inversion", "method", args.inversion),
                                ("reference", "method", args.reference),
                                ("r2star", "method", args.r2star_method)):
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    for name in ("device", "dtype"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.bipolar:
        overrides.setdefault("bipolar", {})["correct"] = True
    if args.readout_axis is not None:
        overrides.setdefault("bipolar", {})["readout_axis"] = args.readout_axis
    config = config.updated(overrides, where="command line")
    if args.set:
        config = config.updated(_parse_set(args.set), where="--set")
    gre = _read_input(args)
    mask = read_mask(args.mask, shape=gre.shape, affine=gre.affine) if args.mask else None
    reference_roi = (read_mask(args.reference_roi, shape=gre.shape, affine=gre.affine)
                     if args.reference_roi else None)
    result = recon(gre, args.anatomy, mask=mask, config=config, reference_roi=reference_roi)
    prefix = _recon_prefix(args, gre)
    written = write_recon(result, args.output, prefix, inputs=gre.source_files,
                          overwrite=args.overwrite, montage=not args.no_montage)
    timings = result.provenance["Timings_s"]
    print(f"reconstructed {prefix} on {result.provenance['Device']} in "
          f"{sum(timings.values()):.1f} s ("
          + ", ".join(f"{k} {t:.1f} s" for k, t in timings.items()) + ")")
    for path in written:
        print(path)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from qsmliver.demo import run_demo

    for line in run_demo(Path(args.output), overwrite=args.overwrite):
        print(line)
    return EXIT_OK


def _one_line(exc: BaseException) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


# -- parser and entry point -------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``qsmliver`` command."""
    parser = argparse.ArgumentParser(
        prog="qsmliver",
        description="Quantitative susceptibility mapping, R2*, fat fraction and liver iron "
                    "from multi-echo GRE MRI.",
    )
    parser.add_argument("--version", action="version", version=f"qsmliver {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="print the full traceback on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = commands.add_parser("info", help="say what an input holds (shape, TEs, B0, ...)")
    _add_input_options(info)
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.add_argument("--list-series", action="store_true",
                      help="list every DICOM series in the folder instead of reading one")
    info.set_defaults(handler=_cmd_info)

    convert = commands.add_parser("convert", help="convert DICOM/NIfTI/BIDS input to NIfTI or "
                                                  "BIDS MEGRE")
    _add_input_options(convert)
    convert.add_argument("-o", "--output", required=True, metavar="OUT",
                         help="output folder (BIDS root for --format bids)")
    convert.add_argument("--format", choices=("nifti", "bids"), default="nifti")
    convert.add_argument("--name", help="file name prefix for --format nifti")
    convert.add_argument("--to-subject", help="BIDS subject label of the output")
    convert.add_argument("--to-session", help="BIDS session label of the output")
    convert.add_argument("--overwrite", action="store_true",
                         help="replace existing output files")
    convert.set_defaults(handler=_cmd_convert)

    simulate = commands.add_parser("simulate", help="make a brain or abdomen phantom with known "
                                                    "truth and write it to disk")
    simulate.add_argument("anatomy", choices=("brain", "abdomen"))
    simulate.add_argument("-o", "--output", required=True, metavar="OUT")
    simulate.add_argument("--shape", nargs=3, type=int, metavar=("X", "Y", "Z"))
    simulate.add_argument("--voxel-size", nargs=3, type=float, metavar=("DX", "DY", "DZ"),
                          help="voxel size in mm")
    simulate.add_argument("--b0", type=float, metavar="TESLA", help="field strength")
    simulate.add_argument("--b0-dir", nargs=3, type=float, metavar=("X", "Y", "Z"),
                          help="B0 direction in the voxel frame (tilted head/torso)")
    simulate.add_argument("--te", nargs="+", type=float, metavar="MS",
                          help="echo times in milliseconds")
    simulate.add_argument("--snr", type=float,
                          help="signal-to-noise ratio of the first echo (0: no noise; "
                               "default 100)")
    simulate.add_argument("--seed", type=int)
    simulate.add_argument("--config", metavar="FILE",
                          help="JSON or TOML file of phantom parameters, e.g. chi_ppm / "
                               "r2star_per_s tables per tissue; options given here win")
    simulate.add_argument("--lic", type=float, metavar="MG_PER_G",
                          help="abdomen: liver iron concentration, mg Fe/g dry weight")
    simulate.add_argument("--pdff", type=float, metavar="PERCENT",
                          help="abdomen: liver proton-density fat fraction")
    simulate.add_argument("--fat-spectrum", choices=("ismrm", "hamilton"),
                          help="abdomen: fat model")
    simulate.add_argument("--format", nargs="+", default=["bids", "nifti"],
                          choices=("bids", "nifti", "dicom"))
    simulate.add_argument("--vendor", default="siemens", choices=("siemens", "ge", "philips"),
                          help="vendor conventions of the DICOM output")
    simulate.add_argument("--subject", default="sim", help="BIDS subject label")
    simulate.add_argument("--overwrite", action="store_true")
    simulate.set_defaults(handler=_cmd_simulate)

    recon = commands.add_parser("recon", help="reconstruct χ, field, local field, mask and R2* "
                                              "from multi-echo GRE")
    _add_input_options(recon)
    recon.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    recon.add_argument("--anatomy", choices=("brain", "liver"), default="brain")
    recon.add_argument("--mask", metavar="NIFTI", help="user mask on the GRE grid "
                                                       "(replaces the automatic mask)")
    recon.add_argument("--config", metavar="FILE", help="pipeline configuration (TOML/JSON)")
    recon.add_argument("--field-method", choices=("complex", "linear"))
    recon.add_argument("--unwrap", choices=("quality", "laplacian", "skimage"))
    recon.add_argument("--bgremove", metavar="METHOD",
                       help="background removal: auto, none, vsharp, pdf, lbv, resharp")
    recon.add_argument("--inversion", metavar="METHOD",
                       help="dipole inversion: auto, tkd, tikhonov, ilsqr, tv_admm, medi, ndi, "
                            "tfi (total field)")
    recon.add_argument("--reference", choices=("auto", "mean", "csf", "roi", "sat", "muscle",
                                               "none"),
                       help="χ reference (auto: brain mean, liver subcutaneous fat)")
    recon.add_argument("--reference-roi", metavar="NIFTI",
                       help="χ reference region for --reference roi (required) or muscle "
                            "(optional; default: automatic paraspinal muscle)")
    recon.add_argument("--r2star-method", metavar="METHOD")
    recon.add_argument("--bipolar", action="store_true",
                       help="bipolar readout: remove the odd/even echo phase error (Lu et al. "
                            "2008) before the field map or fat-water separation")
    recon.add_argument("--readout-axis", type=int, choices=(0, 1, 2),
                       help="voxel axis of the readout for --bipolar (default: from the DICOM "
                            "or BIDS phase-encoding metadata)")
    recon.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                       help="any configuration value, e.g. inversion.lam=0.001 (repeatable)")
    recon.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    recon.add_argument("--dtype", choices=("float32", "float64"))
    recon.add_argument("--name", help="output file prefix (default: BIDS subject or input name)")
    recon.add_argument("--no-montage", action="store_true", help="skip the QC PNG")
    recon.add_argument("--overwrite", action="store_true")
    recon.set_defaults(handler=_cmd_recon)

    demo = commands.add_parser("demo", help="make a synthetic acquisition and run the toolkit "
                                            "on it")
    demo.add_argument("-o", "--output", default="demo_output", metavar="OUT")
    demo.add_argument("--overwrite", action="store_true")
    demo.set_defaults(handler=_cmd_demo)

    from qsmliver.cli_quant import register

    register(commands)  # r2star, lic, calibrate
    from qsmliver.cli_analysis import register as register_analysis

    register_analysis(commands)  # roi, groups, monitor
    from qsmliver.cli_batch import register as register_batch

    register_batch(commands)  # batch
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    from qsmliver.cli_batch import bids_app_argv

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(bids_app_argv(argv) or argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.handler(args)
    except QSMError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"qsmliver: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("qsmliver: interrupted; no partial output was left", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"qsmliver: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``qsmliver roi``, ``qsmliver liver-rois``, ``qsmliver groups`` and ``qsmliver monitor``
commands.

Workflows only (DESIGN section 1): read the inputs, call :mod:`qsmliver.analysis`, write the
outputs atomically (a folder of outputs through a staging folder). ``register(commands)`` adds
the sub-commands to the parser of :func:`qsmliver.cli.build_parser`.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import numpy as np

from qsmliver.errors import QSMConfigError, QSMInputError

__all__ = ["map_name_from_path", "register"]

#: BIDS suffix / desc- entity -> short map name used in the tables.
_MAP_NAMES = (
    (r"_Chimap$", "chi"), (r"_R2starmap$", "r2star"), (r"_T2starmap$", "t2star"),
    (r"_R2map$", "r2"), (r"desc-PDFF_map$", "pdff"), (r"desc-LIC_map$", "lic"),
    (r"desc-localfield_map$", "localfield"), (r"_fieldmap$", "field"),
    (r"desc-water_map$", "water"), (r"desc-fat_map$", "fat"),
)


def register(commands: Any) -> None:
    """Add the ``roi``, ``liver-rois``, ``groups`` and ``monitor`` sub-commands.

    Parameters
    ----------
    commands : argparse._SubParsersAction
        The object returned by ``parser.add_subparsers()``.
    """
    roi = commands.add_parser(
        "roi", help="ROI statistics of maps (χ, R2*, PDFF, LIC) over a label map -> TSV/CSV")
    roi.add_argument("maps", nargs="+", metavar="MAP", help="NIfTI maps on the label grid")
    roi.add_argument("--labels", required=True, metavar="DSEG",
                     help="NIfTI label map (dseg) or a binary ROI mask")
    roi.add_argument("--label-table", metavar="FILE",
                     help="label names: BIDS dseg TSV, JSON or FreeSurfer LUT (default: the "
                          "TSV beside DSEG, else --convention)")
    roi.add_argument("--convention", metavar="NAME",
                     help="label convention: freesurfer, synthseg, first, qsmliver-brain, "
                          "qsmliver-abdomen (built-in tables), or 'recognised' to require "
                          "known structure names in --label-table")
    roi.add_argument("--map-names", nargs="+", metavar="NAME",
                     help="names of the maps in the table (default: from the file names, "
                          "e.g. _Chimap -> chi)")
    roi.add_argument("--erode-mm", type=float, default=0.0, metavar="MM",
                     help="erode every label by this radius first (default 0)")
    roi.add_argument("--trim-percent", type=float, default=0.0, metavar="PERCENT",
                     help="drop this percentage of each label's lowest and highest values")
    roi.add_argument("--percentiles", nargs="+", type=float, default=[5, 25, 50, 75, 95],
                     metavar="Q", help="percentiles to report (default 5 25 50 75 95)")
    roi.add_argument("--select", nargs="+", metavar="NAME",
                     help="report only these labels (names or numbers)")
    roi.add_argument("--subject", metavar="ID", help="add a 'subject' column with this value")
    roi.add_argument("-o", "--output", required=True, metavar="TABLE",
                     help="output table (.tsv, or .csv for commas)")
    roi.add_argument("--overwrite", action="store_true")
    roi.set_defaults(handler=_cmd_roi)

    liver = commands.add_parser(
        "liver-rois", help="place circular liver ROIs automatically (or take drawn ones) and "
                           "report ROI and whole-liver statistics")
    liver.add_argument("maps", nargs="+", metavar="MAP",
                       help="NIfTI maps (R2*, χ, PDFF, LIC); all are reported, the first "
                            "--detect ones find vessels")
    liver.add_argument("--liver-mask", required=True, metavar="MASK", help="NIfTI liver mask")
    liver.add_argument("--map-names", nargs="+", metavar="NAME")
    liver.add_argument("--rois", metavar="MASK",
                       help="user-drawn ROI mask or label map (skips automatic placement)")
    liver.add_argument("--n-rois", type=int, default=3, help="number of ROIs (default 3)")
    liver.add_argument("--area-cm2", type=float, default=1.1, help="ROI area (default 1.1)")
    liver.add_argument("--slice", type=int, metavar="K",
                       help="slice index (default: the portal-vein level, found automatically)")
    liver.add_argument("--exclude", metavar="MASK", help="NIfTI mask of vessels/lesions")
    liver.add_argument("--detect", type=int, default=None, metavar="N",
                       help="use the first N maps to find vessels (default: all)")
    liver.add_argument("--outlier-z", type=float, default=3.0,
                       help="robust z threshold for vessel/outlier voxels (default 3)")
    liver.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    liver.add_argument("--name", default="liver", help="output file prefix (default liver)")
    liver.add_argument("--overwrite", action="store_true")
    liver.set_defaults(handler=_cmd_liver_rois)

    groups = commands.add_parser(
        "groups", help="compare two groups per ROI (e.g. MS vs controls on deep grey matter "
                       "χ): ANCOVA, effect sizes, FDR")
    groups.add_argument("table", metavar="TABLE",
                        help="ROI table (TSV/CSV, one row per subject and ROI, e.g. from "
                             "'qsmliver roi --subject' or a batch cohort table)")
    groups.add_argument("--participants", metavar="FILE",
                        help="participants TSV/CSV (participant_id, group, age, sex, ...) "
                             "joined on the subject")
    groups.add_argument("--subject-column", default=None,
                        help="subject column of TABLE (default: subject or participant_id)")
    groups.add_argument("--group-column", default="group")
    groups.add_argument("--groups", nargs=2, metavar=("REFERENCE", "OTHER"),
                        help="the two groups (difference = OTHER − REFERENCE)")
    groups.add_argument("--value", default="mean", help="value column (default mean)")
    groups.add_argument("--map", dest="map_name", metavar="NAME",
                        help="use the rows of this map only (column 'map')")
    groups.add_argument("--roi-column", default="label_name")
    groups.add_argument("--rois", nargs="+", metavar="NAME",
                        help="compare only these ROIs (after pooling)")
    groups.add_argument("--dgm", action="store_true",
                        help="compare only deep grey matter structures (recognised names)")
    groups.add_argument("--pool-hemispheres", action="store_true",
                        help="merge left and right of each structure (voxel-weighted)")
    groups.add_argument("--covariates", nargs="*", default=["age", "sex", "volume_mm3"],
                        help="ANCOVA covariates present in the data (default: age sex "
                             "volume_mm3, those missing are skipped with a note)")
    groups.add_argument("--alpha", type=float, default=0.05)
    groups.add_argument("-o", "--output", required=True, metavar="TABLE",
                        help="output table (.tsv or .csv)")
    groups.add_argument("--overwrite", action="store_true")
    groups.set_defaults(handler=_cmd_groups)

    monitor = commands.add_parser(
        "monitor", help="longitudinal liver-iron monitoring: consecutive exam pairs, "
                        "concordance of imaging and ferritin, correlations, ANCOVA, plots")
    monitor.add_argument("table", metavar="TABLE",
                         help="CSV/TSV: patient_id, date, r2star_per_s and/or chi_ppm and/or "
                              "lic_mg_per_g, ferritin_ng_per_ml, therapy")
    monitor.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    monitor.add_argument("--imaging", choices=("r2star", "chi", "lic"),
                         help="imaging measure to classify (default: R2* when present)")
    monitor.add_argument("--threshold", action="append", default=[], metavar="MEASURE=VALUE",
                         help="real-change threshold, e.g. ferritin=14%% (default), "
                              "r2star=20 (1/s, default), chi=0.05 (ppm); repeatable")
    monitor.add_argument("--baseline-min", action="append", default=[],
                         metavar="MEASURE=VALUE",
                         help="keep patients whose first exam exceeds this, e.g. r2star=70")
    monitor.add_argument("--therapy-on", choices=("later", "earlier"), default="later",
                         help="an exam's therapy is the one since the previous exam (later, "
                              "default) or until the next (earlier)")
    monitor.add_argument("--alpha", type=float, default=0.05)
    monitor.add_argument("--no-plots", action="store_true")
    monitor.add_argument("--overwrite", action="store_true")
    monitor.set_defaults(handler=_cmd_monitor)


# -- helpers ----------------------------------------------------------------------------------
def map_name_from_path(path: str | Path) -> str:
    """Short map name from a file name (``sub-01_Chimap.nii.gz -> chi``; else the stem)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    for pattern, short in _MAP_NAMES:
        if re.search(pattern, name):
            return short
    return name


def _load_volume(path: str | Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    file = Path(path)
    if not file.is_file():
        raise QSMInputError(f"no such {what} file", file)
    try:
        image = nib.load(str(file))
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types for broken files
        raise QSMInputError(f"cannot read the {what}: {exc}", file) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise QSMInputError(f"{what} must be 3-D, got shape {data.shape}", file)
    return np.asarray(data), np.asarray(image.affine, dtype=np.float64)


def _load_maps(paths: list[str], names: list[str] | None, shape: tuple[int, ...],
               affine: np.ndarray, grid_of: str) -> dict[str, np.ndarray]:
    if names is not None and len(names) != len(paths):
        raise QSMConfigError(f"--map-names gives {len(names)} names for {len(paths)} maps")
    names = names or [map_name_from_path(p) for p in paths]
    if len(set(names)) != len(names):
        raise QSMConfigError(f"map names repeat ({names}); give distinct --map-names")
    maps = {}
    for path, name in zip(paths, names, strict=True):
        data, map_affine = _load_volume(path, "map")
        if data.shape != shape:
            raise QSMInputError(f"map shape {data.shape} differs from the {grid_of} shape "
                                f"{shape}", path, "shape")
        if not np.allclose(map_affine, affine, atol=1e-2):
            raise QSMInputError(f"map geometry (affine) differs from the {grid_of}'s; "
                                "resample it first", path, "affine")
        if data.dtype.kind not in "biuf":
            raise QSMInputError(f"unsupported data type {data.dtype}", path)
        maps[name] = data.astype(np.float64)
    return maps


def _write_table(frame: Any, path: str | Path, overwrite: bool) -> Path:
    from qsmliver.io.atomic import atomic_path

    path = Path(path)
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    with atomic_path(path, overwrite=overwrite) as tmp:
        frame.to_csv(tmp, sep=sep, index=False, na_rep="n/a", float_format="%.8g")
    return path


def _read_table(path: str | Path, what: str) -> Any:
    import pandas as pd

    file = Path(path)
    if not file.is_file():
        raise QSMInputError(f"no such {what} file", file)
    sep = "," if file.suffix.lower() == ".csv" else "\t"
    try:
        table = pd.read_csv(file, sep=sep, na_values=["n/a", "NA", ""], keep_default_na=True)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise QSMInputError(f"cannot read the {what}: {exc}", file) from None
    if table.empty:
        raise QSMInputError(f"the {what} has no rows", file)
    return table


def _label_names(args: argparse.Namespace, labels: np.ndarray) -> dict[int, str] | None:
    from qsmliver.analysis.labels import (
        CONVENTIONS,
        builtin_label_table,
        check_label_table,
        read_label_table,
    )

    present = np.unique(labels[labels > 0]).astype(int).tolist()
    convention = args.convention
    if convention is not None and convention not in ("recognised", "any", *CONVENTIONS):
        raise QSMConfigError(f"unknown --convention {convention!r}; use one of "
                             f"{('recognised', *CONVENTIONS)}")
    table_path = Path(args.label_table) if args.label_table else None
    if table_path is None:
        dseg = Path(args.labels)
        stem = dseg.name[:-7] if dseg.name.endswith(".nii.gz") else dseg.stem
        beside = dseg.with_name(stem + ".tsv")
        if beside.is_file() and convention not in CONVENTIONS:
            table_path = beside
    if table_path is not None:
        table = read_label_table(table_path)
        check_label_table(table, convention=convention or "any", path=table_path,
                          present=present)
        return table
    if convention in CONVENTIONS:
        table = builtin_label_table(convention)
        check_label_table(table, convention="any", path=args.labels, present=present)
        return table
    return None


# -- roi --------------------------------------------------------------------------------------
def _cmd_roi(args: argparse.Namespace) -> int:
    from qsmliver.analysis import roi_statistics
    from qsmliver.cli import EXIT_OK
    from qsmliver.geometry import voxel_size_from_affine

    labels_raw, affine = _load_volume(args.labels, "label map")
    if labels_raw.dtype.kind == "f" and not np.all(labels_raw == np.round(labels_raw)):
        raise QSMInputError("label map holds non-integer values", args.labels)
    labels = labels_raw.astype(np.int64)
    if labels.min() < 0:
        raise QSMInputError("label map holds negative values", args.labels)
    names = _label_names(args, labels)
    maps = _load_maps(args.maps, args.map_names, labels.shape, affine, "label map")
    if args.select:
        labels, names = _select(labels, names, args.select, args.label_table or args.labels)
    table = roi_statistics(maps, labels, names, voxel_size_mm=voxel_size_from_affine(affine),
                           erode_mm=args.erode_mm, trim_percent=args.trim_percent,
                           percentiles=args.percentiles)
    if args.subject:
        table.insert(0, "subject", args.subject)
    path = _write_table(table, args.output, args.overwrite)
    print(f"{len(table)} rows ({table['label'].nunique()} labels x {len(maps)} maps) -> {path}")
    return EXIT_OK


def _select(labels: np.ndarray, names: dict[int, str] | None, wanted: list[str], source: Any
            ) -> tuple[np.ndarray, dict[int, str] | None]:
    names = names or {}
    by_name = {v.lower(): k for k, v in names.items()}
    keep = []
    for item in wanted:
        if item.lower() in by_name:
            keep.append(by_name[item.lower()])
        elif item.isdigit():
            keep.append(int(item))
        else:
            raise QSMInputError(f"--select: no label named {item!r} (known: "
                                f"{', '.join(sorted(names.values())[:12])})", source)
    selected = np.where(np.isin(labels, keep), labels, 0)
    return selected, {k: v for k, v in names.items() if k in keep} or None


# -- liver-rois -------------------------------------------------------------------------------
def _cmd_liver_rois(args: argparse.Namespace) -> int:
    from qsmliver.analysis.labels import write_label_table
    from qsmliver.analysis.liver_roi import liver_roi_statistics, place_liver_rois
    from qsmliver.cli import EXIT_OK
    from qsmliver.geometry import voxel_size_from_affine
    from qsmliver.io.atomic import write_json_atomic
    from qsmliver.io.staging import staged_output_dir
    from qsmliver.io.writers import write_map

    liver_raw, affine = _load_volume(args.liver_mask, "liver mask")
    liver = liver_raw != 0
    if not liver.any():
        raise QSMInputError("the liver mask is empty", args.liver_mask)
    maps = _load_maps(args.maps, args.map_names, liver.shape, affine, "liver mask")
    voxel = voxel_size_from_affine(affine)
    summary: dict[str, Any]
    if args.rois:
        drawn, roi_affine = _load_volume(args.rois, "ROI mask")
        if drawn.shape != liver.shape or not np.allclose(roi_affine, affine, atol=1e-2):
            raise QSMInputError("ROI mask grid differs from the liver mask's", args.rois)
        rois: Any = drawn.astype(np.int64)
        names = {int(k): f"roi{int(k)}" for k in np.unique(rois[rois > 0])}
        if not names:
            raise QSMInputError("the ROI mask is empty", args.rois)
        table = liver_roi_statistics(maps, rois, liver, voxel_size_mm=voxel, roi_names=names)
        summary = {"rois": "user", "source": str(args.rois)}
        roi_labels = rois
    else:
        exclude = None
        if args.exclude:
            exclude_raw, _ = _load_volume(args.exclude, "exclude mask")
            if exclude_raw.shape != liver.shape:
                raise QSMInputError("exclude mask shape differs from the liver mask",
                                    args.exclude)
            exclude = exclude_raw != 0
        detect = dict(list(maps.items())[: args.detect]) if args.detect is not None else maps
        placed = place_liver_rois(liver, affine, maps=detect, n_rois=args.n_rois,
                                  area_cm2=args.area_cm2, slice_index=args.slice,
                                  exclude=exclude, outlier_z=args.outlier_z)
        table = liver_roi_statistics(maps, placed, liver, voxel_size_mm=voxel)
        summary = {"rois": "automatic", **placed.to_dict()}
        roi_labels = placed.labels
        names = placed.names
    from qsmliver.data import QuantitativeMap

    out = Path(args.output)
    prefix = args.name
    with staged_output_dir(out, overwrite=args.overwrite) as stage:
        dseg = QuantitativeMap(np.asarray(roi_labels, dtype=np.int16), "dseg", "1", affine,
                               "liver ROIs (qsmliver liver-rois)", {})
        write_map(dseg, stage / f"{prefix}_desc-rois_dseg.nii.gz", inputs=list(args.maps),
                  overwrite=True)
        write_label_table(names, stage / f"{prefix}_desc-rois_dseg.tsv", overwrite=True)
        _write_table(table, stage / f"{prefix}_roistats.tsv", True)
        write_json_atomic(summary, stage / f"{prefix}_rois.json", overwrite=True)
    pooled = table[table["region"] == "rois_pooled"]
    for _, row in pooled.iterrows():
        print(f"{row['map']}: ROI mean {row['mean']:.4g} (n = {int(row['count'])} voxels)")
    print(f"wrote {out / (prefix + '_roistats.tsv')} and the ROI dseg")
    return EXIT_OK


# -- groups -----------------------------------------------------------------------------------
def _subject_key(series: Any) -> Any:
    return series.astype(str).str.strip().str.replace(r"^sub-", "", regex=True)


def _cmd_groups(args: argparse.Namespace) -> int:
    from qsmliver.analysis.groups import compare_groups, pool_hemispheres
    from qsmliver.analysis.labels import DGM_STRUCTURES, recognise_name
    from qsmliver.cli import EXIT_OK

    table = _read_table(args.table, "ROI table")
    subject = args.subject_column or next(
        (c for c in ("subject", "participant_id") if c in table.columns), None)
    if args.map_name is not None:
        if "map" not in table.columns:
            raise QSMInputError("--map given but the table has no 'map' column", args.table)
        table = table[table["map"].astype(str) == args.map_name]
        if table.empty:
            raise QSMInputError(f"no rows for map {args.map_name!r}", args.table, "map")
    elif "map" in table.columns and table["map"].nunique() > 1:
        raise QSMConfigError(f"the table holds several maps ({sorted(table['map'].unique())}); "
                             "choose one with --map")
    if args.participants:
        participants = _read_table(args.participants, "participants table")
        pid = "participant_id" if "participant_id" in participants.columns else "subject"
        if pid not in participants.columns:
            raise QSMInputError("participants table needs a participant_id column",
                                args.participants, "participant_id")
        if subject is None:
            raise QSMInputError("the ROI table has no subject/participant_id column to join "
                                "on", args.table, "subject")
        participants = participants.assign(_key=_subject_key(participants[pid]))
        table = table.assign(_key=_subject_key(table[subject]))
        # columns in both (e.g. an older group column): the participants table wins
        overlap = [c for c in participants.columns if c in table.columns and c != "_key"]
        table = table.drop(columns=overlap).merge(participants, on="_key", how="inner")
        table = table.drop(columns="_key")
        if table.empty:
            raise QSMInputError("no subject of the ROI table is in the participants table",
                                args.participants, pid)
    if args.roi_column not in table.columns:
        raise QSMInputError(f"no ROI column {args.roi_column!r}", args.table)
    if args.pool_hemispheres:
        if subject is None:
            raise QSMInputError("--pool-hemispheres needs a subject column", args.table)
        table = pool_hemispheres(table, roi=args.roi_column, value=args.value,
                                 subject=subject)
    if args.dgm:
        keep = [(recognise_name(str(n)) or ("",))[0] in DGM_STRUCTURES
                for n in table[args.roi_column]]
        table = table[keep]
        if table.empty:
            raise QSMInputError("no deep grey matter structure recognised among the ROI "
                                "names", args.table, args.roi_column)
    if args.rois:
        table = table[table[args.roi_column].astype(str).isin(args.rois)]
        if table.empty:
            raise QSMInputError(f"none of the ROIs {args.rois} is in the table", args.table,
                                args.roi_column)
    covariates = [c for c in args.covariates if c in table.columns]
    skipped = [c for c in args.covariates if c not in table.columns]
    result = compare_groups(table, value=args.value, group=args.group_column,
                            roi=args.roi_column, covariates=covariates, groups=args.groups,
                            alpha=args.alpha)
    path = _write_table(result, args.output, args.overwrite)
    if skipped:
        print(f"note: covariates not in the data and skipped: {', '.join(skipped)}")
    significant = result[result["significant_fdr"]]
    print(f"{len(result)} ROIs compared ({result['group'].iloc[0]} − "
          f"{result['reference'].iloc[0]}), {len(significant)} significant after FDR "
          f"-> {path}")
    return EXIT_OK


# -- monitor ----------------------------------------------------------------------------------
_SHORT = {"r2star": "r2star_per_s", "chi": "chi_ppm", "lic": "lic_mg_per_g"}


def _key_values(items: list[str], option: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise QSMConfigError(f"{option} expects MEASURE=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _cmd_monitor(args: argparse.Namespace) -> int:
    from qsmliver.analysis.monitor import monitor, read_exams, write_monitor_outputs
    from qsmliver.cli import EXIT_OK
    from qsmliver.io.staging import staged_output_dir

    thresholds = _key_values(args.threshold, "--threshold")
    baseline: dict[str, float] = {}
    for key, value in _key_values(args.baseline_min, "--baseline-min").items():
        try:
            baseline[_SHORT.get(key, key)] = float(value)
        except ValueError:
            raise QSMConfigError(f"--baseline-min {key}: {value!r} is not a number") from None
    exams = read_exams(args.table)
    report = monitor(exams, imaging=_SHORT.get(args.imaging) if args.imaging else None,
                     thresholds=thresholds, baseline_min=baseline or None,
                     therapy_on=args.therapy_on, alpha=args.alpha)
    out = Path(args.output)
    with staged_output_dir(out, overwrite=args.overwrite) as stage:
        written = write_monitor_outputs(report, stage, plots=not args.no_plots, overwrite=True)
        names = [p.name for p in written]
    m = report.metrics["all"]
    print(f"{m['n']} pairs of {report.exams['patient_id'].nunique()} patients: TP {m['TP']}, "
          f"TN {m['TN']}, FP {m['FP']}, FN {m['FN']}; sensitivity "
          f"{m['sensitivity']['value']:.3f}, specificity {m['specificity']['value']:.3f}, "
          f"PPV {m['ppv']['value']:.3f}, accuracy {m['accuracy']['value']:.3f}")
    for name in names:
        print(out / name)
    return EXIT_OK

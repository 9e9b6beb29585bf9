"""Analysis: ROI statistics over label maps, liver ROIs, deep grey matter group comparison and
longitudinal liver-iron monitoring (DESIGN section 6).

- :func:`roi_statistics`: count, volume, mean, median, SD, IQR and percentiles of any maps in
  every label of a label map (tidy table); :mod:`qsmliver.analysis.labels` reads label tables
  and recognises FreeSurfer aseg / SynthSeg / FSL FIRST structure names.
- :func:`place_liver_rois` / :func:`liver_roi_statistics`: automatic circular liver ROIs (the
  seed study's protocol) and whole-liver statistics.
- :func:`compare_groups`: per-ROI two-group ANCOVA with effect sizes and FDR.
- :func:`monitor`: consecutive-exam pairs, real-change thresholds, TP/TN/FP/FN concordance of
  imaging and ferritin, correlations, ANCOVA of regression lines, plots.

>>> from qsmliver.analysis import roi_statistics
"""

from qsmliver.analysis.groups import (
    compare_groups,
    hedges_g,
    pool_hemispheres,
    reference_values,
    reference_z_scores,
)
from qsmliver.analysis.labels import (
    builtin_label_table,
    check_label_table,
    read_label_table,
    recognise_name,
    structure_name,
    write_label_table,
)
from qsmliver.analysis.liver_roi import (
    LiverROIs,
    liver_outliers,
    liver_roi_statistics,
    place_liver_rois,
)
from qsmliver.analysis.monitor import (
    DEFAULT_THRESHOLDS,
    MonitorReport,
    RealChange,
    ancova_lines,
    build_pairs,
    classify_pairs,
    diagnostic_metrics,
    monitor,
    read_exams,
    write_monitor_outputs,
)
from qsmliver.analysis.roi import ROI_COLUMNS, erode_labels, percentile_column, roi_statistics

__all__ = [
    "DEFAULT_THRESHOLDS",
    "ROI_COLUMNS",
    "LiverROIs",
    "MonitorReport",
    "RealChange",
    "ancova_lines",
    "build_pairs",
    "builtin_label_table",
    "check_label_table",
    "classify_pairs",
    "compare_groups",
    "diagnostic_metrics",
    "erode_labels",
    "hedges_g",
    "liver_outliers",
    "liver_roi_statistics",
    "monitor",
    "percentile_column",
    "place_liver_rois",
    "pool_hemispheres",
    "read_exams",
    "read_label_table",
    "recognise_name",
    "reference_values",
    "reference_z_scores",
    "roi_statistics",
    "structure_name",
    "write_label_table",
    "write_monitor_outputs",
]

"""Cohort runs on dask.distributed: plan, run (resumable, safe), aggregate.

- :mod:`qsmliver.batch.plan` -- one :class:`SubjectTask` per subject/session of a BIDS
  dataset, with the configuration hash that decides whether a finished unit is still valid;
- :mod:`qsmliver.batch.runner` -- the local or remote dask cluster, the worker task
  (:func:`process_subject`), staging and atomic commit, failure records, progress;
- :mod:`qsmliver.batch.records` -- completion and failure records, ``dataset_description.json``;
- :mod:`qsmliver.batch.group` -- the cohort ROI table and the QC index page.

>>> from qsmliver.batch import plan_batch, run_batch, run_group  # doctest: +SKIP
>>> tasks = plan_batch("bids", "bids/derivatives/qsmliver", config={"inversion":
...                    {"method": "tkd"}})  # doctest: +SKIP
>>> summary = run_batch(tasks)  # doctest: +SKIP
>>> run_group("bids/derivatives/qsmliver")  # doctest: +SKIP
"""

from qsmliver.batch.group import cohort_table, collect_units, run_group
from qsmliver.batch.plan import (
    SubjectTask,
    config_hash,
    estimate_memory_bytes,
    find_labels,
    plan_batch,
)
from qsmliver.batch.records import read_record, unit_state
from qsmliver.batch.runner import (
    BatchSummary,
    ClusterSettings,
    process_subject,
    run_batch,
    worker_plan,
)

__all__ = [
    "BatchSummary",
    "ClusterSettings",
    "SubjectTask",
    "cohort_table",
    "collect_units",
    "config_hash",
    "estimate_memory_bytes",
    "find_labels",
    "plan_batch",
    "process_subject",
    "read_record",
    "run_batch",
    "run_group",
    "unit_state",
    "worker_plan",
]

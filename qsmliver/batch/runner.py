"""Run a cohort on dask.distributed: one task per subject/session, resumable and safe.

The driver (this process) plans the units, skips those already done, and submits the rest to a
dask cluster: a ``LocalCluster`` of worker *processes* by default (memory limit per worker
from the available memory), or any running scheduler (``--scheduler tcp://host:8786``, e.g.
one started by ``dask-jobqueue`` on SLURM/PBS, whose workers must see the same file system).

Each worker reads one unit's BIDS data, reconstructs it (:func:`qsmliver.pipeline.recon`),
writes the maps, ROI statistics, QC report and completion record into a private staging
folder ``OUT/.qsmliver-work/<unit>.<random>/`` and returns a small summary. Only the driver
moves a staged folder into place, with one ``rename`` (atomic on one file system), so a unit's
folder appears complete or not at all: an interrupted run (Ctrl-C, a killed job) leaves no
half-written subject, and a re-run processes only what is missing. A failing unit is recorded
in ``OUT/logs/<unit>_batch-error.json`` and does not stop the others.

HPC schedulers (SLURM, PBS, SGE, LSF) through ``dask-jobqueue`` (not a dependency)::

    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=4, processes=1, memory="16GB", walltime="04:00:00")
    cluster.scale(jobs=20)            # 20 workers, one per job
    # the scheduler lives in this Python process: keep it running, and
    # then: qsmliver batch BIDS OUT --scheduler <cluster.scheduler_address>
    # or:   run_batch(tasks, ClusterSettings(scheduler=cluster.scheduler_address))

GPU: when the configuration's device is not "cpu" and CuPy sees a GPU, the local cluster gets
one worker with ``resources={"GPU": 1}`` and every task asks for that resource, so one
reconstruction at a time holds the GPU. With an external scheduler, tasks ask for the GPU
resource only when workers advertise it (``dask worker ... --resources GPU=1``; one worker per
GPU, e.g. ``dask-cuda``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import shutil
import socket
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from qsmliver.batch.plan import SubjectTask, read_label_names
from qsmliver.batch.records import (
    LOG_DIR,
    WORK_DIR,
    failure_path,
    file_checksums,
    unit_state,
    write_dataset_description,
    write_failure,
)
from qsmliver.errors import QSMConfigError, QSMError, QSMInputError, QSMOutputExistsError
from qsmliver.io.atomic import write_json_atomic

__all__ = [
    "ROI_MAPS",
    "BatchSummary",
    "ClusterSettings",
    "open_client",
    "output_lock",
    "process_subject",
    "run_batch",
    "worker_plan",
]

#: Maps summarised per ROI, when the reconstruction has them.
ROI_MAPS = ("Chimap", "R2starmap", "desc-PDFF_map", "desc-LIC_map")

_LOCK_NAME = ".qsmliver-batch.lock"


# -- cluster ----------------------------------------------------------------------------------
@dataclasses.dataclass
class ClusterSettings:
    """Where and how to run the tasks.

    Attributes
    ----------
    scheduler : str
        "auto" (a new ``LocalCluster``) or a scheduler address (``tcp://host:8786``).
    workers : int, optional
        Local worker processes; default from the CPU count, the available memory and the
        number of tasks.
    threads_per_worker : int
        Threads of each worker (each task runs in one thread; NumPy/SciPy FFTs may use more).
    memory_limit : str or int, optional
        Per local worker ("4GB" or bytes); default: 90 % of the available memory divided
        among the workers.
    dashboard_address : str or None
        Where the local dashboard listens (":0": a free port; None: no dashboard).
    wait_for_workers_s : float
        With an external scheduler, how long to wait for the first worker.
    connect_timeout_s : float
        With an external scheduler, how long to try to reach it.
    """

    scheduler: str = "auto"
    workers: int | None = None
    threads_per_worker: int = 1
    memory_limit: str | int | None = None
    dashboard_address: str | None = ":0"
    wait_for_workers_s: float = 60.0
    connect_timeout_s: float = 20.0


def _gpu_count() -> int:
    from qsmliver import backend

    if not backend.cupy_available():
        return 0
    return int(backend._cupy().cuda.runtime.getDeviceCount())


def worker_plan(n_tasks: int, memory_per_task: int, *, workers: int | None = None,
                threads_per_worker: int = 1, memory_limit: str | int | None = None,
                gpu: bool = False) -> dict[str, Any]:
    """Worker count, threads, memory limit and resources of a local cluster.

    Parameters
    ----------
    n_tasks : int
        Units to process (never more workers than tasks).
    memory_per_task : int
        Estimated peak bytes of one task (:func:`qsmliver.batch.plan.estimate_memory_bytes`).
    workers : int, optional
        Requested worker processes (kept, with a note when memory looks short).
    threads_per_worker : int
    memory_limit : str or int, optional
        Per worker; default: 90 % of the available memory / workers.
    gpu : bool
        One worker holding ``resources={"GPU": 1}``.

    Returns
    -------
    dict
        ``n_workers``, ``threads_per_worker`` (tasks run at once per worker),
        ``memory_limit`` (bytes), ``resources`` (dict or None), ``task_threads`` (BLAS/OpenMP
        threads and FFT workers of each task: the CPUs shared out, at least 1) and ``notes``
        (list of str).

    Raises
    ------
    QSMConfigError
        For a non-positive worker or thread count or an unparsable memory limit.
    """
    import psutil
    from dask.utils import parse_bytes

    if workers is not None and workers < 1:
        raise QSMConfigError(f"--workers must be >= 1, got {workers}")
    if threads_per_worker < 1:
        raise QSMConfigError(f"--threads-per-worker must be >= 1, got {threads_per_worker}")
    from distributed.system import MEMORY_LIMIT  # total memory, cgroup/rlimit aware

    available = int(min(psutil.virtual_memory().available, MEMORY_LIMIT))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1
    notes = []
    if gpu:
        n_workers = 1
        resources: dict[str, float] | None = {"GPU": 1}
    else:
        resources = None
        per_worker = max(int(memory_per_task), 1) * threads_per_worker
        by_memory = max(1, int(0.8 * available) // per_worker)
        n_workers = workers or max(1, min(cpus // threads_per_worker, by_memory))
    n_workers = max(1, min(n_workers, max(n_tasks, 1)))
    task_threads = max(1, cpus // (n_workers * threads_per_worker))
    if memory_limit is None:
        limit = int(0.9 * available) // n_workers
    else:
        try:
            limit = int(parse_bytes(memory_limit)) if isinstance(memory_limit, str) \
                else int(memory_limit)
        except (ValueError, TypeError):
            raise QSMConfigError(f"cannot read the memory limit {memory_limit!r} "
                                 "(e.g. 4GB)") from None
    need = memory_per_task * threads_per_worker
    if need > limit:
        notes.append(f"each worker may need about {need / 2**30:.1f} GiB but gets "
                     f"{limit / 2**30:.1f} GiB; use fewer --workers if workers are killed")
    return {"n_workers": n_workers, "threads_per_worker": threads_per_worker,
            "memory_limit": limit, "resources": resources, "task_threads": task_threads,
            "notes": notes}


@contextlib.contextmanager
def open_client(settings: ClusterSettings, plan: dict[str, Any] | None = None
                ) -> Iterator[tuple[Any, str | None]]:
    """A dask ``Client`` (and its ``LocalCluster`` for "auto"), closed on every exit path.

    Local workers are processes that ignore SIGINT (the driver handles Ctrl-C and closes the
    cluster); their BLAS/OpenMP threads and FFT workers are ``plan["task_threads"]``.

    Yields
    ------
    (distributed.Client, str or None)
        The client and the dashboard address.

    Raises
    ------
    QSMConfigError
        When the scheduler cannot be reached or no worker connects in time.
    """
    import dask
    from distributed import Client, LocalCluster

    if settings.scheduler == "auto":
        plan = plan or worker_plan(1, 0)
        threads = str(plan.get("task_threads", 1))
        environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}),
                   "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                   "OPENBLAS_NUM_THREADS": threads, "QSMLIVER_FFT_WORKERS": threads}
        cluster = client = None
        try:
            # Ctrl-C during start-up is acted on once the cluster exists, so it gets closed
            with _interrupt_deferred():
                with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                                      "distributed.nanny.pre-spawn-environ": environ}):
                    cluster = LocalCluster(
                        n_workers=plan["n_workers"],
                        threads_per_worker=plan["threads_per_worker"], processes=True,
                        memory_limit=plan["memory_limit"], resources=plan["resources"],
                        dashboard_address=settings.dashboard_address,
                        silence_logs=logging.ERROR)
                client = Client(cluster)
                client.register_plugin(_ignore_interrupt_plugin())
            yield client, (cluster.dashboard_link if settings.dashboard_address else None)
        finally:
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()
        return
    try:
        client = Client(settings.scheduler, timeout=f"{settings.connect_timeout_s}s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise QSMConfigError(f"cannot reach the dask scheduler at {settings.scheduler}: "
                             f"{exc}") from None
    try:
        try:
            client.wait_for_workers(1, timeout=settings.wait_for_workers_s)
        except TimeoutError:
            raise QSMConfigError(f"no dask worker connected to {settings.scheduler} within "
                                 f"{settings.wait_for_workers_s:g} s") from None
        yield client, client.dashboard_link
    finally:
        client.close()


# -- the worker's task ------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def _roi_labels(task: SubjectTask, gre: Any, mask: Any) -> tuple[Any, dict[int, str], str]:
    """Label map (limited to the mask), names and source of one acquisition."""
    import nibabel as nib
    import numpy as np

    if task.labels is None:
        return mask.astype(np.int64), {1: "mask"}, "mask"
    try:
        image = nib.load(task.labels)
        labels = np.asarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types for broken files
        raise QSMInputError(f"cannot read the label map: {exc}", task.labels) from None
    if labels.ndim == 4 and labels.shape[3] == 1:
        labels = labels[..., 0]
    if tuple(labels.shape) != tuple(gre.shape):
        raise QSMInputError(f"label map shape {labels.shape} does not match the GRE "
                            f"{tuple(gre.shape)}; resample it to the GRE grid", task.labels)
    if not np.allclose(image.affine, gre.affine, atol=1e-2):
        raise QSMInputError("label map geometry (affine) differs from the GRE's",
                            task.labels, "affine")
    if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
        raise QSMInputError("label map must hold whole numbers", task.labels)
    names = read_label_names(task.label_table)
    return np.where(mask, labels, 0).astype(np.int64), names, task.labels


def _roi_sidecar(maps: Sequence[str], units: dict[str, str], source: str) -> dict[str, Any]:
    stats = "in the unit of the map (" + ", ".join(f"{m}: {units[m]}" for m in maps) + ")"
    return {
        "Description": "ROI statistics of the maps in every label of the label map, limited "
                       "to the reconstruction mask (qsmliver.analysis.roi_statistics)",
        "LabelSource": source,
        "subject": {"Description": "BIDS subject label"},
        "session": {"Description": "BIDS session label (n/a without sessions)"},
        "acquisition": {"Description": "BIDS acq- label (n/a when absent)"},
        "run": {"Description": "BIDS run index (n/a when absent)"},
        "label": {"Description": "label value in the dseg"},
        "label_name": {"Description": "label name (dseg TSV; 'mask' without labels)"},
        "map": {"Description": "the map summarised (BIDS suffix)"},
        "count": {"Description": "voxels with finite values in the label and the mask"},
        "volume_mm3": {"Description": "label volume inside the mask", "Units": "mm^3"},
        **{column: {"Description": f"{column} {stats}"}
           for column in ("mean", "median", "sd", "iqr", "p5", "p25", "p50", "p75", "p95")},
    }


def _process_acquisition(task: SubjectTask, acquisition: dict[str, Any], stage: Path
                         ) -> dict[str, Any]:
    import numpy as np

    from qsmliver.analysis import roi_statistics
    from qsmliver.io.bids import read_bids
    from qsmliver.io.results import write_recon
    from qsmliver.pipeline import ReconConfig, recon
    from qsmliver.report.html import qc_checks, write_subject_report

    gre = read_bids(task.input_dir, subject=task.subject, session=task.session,
                    acquisition=acquisition["acquisition"], run=acquisition["run"])
    config = ReconConfig.from_mapping(task.config)
    result = recon(gre, task.anatomy, config=config)
    prefix = str(gre.metadata.get("BIDSEntities") or task.unit)
    anat = stage / "anat"
    write_recon(result, anat, prefix, inputs=gre.source_files, montage=False)
    mask = (np.asarray(result.maps["mask"].data).astype(bool) if "mask" in result.maps
            else np.ones(gre.shape, bool))
    labels, names, source = _roi_labels(task, gre, mask)
    maps = {name: result.maps[name].data for name in ROI_MAPS if name in result.maps}
    roi = roi_statistics(maps, labels, names, voxel_size_mm=tuple(gre.voxel_size_mm))
    entities = {"subject": task.subject, "session": task.session,
                "acquisition": acquisition["acquisition"], "run": acquisition["run"]}
    for position, (key, value) in enumerate(entities.items()):
        roi.insert(position, key, value)
    roi_path = anat / f"{prefix}_desc-roi_stats.tsv"
    roi.to_csv(roi_path, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    units = {name: str(result.maps[name].unit) for name in maps}
    write_json_atomic(_roi_sidecar(list(maps), units, source), roi_path.with_suffix(".json"))
    qc = qc_checks(result, anatomy=task.anatomy)
    details = {"Unit": task.unit, "ConfigHash": task.config_hash, "Labels": source,
               "Inputs": [os.path.relpath(f, task.bids_root) for f in gre.source_files]}
    report = write_subject_report(stage, prefix, result,
                                  labels=None if task.labels is None else labels,
                                  label_names=names, roi_table=roi, qc=qc, details=details)
    return {"Prefix": prefix, "Inputs": [str(f) for f in gre.source_files],
            "Labels": source, "Report": report.relative_to(stage).as_posix(),
            "ROITable": roi_path.relative_to(stage).as_posix(), "QC": qc,
            "Timings_s": result.provenance.get("Timings_s", {}),
            "Device": result.provenance.get("Device")}


def _single_task_thread() -> bool:
    """True unless this runs on a dask worker that executes several tasks at once."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not on a worker
        return True
    return int(getattr(worker.state, "nthreads", 1)) <= 1


def process_subject(task: SubjectTask) -> dict[str, Any]:
    """Process one unit into a staging folder (runs on a dask worker).

    Never raises for a bad subject: the outcome says ``"Status": "ok"`` with the staging
    folder (``"Stage"``) and the completion record, or ``"Status": "failed"`` with the error
    type, message and traceback (the staging folder is removed).

    Parameters
    ----------
    task : SubjectTask

    Returns
    -------
    dict
    """
    import numpy as np

    from qsmliver import __version__, backend

    started = time.perf_counter()
    stage = Path(task.output) / WORK_DIR / f"{task.unit}.{uuid.uuid4().hex[:10]}"
    where = f"{socket.gethostname()}:{os.getpid()}"
    try:
        stage.mkdir(parents=True)
        # warnings filters are process-global: capture them only when no other task runs
        capture = warnings.catch_warnings(record=True) if _single_task_thread() \
            else contextlib.nullcontext([])
        with capture as caught:
            warnings.simplefilter("always")
            acquisitions = [_process_acquisition(task, acq, stage)
                            for acq in task.acquisitions]
        seconds = round(time.perf_counter() - started, 3)
        record = {
            "Unit": task.unit, "Subject": task.subject, "Session": task.session,
            "Status": "ok", "ConfigHash": task.config_hash,
            "InputFingerprint": task.input_fingerprint, "Anatomy": task.anatomy,
            "Configuration": task.config, "Acquisitions": acquisitions,
            "PythonWarnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught}),
            "Seconds": seconds, "Worker": where, "Software": {"qsmliver": __version__},
            "FFTWorkers": backend.fft(np).workers,
            "DateFinished": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
        }
        record["Outputs"] = file_checksums(stage)
        write_json_atomic(record, stage / f"{task.unit}_batch.json")
        return {"Status": "ok", "Stage": str(stage), "Record": record, "Seconds": seconds}
    except Exception as exc:
        shutil.rmtree(stage, ignore_errors=True)
        return {"Status": "failed", "ErrorType": type(exc).__name__,
                "InputError": isinstance(exc, QSMError), "Error": _one_line(exc),
                "Traceback": traceback.format_exc(), "Worker": where,
                "Seconds": round(time.perf_counter() - started, 3)}


# -- the driver -------------------------------------------------------------------------------
@dataclasses.dataclass
class BatchSummary:
    """What a run did.

    Attributes
    ----------
    total : int
        Units planned.
    skipped : list of str
        Units already done (same configuration and inputs), left untouched.
    succeeded : list of str
        Units processed now.
    failed : dict of str to str
        Units that failed, with their one-line error.
    input_errors : bool
        Every failure was a bad input/configuration (a :class:`qsmliver.errors.QSMError`).
    seconds : float
        Wall time of the run.
    dashboard : str or None
        The dask dashboard address.
    workers : int
        Workers that ran the tasks (0 when nothing was to do).
    """

    total: int
    skipped: list[str] = dataclasses.field(default_factory=list)
    succeeded: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    input_errors: bool = True
    seconds: float = 0.0
    dashboard: str | None = None
    workers: int = 0


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold ``OUT/.qsmliver-batch.lock`` (an advisory ``flock``) for the run.

    Raises
    ------
    QSMConfigError
        When another qsmliver batch writes to the same folder.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    output.mkdir(parents=True, exist_ok=True)
    with open(output / _LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise QSMConfigError(f"{output}: another qsmliver batch is writing to this folder "
                                 f"(lock {_LOCK_NAME})") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _interrupt_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back until the block is done, then act on it (main thread)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
        previous(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt


def _commit(stage: Path, target: Path, work: Path) -> None:
    """Move a finished staging folder into place (replacing an outdated one).

    A new unit is one ``rename``; an outdated one is renamed aside first. Ctrl-C is held back
    meanwhile, so the unit's folder is always either the old or the new one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with _interrupt_deferred():
        if target.exists():
            old = work / f"{target.name}.replaced.{uuid.uuid4().hex[:10]}"
            os.rename(target, old)
            os.rename(stage, target)
        else:
            old = None
            os.rename(stage, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _submit_options(client: Any, gpu_local: bool, device: str, external: bool
                    ) -> dict[str, Any]:
    if gpu_local:
        return {"resources": {"GPU": 1}}
    if external and device != "cpu":
        workers = client.scheduler_info().get("workers", {}).values()
        if any(w.get("resources", {}).get("GPU") for w in workers):
            return {"resources": {"GPU": 1}}
    return {}


class _Progress:
    """tqdm bar over the cohort (hidden when stderr is not a terminal) plus log lines."""

    def __init__(self, total: int, enabled: bool, echo: Callable[[str], Any]) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="subject", desc="qsmliver batch",
                        disable=None if enabled else True, dynamic_ncols=True)
        self.echo = echo

    def update(self, line: str, ok: int, failed: int) -> None:
        if self.bar.disable:
            self.echo(line)
        else:
            self.bar.write(line)
        self.bar.set_postfix(ok=ok, failed=failed, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_batch(tasks: Sequence[SubjectTask], settings: ClusterSettings | None = None, *,
              overwrite: bool = False, progress: bool = True,
              echo: Callable[[str], Any] = print) -> BatchSummary:
    """Process every unit that is not done yet on a dask cluster.

    Parameters
    ----------
    tasks : sequence of SubjectTask
        From :func:`qsmliver.batch.plan_batch` (all with the same output folder).
    settings : ClusterSettings, optional
        Scheduler and worker settings (default: a local cluster sized automatically).
    overwrite : bool
        Reprocess units finished with another configuration or other inputs ("stale");
        without it such units stop the run before anything starts.
    progress : bool
        Show a progress bar (when stderr is a terminal).
    echo : callable
        Receives one line per event (dashboard address, each finished unit).

    Returns
    -------
    BatchSummary

    Raises
    ------
    QSMOutputExistsError
        Stale units without ``overwrite``.
    QSMConfigError
        Another batch holds the output folder, or the scheduler is unreachable.
    KeyboardInterrupt
        After cancelling the tasks, closing the cluster and removing the staging folders:
        the units finished before the interruption are complete, the others absent.

    Notes
    -----
    Local workers are started as new processes (multiprocessing "spawn"): a script calling
    this function must protect its entry point with ``if __name__ == "__main__":``.
    """
    settings = settings or ClusterSettings()
    if not tasks:
        raise QSMInputError("no subjects to process")
    started = time.perf_counter()
    output = Path(tasks[0].output)
    summary = BatchSummary(total=len(tasks))
    with output_lock(output):
        work = output / WORK_DIR
        shutil.rmtree(work, ignore_errors=True)  # leftovers of a killed run
        write_dataset_description(output, tasks[0].bids_root)
        states = {task.unit: unit_state(task) for task in tasks}
        stale = [unit for unit, state in states.items() if state == "stale"]
        if stale and not overwrite:
            shown = ", ".join(stale[:5]) + (f" (and {len(stale) - 5} more)"
                                           if len(stale) > 5 else "")
            raise QSMOutputExistsError(
                f"{output}: {len(stale)} subject(s) were processed with another configuration "
                f"or other inputs ({shown}); use --overwrite to reprocess them or choose "
                "another output folder")
        summary.skipped = [unit for unit, state in states.items() if state == "done"]
        todo = [task for task in tasks if states[task.unit] != "done"]
        echo(f"{len(tasks)} subject/session(s): {len(summary.skipped)} already done, "
             f"{len(todo)} to process")
        if todo:
            try:
                _run(todo, settings, summary, work, progress, echo)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    summary.seconds = round(time.perf_counter() - started, 2)
    _write_summary(output, tasks, summary)
    return summary


def _run(todo: Sequence[SubjectTask], settings: ClusterSettings, summary: BatchSummary,
         work: Path, progress: bool, echo: Callable[[str], Any]) -> None:
    from distributed import as_completed

    device = todo[0].device
    gpu_local = settings.scheduler == "auto" and device != "cpu" and _gpu_count() > 0
    plan = None
    if settings.scheduler == "auto":
        plan = worker_plan(len(todo), max(t.memory_bytes for t in todo),
                           workers=settings.workers,
                           threads_per_worker=settings.threads_per_worker,
                           memory_limit=settings.memory_limit, gpu=gpu_local)
        for note in plan["notes"]:
            echo(f"note: {note}")
    with open_client(settings, plan) as (client, dashboard):
        summary.dashboard = dashboard
        summary.workers = len(client.scheduler_info().get("workers", {}))
        where = (f"local cluster of {plan['n_workers']} worker process(es) x "
                 f"{plan['threads_per_worker']} thread(s), "
                 f"{plan['memory_limit'] / 2**30:.1f} GiB each"
                 + (", GPU" if gpu_local else "") if plan else
                 f"scheduler {settings.scheduler} ({summary.workers} worker(s))")
        echo(f"running on {where}; dask dashboard: {dashboard or 'off'}"
             + ("" if _has_bokeh() else " (install bokeh to serve it)"))
        options = _submit_options(client, gpu_local, device, plan is None)
        futures = {client.submit(process_subject, task, pure=False,
                                 key=f"qsmliver-{task.unit}-{uuid.uuid4().hex[:8]}",
                                 **options): task for task in todo}
        bar = _Progress(len(todo), progress, echo)
        try:
            for future in as_completed(list(futures)):
                task = futures.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # the worker died (memory) or the task was lost
                    outcome = {"Status": "failed", "ErrorType": type(exc).__name__,
                               "InputError": False, "Error": _one_line(exc),
                               "Traceback": traceback.format_exc(), "Seconds": None}
                future.release()
                line = _finish(task, outcome, summary, work)
                bar.update(line, len(summary.succeeded), len(summary.failed))
        except KeyboardInterrupt:
            client.cancel(list(futures))
            raise
        finally:
            bar.close()


def _ignore_interrupt_plugin() -> Any:
    """A worker plugin making local workers ignore SIGINT.

    Ctrl-C in a terminal reaches the whole process group; the local workers then leave the
    shutdown to the driver (which cancels the tasks and closes the cluster) instead of each
    printing a traceback. Not used for external workers, which keep their own handling.
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    class IgnoreInterrupt(WorkerPlugin):
        name = "qsmliver-ignore-sigint"

        def setup(self, worker: Any) -> None:
            import signal
            import threading

            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)

    return IgnoreInterrupt()


def _finish(task: SubjectTask, outcome: dict[str, Any], summary: BatchSummary,
            work: Path) -> str:
    if outcome.get("Status") == "ok":
        try:
            _commit(Path(outcome["Stage"]), task.output_dir, work)
        except OSError as exc:
            outcome = {"Status": "failed", "ErrorType": type(exc).__name__,
                       "InputError": False, "Error": f"cannot move the results into place: "
                       f"{_one_line(exc)}", "Traceback": traceback.format_exc(),
                       "Seconds": outcome.get("Seconds")}
    if outcome.get("Status") == "ok":
        summary.succeeded.append(task.unit)
        failure_path(task.output, task.unit).unlink(missing_ok=True)
        record = outcome["Record"]
        warned = sum(len(a["QC"]["warnings"]) for a in record["Acquisitions"])
        note = f", {warned} QC warning(s)" if warned else ""
        return f"{task.unit}: ok in {outcome['Seconds']:.1f} s{note}"
    summary.failed[task.unit] = f"{outcome.get('ErrorType')}: {outcome.get('Error')}"
    summary.input_errors = summary.input_errors and bool(outcome.get("InputError"))
    write_failure(task, {k: v for k, v in outcome.items() if k != "Status"})
    return f"{task.unit}: FAILED ({outcome.get('ErrorType')}: {outcome.get('Error')})"


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _write_summary(output: Path, tasks: Sequence[SubjectTask], summary: BatchSummary) -> None:
    """``OUT/logs/batch_summary.json``: the latest run (units, outcome, timing)."""
    record = {
        "DateFinished": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "ConfigHash": tasks[0].config_hash, "Anatomy": tasks[0].anatomy,
        "Total": summary.total, "Skipped": summary.skipped, "Succeeded": summary.succeeded,
        "Failed": summary.failed, "Seconds": summary.seconds, "Workers": summary.workers,
        "Dashboard": summary.dashboard,
    }
    write_json_atomic(record, output / LOG_DIR / "batch_summary.json", overwrite=True)

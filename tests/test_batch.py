"""`qsmliver batch`: a synthetic BIDS cohort on dask.distributed, interrupted and resumed.

One module-scoped cohort (6 brain phantoms of 32³ with 3 echoes + 1 corrupted subject) is run
with ``--workers 2`` on a LocalCluster in a child process, interrupted with SIGINT (Ctrl-C to
the whole process group) after the first subject is finished, and re-run in this process:
only the missing subjects are processed, the finished ones are left byte for byte, the
corrupted one is recorded and the others succeed. The same batch then runs against a separately
started ``dask scheduler`` + ``dask worker`` on loopback and gives identical maps.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from qsmliver.batch import (
    ClusterSettings,
    config_hash,
    find_labels,
    plan_batch,
    process_subject,
    read_record,
    run_batch,
    unit_state,
    worker_plan,
)
from qsmliver.batch.runner import output_lock
from qsmliver.batch.synthetic import write_synthetic_cohort
from qsmliver.cli import main
from qsmliver.cli_batch import bids_app_argv
from qsmliver.errors import QSMConfigError, QSMInputError

CONFIG = ["--set", "inversion.method=tkd"]
GOOD = [f"sub-0{i}" for i in range(1, 7)]
N_LABELS = 24  # brain phantom tissue labels (1..24) in the dseg TSV


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _live_group_members(pgid: int) -> list[int]:
    """Processes of a process group that are still running (zombies do not count)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive.append(int(stat.parent.name))
    return alive


def _children_alive() -> list:
    import psutil

    helpers = ("resource_tracker", "forkserver")  # multiprocessing's, live with the parent
    return [p for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            and not any(h in " ".join(p.cmdline()) for h in helpers)]


@contextlib.contextmanager
def _ctrl_c_raises():
    """Python's own SIGINT handler for the block (and SIG_DFL for a child started in it).

    A shell without job control starts background commands with SIGINT ignored, and Python
    then keeps it ignored (no KeyboardInterrupt), as would a child process inheriting it: the
    Ctrl-C tests below would fail under ``pytest &`` for a reason that is not the code's.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort") / "bids"
    truth = write_synthetic_cohort(root, 7, shape=(32, 32, 32))
    bad = root / "sub-07" / "anat" / "sub-07_echo-2_part-phase_MEGRE.nii.gz"
    bad.write_bytes(bad.read_bytes()[:1500])  # truncated: a corrupt transfer
    return root, truth


@pytest.fixture(scope="module")
def completed_run(cohort, tmp_path_factory):
    """Interrupted LocalCluster run (child process) then the resumed run (this process)."""
    root, truth = cohort
    out = tmp_path_factory.mktemp("derivatives") / "qsmliver"
    command = [sys.executable, "-m", "qsmliver", "batch", str(root), str(out), "--workers", "2",
               "--level", "participant", *CONFIG]
    with _ctrl_c_raises():  # a caught signal is reset to SIG_DFL across exec, an ignored one not
        child = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if list(out.glob("sub-*/*_batch.json")):
                break
            time.sleep(0.05)
        os.killpg(child.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        stdout, stderr = child.communicate(timeout=90)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    deadline = time.monotonic() + 15  # worker processes may take a moment to exit
    while _live_group_members(child.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    interrupted = {"returncode": child.returncode, "stdout": stdout, "stderr": stderr,
                   "live": _live_group_members(child.pid),
                   "units": sorted(p.name for p in out.glob("sub-*") if p.is_dir()),
                   "work_left": (out / ".qsmliver-work").exists(),
                   "digests": {p.name: _digest(p) for p in out.glob("sub-*")},
                   "records": {p.name: read_record(p / f"{p.name}_batch.json")
                               for p in out.glob("sub-*")}}
    started = time.perf_counter()
    printed_out, printed_err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed_out), contextlib.redirect_stderr(printed_err):
        status = main(["batch", str(root), str(out), "--workers", "2", "--no-progress",
                       *CONFIG])
    seconds = time.perf_counter() - started
    deadline = time.monotonic() + 15
    while _children_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    resumed = {"returncode": status, "seconds": seconds,
               "children": _children_alive(), "stdout": printed_out.getvalue(),
               "stderr": printed_err.getvalue()}
    return {"root": root, "out": out, "truth": truth, "interrupted": interrupted,
            "resumed": resumed}


def test_interrupt_leaves_only_whole_subjects(completed_run):
    first = completed_run["interrupted"]
    assert first["returncode"] == 130, first["stderr"][-2000:]
    assert "interrupted" in first["stderr"]
    assert "Traceback" not in first["stderr"], first["stderr"]  # workers leave Ctrl-C alone
    assert first["live"] == []  # no worker survived the interruption
    assert not first["work_left"]  # staging folders removed
    assert 1 <= len(first["units"]) < 6, (first["units"], first["stdout"])
    for unit in first["units"]:  # every folder present is complete, and its record says so
        record = first["records"][unit]
        assert record is not None and record["Status"] == "ok"
        files = first["digests"][unit]
        assert set(files) == set(record["Outputs"]) | {f"{unit}_batch.json"}
        assert all(files[name] == digest for name, digest in record["Outputs"].items())


def test_rerun_completes_only_missing_subjects(completed_run, capsys):
    first, out, second = (completed_run[k] for k in ("interrupted", "out", "resumed"))
    assert second["returncode"] == 2  # sub-07: bad input
    assert second["children"] == []  # cluster closed, no leaked workers
    done = first["units"]
    assert f"{len(done)} already done, {7 - len(done)} to process" in second["stdout"]
    assert f"{6 - len(done)} processed, {len(done)} skipped" in second["stdout"]
    assert "dask dashboard: http://" in second["stdout"]
    for unit in done:  # untouched, byte for byte
        assert _digest(out / unit) == first["digests"][unit]
    cpus = len(os.sched_getaffinity(0))
    for unit in GOOD:
        record = read_record(out / unit / f"{unit}_batch.json")
        assert record["Status"] == "ok" and len(record["Acquisitions"]) == 1
        assert record["FFTWorkers"] == max(1, cpus // 2)  # CPUs shared by the 2 workers
        assert (out / unit / "anat" / f"{unit}_Chimap.nii.gz").is_file()
        assert (out / unit / f"{unit}_report.html").is_file()
    assert not (out / "sub-07").exists()
    failure = json.loads((out / "logs" / "sub-07_batch-error.json").read_text())
    assert failure["ErrorType"] == "QSMInputError" and "sub-07_echo-2" in failure["Error"]
    assert "1 of 7 subject(s) failed: sub-07" in second["stderr"]
    assert not (out / ".qsmliver-work").exists()
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "qsmliver"
    sidecar = json.loads((out / "sub-01" / "anat" / "sub-01_Chimap.json").read_text())
    assert sidecar["Units"] == "ppm" and sidecar["SourceFiles"]
    # a third run has nothing to do and starts no cluster
    assert main(["batch", str(completed_run["root"]), str(out), "--level", "participant",
                 "--participant-label", *[u[4:] for u in GOOD], *CONFIG]) == 0
    assert "6 already done, 0 to process" in capsys.readouterr().out


def test_cohort_table_and_index(completed_run):
    out, truth = completed_run["out"], completed_run["truth"]
    table = pd.read_csv(out / "group" / "cohort_roi_stats.tsv", sep="\t",
                        dtype={"subject": str}, na_values=["n/a"], keep_default_na=False)
    assert len(table) == 6 * N_LABELS  # one row per subject and ROI
    assert not table.duplicated(["subject", "label"]).any()
    assert sorted(table["subject"].unique()) == [u[4:] for u in GOOD]
    assert {"Chimap_mean", "R2starmap_median", "Chimap_count"} <= set(table.columns)
    # the known cohort trend: globus pallidus χ rises by 0.01 ppm per subject
    gp = (table[table["label_name"].str.startswith("globus_pallidus")]
          .groupby("subject")["Chimap_mean"].mean())
    expected = np.array([truth[s] for s in gp.index])
    slope = np.polyfit(expected, gp.to_numpy(), 1)[0]
    assert np.corrcoef(expected, gp.to_numpy())[0, 1] > 0.95
    assert 0.6 < slope < 1.2, slope
    status = pd.read_csv(out / "group" / "cohort_status.tsv", sep="\t")
    assert list(status["status"]).count("ok") == 6 and list(status["status"]).count("failed") == 1
    index = (out / "index.html").read_text()
    for unit in GOOD:
        assert f'href="{unit}/{unit}_report.html"' in index
    assert "QSMInputError" in index


def test_external_scheduler_same_results(completed_run, tmp_path, capsys):
    root, reference = completed_run["root"], completed_run["out"]

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = open(tmp_path / "dask.log", "w")  # closed in finally
    processes = []
    try:
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", str(port), "--no-dashboard"], stdout=logs, stderr=logs))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1",
             "--nthreads", "1", "--no-dashboard", "--memory-limit", "2GB",
             "--local-directory", str(tmp_path / "worker")], stdout=logs, stderr=logs))
        out = tmp_path / "derivatives"
        status = main(["batch", str(root), str(out), "--scheduler", address,
                       "--participant-label", "01", "02", "--no-progress", *CONFIG])
        assert status == 0, capsys.readouterr().err
        assert f"scheduler {address} (1 worker(s))" in capsys.readouterr().out
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        logs.close()
    for unit in ("sub-01", "sub-02"):
        for suffix in ("Chimap", "R2starmap", "mask"):
            name = f"{unit}_{suffix}.nii.gz"
            here = np.asarray(nib.load(out / unit / "anat" / name).dataobj)
            there = np.asarray(nib.load(reference / unit / "anat" / name).dataobj)
            np.testing.assert_array_equal(here, there)
    assert len(pd.read_csv(out / "group" / "cohort_roi_stats.tsv", sep="\t")) == 2 * N_LABELS


def test_bids_app_form_and_stale_configuration(completed_run, capsys):
    root, out = completed_run["root"], completed_run["out"]
    assert bids_app_argv([str(root), str(out), "group"]) == [
        "batch", str(root), str(out), "--level", "group"]
    assert bids_app_argv(["--debug", str(root), "o", "participant", "--workers", "1"]) == [
        "--debug", "batch", str(root), "o", "--level", "participant", "--workers", "1"]
    assert bids_app_argv(["recon", str(root), "-o", "x"]) is None
    (out / "index.html").unlink()
    assert main([str(root), str(out), "group"]) == 0
    assert "group: 6 processed, 1 failed" in capsys.readouterr().out
    assert (out / "index.html").is_file()
    # another configuration into the same folder is refused before any work starts
    assert main([str(root), str(out), "participant", "--set", "inversion.method=tikhonov",
                 "--participant-label", "01"]) == 2
    assert "another configuration" in capsys.readouterr().err
    tasks = plan_batch(root, out, participant_labels=["01"],
                       config={"inversion": {"method": "tikhonov"}})
    assert unit_state(tasks[0]) == "stale"


def test_plan_labels_and_hash(cohort, tmp_path):
    root, _ = cohort
    tasks = plan_batch(root, tmp_path / "out", config={"inversion": {"method": "tkd"}})
    assert [t.unit for t in tasks] == [*GOOD, "sub-07"]
    assert all(t.labels and t.labels.endswith("_desc-tissue_dseg.nii.gz") for t in tasks)
    assert all(t.label_table.endswith(".tsv") for t in tasks)
    assert len({t.config_hash for t in tasks}) == 1
    assert len({t.input_fingerprint for t in tasks}) == 7
    assert tasks[0].memory_bytes > 400 * 2**20
    other = plan_batch(root, tmp_path / "out", participant_labels=["sub-01"],
                       config={"inversion": {"method": "tikhonov"}})
    assert other[0].config_hash != tasks[0].config_hash
    assert config_hash({"device": "cpu", "a": 1}, anatomy="brain") == config_hash(
        {"a": 1, "device": "cuda"}, anatomy="brain")
    assert config_hash({"a": 1}, anatomy="brain") != config_hash({"a": 1}, anatomy="liver")
    with pytest.raises(QSMInputError, match="participant"):
        plan_batch(root, tmp_path / "out", participant_labels=["99"])
    with pytest.raises(QSMInputError, match="session"):
        plan_batch(root, tmp_path / "out", sessions=["2"])
    with pytest.raises(QSMConfigError, match="must not be the BIDS dataset"):
        plan_batch(root, root)
    with pytest.raises(QSMInputError, match="no such BIDS folder"):
        plan_batch(tmp_path / "missing", tmp_path / "out")
    # labels: an explicit file for everyone, a derivatives folder, or none (the mask)
    image = tasks[0].labels
    assert find_labels(root, "02", None, image)[0] == image
    assert find_labels(root, "01", None, tmp_path) == (None, None)
    with pytest.raises(QSMInputError):
        find_labels(root, "01", None, tmp_path / "nope")


def test_sessions_mask_roi_and_anatomy(tmp_path, monkeypatch):
    """Sessions are separate units; without labels the mask is the ROI; errors are recorded."""
    root = tmp_path / "bids"
    write_synthetic_cohort(root, 1, shape=(24, 24, 24), sessions=["1", "2"], labels=False)
    tasks = plan_batch(root, tmp_path / "out")
    assert [t.unit for t in tasks] == ["sub-01_ses-1", "sub-01_ses-2"]
    assert tasks[1].relative_dir == Path("sub-01/ses-2") and tasks[0].labels is None
    out = tmp_path / "out"
    settings = ClusterSettings(workers=1, dashboard_address=None)
    summary = run_batch(plan_batch(root, out, sessions=["2"],
                                   config={"inversion": {"method": "tkd"}}),
                        settings, progress=False)
    assert summary.succeeded == ["sub-01_ses-2"] and summary.workers == 1
    roi = pd.read_csv(out / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_desc-roi_stats.tsv",
                      sep="\t", dtype={"session": str})
    assert list(roi["label_name"]) == ["mask", "mask"] and set(roi["session"]) == {"2"}
    assert list(roi["map"]) == ["Chimap", "R2starmap"]
    # the anatomy reaches the pipeline, and a pipeline error is recorded, not raised
    import qsmliver.pipeline

    seen = []

    def refuse(gre, anatomy, **kwargs):
        seen.append(anatomy)
        raise QSMConfigError(f"anatomy {anatomy!r} refused (test)")

    monkeypatch.setattr(qsmliver.pipeline, "recon", refuse)
    liver = plan_batch(root, tmp_path / "liver", anatomy="liver")[0]
    outcome = process_subject(liver)
    assert seen == ["liver"]
    assert outcome["Status"] == "failed" and outcome["ErrorType"] == "QSMConfigError"
    assert "'liver' refused" in outcome["Error"] and outcome["InputError"]
    assert not list((tmp_path / "liver").glob(".qsmliver-work/*"))


def test_worker_plan_and_lock(tmp_path):
    import psutil

    plan = worker_plan(10, 2**30, workers=2, threads_per_worker=1)
    assert plan["n_workers"] == 2 and plan["resources"] is None
    available = psutil.virtual_memory().available
    assert 0.3 * available < plan["memory_limit"] <= 0.5 * available
    assert worker_plan(1, 2**30, workers=4)["n_workers"] == 1  # never more than tasks
    huge = worker_plan(10, 10 * available)
    assert huge["n_workers"] == 1 and huge["notes"]
    assert worker_plan(3, 2**20, memory_limit="1GB")["memory_limit"] == 10**9
    assert worker_plan(3, 2**20, gpu=True)["resources"] == {"GPU": 1}
    with pytest.raises(QSMConfigError):
        worker_plan(3, 2**20, workers=0)
    with pytest.raises(QSMConfigError):
        worker_plan(3, 2**20, memory_limit="lots")
    with output_lock(tmp_path), pytest.raises(QSMConfigError, match="another qsmliver batch"), \
            output_lock(tmp_path):
        pass


def test_commit_holds_ctrl_c_back():
    from qsmliver.batch.runner import _interrupt_deferred

    finished = []
    with _ctrl_c_raises(), pytest.raises(KeyboardInterrupt):
        with _interrupt_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            finished.append(True)
    assert finished == [True]


def test_unreachable_scheduler_is_a_clear_error(cohort, tmp_path):
    root, _ = cohort
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends
    tasks = plan_batch(root, tmp_path / "out", participant_labels=["01"])
    settings = ClusterSettings(scheduler=f"tcp://127.0.0.1:{port}", connect_timeout_s=1)
    with pytest.raises(QSMConfigError, match="cannot reach the dask scheduler"):
        run_batch(tasks, settings, progress=False, echo=lambda line: None)
    assert not (tmp_path / "out" / ".qsmliver-work").exists()
    assert not list((tmp_path / "out").glob("sub-*"))

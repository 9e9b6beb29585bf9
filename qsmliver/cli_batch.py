"""The ``qsmliver batch`` command (and the BIDS-App form ``qsmliver BIDS OUT participant``).

Workflow only (DESIGN section 1): options to a configuration, :func:`qsmliver.batch.plan_batch`
to the tasks, :func:`qsmliver.batch.run_batch` on dask.distributed, then
:func:`qsmliver.batch.run_group` for the cohort table and QC index.

Exit status: 0 when every subject succeeded; 2 for bad input/configuration, including a run in
which every failed subject failed on bad input; 1 when a subject failed for another reason;
130 on Ctrl-C (finished subjects are kept whole, the others are absent).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["bids_app_argv", "register"]

_LEVELS = ("participant", "group")


def bids_app_argv(argv: Sequence[str]) -> list[str] | None:
    """``BIDS_DIR OUT participant|group [options]`` as ``batch`` arguments; None otherwise.

    Leading ``--debug`` is kept in front (it belongs to the main parser).

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> bids_app_argv([d, "out", "participant", "--workers", "2"])[1:] == [
    ...     d, "out", "--level", "participant", "--workers", "2"]
    True
    >>> bids_app_argv(["recon", "x", "-o", "y"]) is None
    True
    """
    argv = list(argv)
    lead = []
    while argv and argv[0] == "--debug":
        lead.append(argv.pop(0))
    if len(argv) >= 3 and argv[2] in _LEVELS and not argv[0].startswith("-") \
            and Path(argv[0]).is_dir():
        return [*lead, "batch", argv[0], argv[1], "--level", argv[2], *argv[3:]]
    return None


def register(commands: Any) -> None:
    """Add the ``batch`` sub-command to ``commands``.

    Parameters
    ----------
    commands : argparse._SubParsersAction
        The object returned by ``parser.add_subparsers()``.
    """
    batch = commands.add_parser(
        "batch", help="process every subject/session of a BIDS dataset on dask.distributed "
                      "(resumable), with QC reports and a cohort table",
        description="Process a BIDS cohort: one dask task per subject/session, finished "
                    "subjects skipped, failures recorded, outputs moved into place only when "
                    "complete. Also runs as a BIDS App: qsmliver BIDS_DIR OUT participant|group.")
    batch.add_argument("bids_dir", metavar="BIDS_DIR", help="BIDS dataset with *_MEGRE files")
    batch.add_argument("output", metavar="OUT",
                       help="derivatives folder (e.g. BIDS_DIR/derivatives/qsmliver)")
    batch.add_argument("--level", choices=("participant", "group", "all"), default="all",
                       help="participant: process subjects; group: cohort table and index "
                            "only; all (default): both")
    batch.add_argument("--participant-label", "--participant_label", nargs="+",
                       metavar="LABEL", dest="participant_label",
                       help="subjects to process (default: all)")
    batch.add_argument("--session", "--session-label", "--session_label", nargs="+",
                       metavar="LABEL", dest="session", help="sessions to process")
    batch.add_argument("--anatomy", choices=("brain", "liver"), default="brain")
    batch.add_argument("--config", metavar="FILE", help="pipeline configuration (TOML/JSON)")
    batch.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                       help="any configuration value, e.g. inversion.method=tkd (repeatable)")
    batch.add_argument("--labels", metavar="PATH",
                       help="dseg NIfTI for every subject, or a derivatives folder searched "
                            "for sub-*/[ses-*/]anat/*_dseg.nii[.gz] (default: the dataset's "
                            "own dseg files, else the mask as the only ROI)")
    batch.add_argument("--device", help="auto, cpu or cuda (default: from the configuration; "
                                        "GPU workers get dask resources GPU=1)")
    batch.add_argument("--scheduler", default="auto", metavar="auto|ADDRESS",
                       help="auto: a local cluster of worker processes; or the address of "
                            "a running dask scheduler (tcp://host:8786)")
    batch.add_argument("--workers", type=int, metavar="N",
                       help="local worker processes (default: from CPUs and memory)")
    batch.add_argument("--threads-per-worker", type=int, default=1, metavar="N")
    batch.add_argument("--memory-limit", metavar="BYTES",
                       help="per local worker, e.g. 4GB (default: available memory / N)")
    batch.add_argument("--dashboard-address", default=":0", metavar="HOST:PORT",
                       help="local dask dashboard (default :0, a free port; 'none' for off)")
    batch.add_argument("--overwrite", action="store_true",
                       help="reprocess subjects finished with another configuration or inputs")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar")
    batch.set_defaults(handler=_cmd_batch)


def _config(args: argparse.Namespace):
    from qsmliver.cli import _parse_set
    from qsmliver.pipeline import ReconConfig, load_config

    config = load_config(args.config) if args.config else ReconConfig.from_mapping()
    config = config.updated({"anatomy": args.anatomy}, where="command line")
    if args.set:
        config = config.updated(_parse_set(args.set), where="--set")
    return config


def _device(requested: str | None, config_device: str, local: bool) -> str:
    """The device of the workers: "cpu", "cuda[:N]", or "auto" (decided on each worker).

    On a local cluster "auto" becomes "cuda" when this machine has a usable GPU (GPU workers
    then get the dask resource ``GPU=1``) and "cpu" otherwise; with a remote scheduler it
    stays "auto".
    """
    from qsmliver import backend

    device = str(requested or config_device or "auto").strip().lower()
    if device == "auto":
        if not local:
            return "auto"
        return "cuda" if backend.cupy_available() else "cpu"
    return str(backend.resolve_device(device))


def _cmd_batch(args: argparse.Namespace) -> int:
    from qsmliver.batch import ClusterSettings, plan_batch, run_batch, run_group
    from qsmliver.cli import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE

    status = EXIT_OK
    if args.level in ("participant", "all"):
        config = _config(args)
        device = _device(args.device, config.values.get("device", "auto"),
                         local=args.scheduler == "auto")
        tasks = plan_batch(args.bids_dir, args.output, participant_labels=args.participant_label,
                           sessions=args.session, anatomy=args.anatomy, config=config,
                           labels=args.labels, device=device)
        dashboard = None if str(args.dashboard_address).lower() == "none" \
            else args.dashboard_address
        settings = ClusterSettings(scheduler=args.scheduler, workers=args.workers,
                                   threads_per_worker=args.threads_per_worker,
                                   memory_limit=args.memory_limit, dashboard_address=dashboard)
        summary = run_batch(tasks, settings, overwrite=args.overwrite,
                            progress=not args.no_progress)
        print(f"batch: {len(summary.succeeded)} processed, {len(summary.skipped)} skipped "
              f"(already done), {len(summary.failed)} failed in {summary.seconds:.1f} s")
        if summary.failed:
            shown = "; ".join(f"{unit}: {error}" for unit, error in
                              list(summary.failed.items())[:3])
            more = f" (and {len(summary.failed) - 3} more)" if len(summary.failed) > 3 else ""
            print(f"qsmliver: error: {len(summary.failed)} of {summary.total} subject(s) "
                  f"failed: {shown}{more}; details in {Path(args.output) / 'logs'}",
                  file=sys.stderr)
            status = EXIT_USAGE if summary.input_errors else EXIT_INTERNAL
    if args.level in ("group", "all"):
        result = run_group(args.output)
        print(f"group: {result['ok']} processed, {result['failed']} failed; cohort table "
              f"({result['rows']} rows) {result['table']}; QC index {result['index']}")
    return status

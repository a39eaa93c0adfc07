"""`stress-lightning runs reap`: close the MLflow runs that a killed process left RUNNING.

A fit killed with SIGKILL (or by the out-of-memory killer, or a power cut) cannot end its run: MLflow shows it
RUNNING forever. Every fit closes the stale runs of its own experiment when it starts (`FaultTolerance`); this
command does it for any experiment, or for named runs. A run is stale when its tags name a process on this host
that is gone (`stress_lightning.host/pid/process_start`). Runs of other hosts are listed, never closed on a
guess: name them with `--run-id` once you know their process is gone.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from stress_lightning.commands import CommandError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stress-lightning runs",
        description="Runs left RUNNING by a process that was killed: list them, or close them as KILLED.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    reap = sub.add_parser(
        "reap",
        help="close (KILLED) the RUNNING runs whose process is gone",
        description="Close (status KILLED, tag stress_lightning.end_reason) the RUNNING runs whose process is gone. "
        "Without --run-id: the runs of this host whose process is no longer running.",
    )
    reap.add_argument(
        "--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db"
    )
    reap.add_argument("--experiment", action="append", default=None, metavar="NAME", help="only this experiment")
    reap.add_argument(
        "--run-id",
        action="append",
        default=None,
        metavar="ID",
        help="close this RUNNING run (also one from another host); refused when its process runs on this host",
    )
    reap.add_argument("--dry-run", action="store_true", help="say what would be closed, change nothing")
    return parser


def main(argv: Sequence[str]) -> int:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    from stress_lightning.tracking.lifecycle import close_run, find_stale_runs, run_process_state
    from stress_lightning.tracking.store import (
        TrackingUnavailableError,
        check_tracking_reachable,
        display_uri,
        resolve_tracking_uri,
    )

    args = build_parser().parse_args(list(argv))
    try:
        uri = resolve_tracking_uri(args.tracking_uri)
        check_tracking_reachable(uri)
    except (ValueError, TrackingUnavailableError) as err:
        raise CommandError(str(err)) from err
    client = MlflowClient(uri)
    closed = 0
    if args.run_id:
        for run_id in args.run_id:
            try:
                run = client.get_run(run_id)
            except MlflowException as err:
                raise CommandError(f"run {run_id}: not in {display_uri(uri)}") from err
            if run.info.status != "RUNNING":
                print(f"{run_id}: already {run.info.status}; left as it is")
                continue
            alive, description = run_process_state(run.data.tags)
            if alive:
                raise CommandError(f"run {run_id}: {description}; stop that process instead", code=2)
            print(f"{run_id} ({run.info.run_name}): {description}: {'would close' if args.dry_run else 'KILLED'}")
            if not args.dry_run:
                close_run(client, run_id, f"{description}: closed by `stress-lightning runs reap --run-id`")
                closed += 1
        return 0
    if args.experiment:
        experiments = []
        for name in args.experiment:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise CommandError(f"no experiment named {name!r} in {display_uri(uri)}", code=2)
            experiments.append(experiment)
    else:
        experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    ids = [e.experiment_id for e in experiments]
    stale = find_stale_runs(client, ids) if ids else []
    for run in stale:
        print(f"{run.run_id} ({run.run_name}): {run.reason}: {'would close' if args.dry_run else 'KILLED'}")
        if not args.dry_run:
            close_run(client, run.run_id, f"{run.reason}: closed by `stress-lightning runs reap`")
            closed += 1
    # RUNNING runs this command cannot judge: say so, so they are not forgotten.
    others = client.search_runs(ids, "attributes.status = 'RUNNING'", max_results=1000) if ids else []
    for run in others:
        alive, description = run_process_state(run.data.tags)
        if alive is None:
            print(
                f"{run.info.run_id} ({run.info.run_name}): RUNNING, {description}; close it with --run-id once "
                "it is gone"
            )
    print(f"{closed} run(s) closed" if not args.dry_run else f"{len(stale)} run(s) would be closed")
    return 0

"""`stress-lightning sync FILE...`: send what a run kept locally while its tracking store was away.

A fit whose MLflow server went away and did not come back before the run ended leaves
`mlruns/pending/<run_id>.jsonl` (see `stress_lightning.tracking.spool`) and says so. Once the server answers,
this command sends the file's metrics, parameters, checkpoints and the run's end, in order, to the run it names,
then deletes the file. A file that cannot be sent stays as it was (minus what was sent), so running the command
again is safe.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from stress_lightning.commands import CommandError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stress-lightning sync",
        description="Send the metrics a run kept locally (mlruns/pending/<run_id>.jsonl) while its tracking store "
        "was unreachable.",
    )
    parser.add_argument("files", nargs="*", type=Path, metavar="FILE", help="pending files (default: all of them)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="folder searched when no FILE is given (default: mlruns/pending)"
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="send to this store instead of the one recorded in the file (the same run id must exist there)",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from stress_lightning.tracking.spool import DEFAULT_SPOOL_DIR, PendingRun, SpoolError
    from stress_lightning.tracking.store import TrackingUnavailableError, check_tracking_reachable, display_uri

    args = build_parser().parse_args(list(argv))
    files = list(args.files)
    if not files:
        folder = args.dir or DEFAULT_SPOOL_DIR
        files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
        if not files:
            print(f"nothing to send: no pending files in {folder}")
            return 0
    failures = 0
    for path in files:
        try:
            pending = PendingRun.load(path)
        except SpoolError as err:
            raise CommandError(str(err)) from err
        uri = args.tracking_uri or pending.tracking_uri
        count = pending.metric_count
        try:
            check_tracking_reachable(uri)
            pending.send(MlflowClient(uri))
        except (TrackingUnavailableError, SpoolError, MlflowException) as err:
            print(f"{path}: not sent to {display_uri(uri)}: {err}")
            failures += 1
            continue
        print(f"{path}: sent {count} metric values of run {pending.run_id} to {display_uri(uri)}")
    if failures:
        raise CommandError(f"{failures} of {len(files)} pending files could not be sent; they are kept")
    return 0

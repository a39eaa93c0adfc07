"""`stress-lightning promote`: apply the promotion gate to one registered version by hand (the gate RegistryCallback
applies after `test`), and write the decision on the version."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from stress_lightning.commands import CommandError, print_json
from stress_lightning.tracking.registry import CHAMPION, DEFAULT_GATE_TAGS, DEFAULT_METRIC, DEFAULT_MODEL_NAME

if TYPE_CHECKING:
    from stress_lightning.tracking.registry import ModelRegistry, PromotionDecision

_GATE_TAGS = ", ".join(f"{k}={v}" for k, v in DEFAULT_GATE_TAGS.items())

DESCRIPTION = f"""\
Apply the promotion gate to one registered model version and record the decision on it.

The version is --version N, or the one registered from --run-id ID under --name (the newest when the run
registered several). The gate is the one RegistryCallback applies after `test`, in order:
  1. the gate tags hold on the version or its run ({_GATE_TAGS});
  2. the version's model files are in the artifact store: MLmodel, every file it declares (weights, net
     config, labels, spec, the ONNX graphs it carries) and the ONNX graphs its run exported;
  3. the run has --metric, and it is at least the current --alias holder's (ties promote; no holder, or one
     without the metric, means steps 1-2 suffice).
When the gate passes, --alias moves to the version. Either way the decision is written on the version as tags
promotion.decision (the alias, or "rejected"), promotion.reason, promotion.metric, promotion.candidate_value,
promotion.previous_version and promotion.previous_value. --dry-run prints the decision and changes nothing.

Store: --tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db.

Exit status: 0 a decision was made (promoted or refused; the line says which and why); 1 the store, model,
version or run cannot be found; 2 usage error."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stress-lightning promote", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", metavar="N", help="the model version to consider")
    which.add_argument("--run-id", metavar="ID", help="the run whose registered version to consider")
    parser.add_argument(
        "--name", default=DEFAULT_MODEL_NAME, metavar="NAME", help=f"registered model (default {DEFAULT_MODEL_NAME})"
    )
    parser.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        metavar="KEY",
        help=f"run metric compared, higher wins (default {DEFAULT_METRIC})",
    )
    parser.add_argument("--alias", default=CHAMPION, metavar="ALIAS", help=f"alias to move (default {CHAMPION})")
    parser.add_argument("--dry-run", action="store_true", help="print the decision; move no alias, write no tag")
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")
    parser.add_argument(
        "--tracking-uri", metavar="URI", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/...)"
    )
    return parser


def main(argv: Sequence[str]) -> int:
    # The gate downloads the version's MLmodel; MLflow's progress bar would land in the middle of the output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.version is not None and not (args.version.isdigit() and int(args.version) > 0):
        parser.error(f"--version must be a positive integer, got {args.version!r}")
    for option in ("name", "metric", "alias", "run_id"):
        value = getattr(args, option)
        if value is not None and not value.strip():
            parser.error(f"--{option.replace('_', '-')} must not be empty")
    from mlflow.exceptions import MlflowException

    registry = open_registry(parser, args.tracking_uri)
    try:
        if args.version is not None:
            version = str(int(args.version))
            check_version(registry, args.name, version)
        else:
            version = version_of_run(registry, args.name, args.run_id)
        decision = registry.decide_promotion(version, name=args.name, metric=args.metric, alias=args.alias)
        if not args.dry_run:
            registry.apply_promotion(decision)
    except (MlflowException, OSError) as err:
        raise store_error(registry, err) from err
    if args.json:
        print_json({**asdict(decision), "missing_artifacts": list(decision.missing_artifacts), "dry_run": args.dry_run})
    else:
        print(decision_line(decision, args.dry_run))
    return 0


def open_registry(parser: argparse.ArgumentParser, tracking_uri: str | None) -> ModelRegistry:
    """The registry of an existing store that answers: a malformed URI is a usage error; a missing SQLite file (opening
    one would create an empty store) or a server or database that does not answer is an input error, found by one
    short probe rather than MLflow's retries, which take minutes."""
    import os
    from urllib.parse import unquote

    from stress_lightning.tracking.registry import ModelRegistry
    from stress_lightning.tracking.store import (
        DEFAULT_TRACKING_URI,
        TRACKING_URI_ENV,
        display_uri,
        resolve_tracking_uri,
        tracking_unreachable_reason,
    )

    candidate = tracking_uri or os.environ.get(TRACKING_URI_ENV) or DEFAULT_TRACKING_URI
    if candidate.startswith("sqlite:///"):
        path = unquote(candidate[len("sqlite:///") :])
        if path and path != ":memory:" and not os.path.isfile(path):
            raise CommandError(f"no MLflow store at {os.path.abspath(path)} (tracking URI {candidate})")
    try:
        uri = resolve_tracking_uri(candidate)
    except ValueError as err:
        parser.error(str(err))
    reason = tracking_unreachable_reason(uri)
    if reason is not None:
        raise CommandError(f"MLflow store {display_uri(uri)} is not reachable ({reason})")
    return ModelRegistry(uri)


def store_error(registry: ModelRegistry, err: BaseException) -> CommandError:
    """An MLflow or I/O failure while reading the store, as a command error naming the store (password hidden)."""
    from stress_lightning.tracking.store import display_uri

    message = getattr(err, "message", None) or f"{type(err).__name__}: {err}"
    return CommandError(f"MLflow store {display_uri(registry.client.tracking_uri)}: {message}")


def _store(registry: ModelRegistry) -> str:
    from stress_lightning.tracking.store import display_uri

    return display_uri(registry.client.tracking_uri)


def registered_models_hint(registry: ModelRegistry) -> str:
    names = registry.registered_model_names()
    return f"registered: {', '.join(names)}" if names else "the store has no registered model"


def check_model(registry: ModelRegistry, name: str) -> None:
    if not registry.has_registered_model(name):
        hint = registered_models_hint(registry)
        raise CommandError(f"registered model {name!r} not found in {_store(registry)} ({hint})")


def check_version(registry: ModelRegistry, name: str, version: str) -> None:
    check_model(registry, name)
    versions = [mv.version for mv in registry.versions(name)]
    if str(version) not in {str(v) for v in versions}:
        known = ", ".join(str(v) for v in sorted(versions, key=int)) or "none"
        raise CommandError(
            f"registered model {name!r} has no version {version} in {_store(registry)} (versions: {known})"
        )


def version_of_run(registry: ModelRegistry, name: str, run_id: str) -> str:
    """The newest version of `name` registered from `run_id`; several are named on stderr."""
    check_model(registry, name)
    versions = registry.versions(name, run_id=run_id)
    if not versions:
        raise CommandError(f"run {run_id} has no version registered under model {name!r} in {_store(registry)}")
    if len(versions) > 1:
        listed = ", ".join(f"v{mv.version}" for mv in versions)
        print(f"run {run_id} registered {listed} of {name}; using the newest, v{versions[0].version}", file=sys.stderr)
    return str(versions[0].version)


def decision_line(decision: PromotionDecision, dry_run: bool = False) -> str:
    """One line: the version, promoted or not, why, and the alias' previous holder."""
    model = f"{decision.name} v{decision.version}"
    holder = f"v{decision.champion_version}" if decision.champion_version else "none"
    if dry_run:
        verdict = "would be promoted" if decision.promoted else "would not be promoted"
        return (
            f"dry run: {model} {verdict} to {decision.alias} ({decision.reason}); "
            f"current {decision.alias}: {holder}; nothing changed"
        )
    if decision.promoted:
        return f"{model}: promoted to {decision.alias} ({decision.reason}); previous {decision.alias}: {holder}"
    return f"{model}: not promoted to {decision.alias} ({decision.reason}); {decision.alias} stays {holder}"

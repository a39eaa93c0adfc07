"""`stress-lightning models`: the architectures a config can name, by kind (`models [--json]`), and the model
registry from a terminal (`models list`: every version of the registered models with its aliases, run, key test
metrics, export status and promotion decision)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from stress_lightning.commands import print_json

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from stress_lightning.tracking.registry import ModelRegistry

# The run metrics shown (names as MultiTaskStressModule logs them), with their column headers.
KEY_METRICS: dict[str, str] = {
    "test/stress_f1": "stress_f1",
    "test/expression_acc": "expr_acc",
    "test/hr_mae_bpm": "hr_mae_bpm",
}
EXPORTS = ("onnx", "fp16", "tensorrt")
SHORT_RUN_ID = 8

# Kinds of registered architecture, in the order listed.
KINDS = ("spatial", "temporal", "body", "rppg", "stress")

DESCRIPTION = """\
Without an action: the names a config can give each part of the network, by kind, one line each
(`spatial: a, b, c`): spatial (per-frame backbones, model.init_args.net.spatial_backbone), temporal (clip
backbones, ...temporal_backbone), body (keypoint backbones, ...body_backbone), rppg (pulse backbones,
...rppg_backbone) and stress (the neural stress head, and the scikit-learn classifiers that
stress_lightning.tracking.stress_classic.ClassicStressCallback fits on a trained model's outputs). --json prints
{"spatial": [...], "temporal": [...], "body": [...], "rppg": [...], "stress": [...]}, names sorted.

`models list`: the model registry (registered versions, their metrics, exports and promotion); `models list
--help` for the columns it shows.

Exit status: 0 listed; 1 the store or the --name model cannot be found (list); 2 usage error."""

LIST_DESCRIPTION = f"""\
List registered model versions, newest first: version, aliases, run id, creation time (local), the run's
{", ".join(KEY_METRICS)}, the export status (export.onnx.status, export.fp16.status,
export.tensorrt.status: version tags, else the run's) and the promotion decision (promotion.decision and
promotion.reason version tags). Models by name, one table each. --json prints the same as a JSON list, one
object per version with keys name, version, aliases, run_id (full), created (ISO 8601), metrics, export and
promotion.

Store: --tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db.

Exit status: 0 listed (an empty registry lists nothing); 1 the store or the --name model cannot be found;
2 usage error."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stress-lightning models",
        usage="%(prog)s [-h] [--json]\n       %(prog)s list [-h] [--name NAME] [--json] [--tracking-uri URI]",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Its own dest: `list` has a --json of its own, and argparse would let the subparser's default overwrite it.
    parser.add_argument("--json", dest="names_json", action="store_true", help="the names by kind as a JSON object")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="registered model versions, newest first",
        description=LIST_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listing.add_argument("--name", metavar="NAME", help="only this registered model (default: every one)")
    listing.add_argument("--json", action="store_true", help="print a JSON list instead of tables")
    listing.add_argument(
        "--tracking-uri", metavar="URI", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/...)"
    )
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.action is None:
        return list_names(args.names_json)
    return list_versions(parser, args)


def architecture_names() -> dict[str, list[str]]:
    """Registered names by kind (`KINDS`), each sorted. stress: the `HEADS` entries that are stress heads and the
    `STRESS_CLASSIFIERS`."""
    from stress_lightning.models.heads import StressHead
    from stress_lightning.models.registry import (
        BODY_BACKBONES,
        HEADS,
        RPPG_BACKBONES,
        SPATIAL_BACKBONES,
        STRESS_CLASSIFIERS,
        TEMPORAL_BACKBONES,
    )

    def is_stress_head(name: str) -> bool:
        entry = HEADS.get(name)
        return name.startswith("stress") or (isinstance(entry, type) and issubclass(entry, StressHead))

    stress = [name for name in HEADS.names() if is_stress_head(name)] + STRESS_CLASSIFIERS.names()
    return {
        "spatial": SPATIAL_BACKBONES.names(),
        "temporal": TEMPORAL_BACKBONES.names(),
        "body": BODY_BACKBONES.names(),
        "rppg": RPPG_BACKBONES.names(),
        "stress": sorted(set(stress)),
    }


def list_names(as_json: bool) -> int:
    names = architecture_names()
    if as_json:
        print_json(names)
    else:
        for kind in KINDS:
            print(f"{kind}: {', '.join(names[kind]) or '(none)'}")
    return 0


def list_versions(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from stress_lightning.commands.promote import check_model, open_registry, store_error
    from stress_lightning.tracking.store import display_uri

    registry = open_registry(parser, args.tracking_uri)
    try:
        if args.name is not None:
            check_model(registry, args.name)
        names = [args.name] if args.name is not None else registry.registered_model_names()
        models = {name: rows(registry, name) for name in names}
    except (MlflowException, OSError) as err:
        raise store_error(registry, err) from err
    if args.json:
        print_json([row for entries in models.values() for row in entries])
    elif not models:
        print(f"no registered models in {display_uri(registry.client.tracking_uri)}")
    else:
        print("\n\n".join(model_table(name, entries) for name, entries in models.items()))
    return 0


def rows(registry: ModelRegistry, name: str) -> list[dict[str, Any]]:
    """One dict per version of `name`, newest first."""
    aliases = registry.aliases(name)
    return [version_row(registry, mv, aliases.get(str(mv.version), [])) for mv in registry.versions(name)]


def version_row(registry: ModelRegistry, mv: ModelVersion, aliases: list[str]) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException

    metrics: dict[str, float] = {}
    run_tags: dict[str, str] = {}
    if mv.run_id:
        try:
            run = registry.client.get_run(mv.run_id)
            metrics, run_tags = dict(run.data.metrics), dict(run.data.tags)
        except MlflowException:
            pass  # the run was deleted: the version still lists, without its metrics
    tags = {**run_tags, **mv.tags}  # the callback copies export.* onto the version; a hand-registered one has none
    created = datetime.fromtimestamp(mv.creation_timestamp / 1000).astimezone() if mv.creation_timestamp else None
    return {
        "name": mv.name,
        "version": int(mv.version),
        "aliases": aliases,
        "run_id": mv.run_id or None,
        "created": created.isoformat(timespec="seconds") if created else None,
        "metrics": {key: metrics.get(key) for key in KEY_METRICS},
        "export": {kind: tags.get(f"export.{kind}.status") for kind in EXPORTS},
        "promotion": {"decision": mv.tags.get("promotion.decision"), "reason": mv.tags.get("promotion.reason")},
    }


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def model_table(name: str, entries: list[dict[str, Any]]) -> str:
    """A heading and one line per version; text columns left-aligned, numbers right-aligned, the reason last."""
    held = ", ".join(f"{alias} v{row['version']}" for row in entries for alias in row["aliases"])
    heading = f"{name}: {len(entries)} version{'s' if len(entries) != 1 else ''}" + (f" ({held})" if held else "")
    header = ["version", "aliases", "run", "created", *KEY_METRICS.values(), *EXPORTS, "promotion"]
    numeric = [True, False, False, False, *([True] * len(KEY_METRICS)), *([False] * len(EXPORTS)), False]
    lines = []
    for row in entries:
        promotion = row["promotion"]
        decision = promotion["decision"] or "-"
        if promotion["reason"]:
            decision += f": {promotion['reason']}"
        lines.append(
            [
                str(row["version"]),
                ",".join(row["aliases"]) or "-",
                (row["run_id"] or "-")[:SHORT_RUN_ID],
                row["created"][:16].replace("T", " ") if row["created"] else "-",
                *(_metric(row["metrics"][key]) for key in KEY_METRICS),
                *(row["export"][kind] or "-" for kind in EXPORTS),
                decision,
            ]
        )
    cells = [header, *lines]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = [heading]
    for row in cells:
        parts = [
            cell if i == len(header) - 1 else (cell.rjust(w) if numeric[i] else cell.ljust(w))
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(parts).rstrip())
    return "\n".join(out)

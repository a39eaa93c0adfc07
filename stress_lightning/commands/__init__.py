"""User commands beside LightningCLI's fit/validate/test/predict (`stress_lightning.cli.main` dispatches on the first
argument; each is the module `stress_lightning.commands.<name>`):

- `data summary|corpora|shards`: what a corpus holds and what is wrong with it; the registered corpora; a run's
  clips written as litdata shards (and parts merged) for streaming;
- `evaluate ...`: a trained model (registry URI or checkpoint) on one split of any corpus;
- `stream ...`: a video file or a camera through a trained model, in real time, as JSON lines;
- `export ...`: a trained model to ONNX (FP32, FP16) and TensorRT, each file checked;
- `promote ...`: the registry's promotion gate applied to one version by hand;
- `models [--json]`: the registered architectures by kind; `models list ...`: the registered model versions, their
  metrics, exports and promotion decisions;
- `sync [FILE...]`: send what a run kept locally while its tracking server was unreachable;
- `runs reap ...`: close the MLflow runs a killed process left RUNNING.
- `compare --config conf/compare/<name>.yaml`: train a list of runs into one MLflow experiment and write their
  metrics as a Markdown table.

Each command is an argparse program with its own `--help`. Exit codes: 0 done (problems found in a corpus are
reported, not failures), 1 the input cannot be read (the error names the path), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml

COMMANDS: tuple[str, ...] = ("data", "evaluate", "stream", "export", "promote", "models", "sync", "runs", "compare")


class CommandError(Exception):
    """A command failed on its input; `code` is the exit status (1: unreadable input)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def run(argv: Sequence[str]) -> int:
    """Run the command named by argv[0] with the rest of argv; returns the exit status.

    Usage errors exit through argparse (SystemExit(2)) with the usage line; input errors are printed to stderr
    as `error: ...` and return 1.
    """
    argv = list(argv)
    if not argv or argv[0] not in COMMANDS:
        raise ValueError(f"not a command: {argv[:1]}; commands: {list(COMMANDS)}")
    import importlib

    main = importlib.import_module(f"stress_lightning.commands.{argv[0]}").main
    try:
        return int(main(argv[1:]) or 0)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


# -- shared argument handling -----------------------------------------------------------------------------------
def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, metavar="NAME", help="registered corpus (`data corpora`)")
    parser.add_argument("--root", required=True, metavar="PATH", help="the corpus folder in its official layout")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a reader option, VALUE read as YAML (e.g. --option layout=csv --option val_fraction=0.2); repeatable",
    )


def parse_options(parser: argparse.ArgumentParser, pairs: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings -> {key: YAML value}; a malformed pair is a usage error."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            parser.error(f"--option {pair!r}: expected KEY=VALUE")
        try:
            options[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            parser.error(f"--option {pair!r}: VALUE is not valid YAML ({exc})")
    return options


def check_corpus_name(parser: argparse.ArgumentParser, name: str) -> None:
    from stress_lightning.data.corpora import CORPORA

    if name not in CORPORA:
        parser.error(f"unknown corpus {name!r}; known corpora: {', '.join(CORPORA.names())}")


def build_reader(parser: argparse.ArgumentParser, name: str, options: dict[str, Any], on_error: str = "skip"):
    """The corpus reader; an unknown name or a bad option is a usage error."""
    from stress_lightning.data.corpora import build_corpus

    check_corpus_name(parser, name)
    try:
        return build_corpus(name, on_error=on_error, **options)
    except (TypeError, ValueError) as exc:
        parser.error(f"corpus {name!r}: bad --option: {exc}")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned first column, right-aligned others."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)

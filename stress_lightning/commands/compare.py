"""`stress-lightning compare --config conf/compare/<name>.yaml`: train a list of models into one MLflow experiment and
write their test metrics side by side as a Markdown table.

A comparison file names the experiment, the config files every run uses (`base`), the metric columns and the runs:

```yaml
experiment: stress-lightning-ablations
base: [conf/synthetic.yaml, conf/size/cpu.yaml]
metrics: [test/stress_f1, test/expression_acc, test/expression_f1, test/hr_mae_bpm]
tags: [export.onnx.status]             # optional: run tags shown as columns
overrides: []                          # optional: CLI arguments every run gets
tracking_uri: null                     # optional: else $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db
runs:
  - name: full
    configs: [conf/experiment/full.yaml]
  - name: low_lr
    configs: [conf/experiment/full.yaml]
    overrides: [--model.init_args.lr=0.001]
```

Each run is `stress-lightning fit --config <base...> --config <configs...> <overrides...>` in a subprocess, one after
the other, its output streamed to `<out folder>/<run>.log` (the out folder is `--out` without `.md`, which also
holds each run's `trainer.default_root_dir`). The comparison sets the MLflow logger's experiment, run name and
tags (`stress_lightning.compare`, `stress_lightning.compare_run`, `stress_lightning.compare_id`: one id per
invocation, so a rerun never reads an older run's metrics). A failed run is recorded as failed with its log and
the others still run. The metrics are then read back from MLflow and the table is written to `--out` with the
command, machine, git commit and date, and logged to a summary run of the same experiment (the table as its
description and as the artifact `compare/<name>.md`, beside the runs' logs); each run points at it with the tag
`stress_lightning.compare_summary_run`.

Exit status: 0 every run finished, 1 a run failed (or the store could not be read), 2 a bad comparison file or
option, 130 interrupted (the table holds the runs that ended).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from stress_lightning.commands import CommandError

PROG = "stress-lightning"
TAG_COMPARE = "stress_lightning.compare"
TAG_RUN = "stress_lightning.compare_run"
TAG_ID = "stress_lightning.compare_id"
TAG_ROLE = "stress_lightning.compare_role"
TAG_SUMMARY_RUN = "stress_lightning.compare_summary_run"
ARTIFACT_DIR = "compare"
_REQUIRED_KEYS = ("experiment", "base", "metrics", "runs")
_OPTIONAL_KEYS = ("description", "tags", "overrides", "tracking_uri")
_RUN_KEYS = ("name", "configs", "overrides")
# A run name becomes a file name (its log, its output folder) and an MLflow run name.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Metrics where a smaller value is better; the best value of every other metric is the largest.
_LOWER_IS_BETTER = ("mae", "rmse", "loss", "diff", "error")


class ComparisonError(ValueError):
    """A comparison file that cannot be run; the message names the file and the key."""


@dataclass(frozen=True)
class CompareRun:
    """One row: its name, the config files after the base ones, and extra command-line arguments."""

    name: str
    configs: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Comparison:
    """A parsed, checked comparison file (`load_comparison`)."""

    name: str
    path: Path
    experiment: str
    base: tuple[str, ...]
    metrics: tuple[str, ...]
    runs: tuple[CompareRun, ...]
    tags: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    tracking_uri: str | None = None
    description: str = ""


@dataclass
class RunResult:
    """What one run left: exit status, wall time in seconds, its log, its MLflow run and what it logged."""

    run: CompareRun
    status: str  # ok | failed | interrupted
    exit_code: int | None
    duration_s: float
    log_path: Path
    reason: str = ""
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


# -- the comparison file -------------------------------------------------------------------------------------------
def _string_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ComparisonError(f"{where}: expected a list of non-empty strings, got {value!r}")
    return tuple(value)


def _check_files(paths: Sequence[str], where: str) -> None:
    for path in paths:
        if not Path(path).is_file():
            raise ComparisonError(f"{where}: config file {path} does not exist (paths are relative to {Path.cwd()})")


def _check_overrides(overrides: Sequence[str], where: str) -> None:
    for item in overrides:
        if not item.startswith("--"):
            raise ComparisonError(f"{where}: {item!r} is not a command-line option (e.g. --model.init_args.lr=0.001)")


def load_comparison(path: str | Path) -> Comparison:
    """Read and check a comparison file: required keys, types, unique run names, every config file present.

    Relative config paths are relative to the current directory, as for `stress-lightning fit --config`.
    Raises ComparisonError naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ComparisonError(f"{path}: comparison file does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ComparisonError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ComparisonError(f"{path}: expected a mapping with keys {list(_REQUIRED_KEYS)}, got {type(data).__name__}")
    missing = [k for k in _REQUIRED_KEYS if k not in data]
    if missing:
        raise ComparisonError(f"{path}: missing key(s) {missing}; a comparison needs {list(_REQUIRED_KEYS)}")
    unknown = sorted(set(data) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
    if unknown:
        raise ComparisonError(f"{path}: unknown key(s) {unknown}; known: {[*_REQUIRED_KEYS, *_OPTIONAL_KEYS]}")
    experiment = data["experiment"]
    if not isinstance(experiment, str) or not experiment.strip():
        raise ComparisonError(f"{path}: experiment: expected an MLflow experiment name, got {experiment!r}")
    base = _string_list(data["base"], f"{path}: base")
    _check_files(base, f"{path}: base")
    metrics = _string_list(data["metrics"], f"{path}: metrics")
    if not metrics:
        raise ComparisonError(f"{path}: metrics: name at least one metric (e.g. test/stress_f1)")
    tags = _string_list(data.get("tags"), f"{path}: tags")
    overrides = _string_list(data.get("overrides"), f"{path}: overrides")
    _check_overrides(overrides, f"{path}: overrides")
    tracking_uri = data.get("tracking_uri")
    if tracking_uri is not None and (not isinstance(tracking_uri, str) or not tracking_uri.strip()):
        raise ComparisonError(f"{path}: tracking_uri: expected a URI, got {tracking_uri!r}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise ComparisonError(f"{path}: description: expected text, got {description!r}")
    entries = data["runs"]
    if not isinstance(entries, list) or not entries:
        raise ComparisonError(f"{path}: runs: expected a non-empty list of {{name, configs, overrides}}")
    runs: list[CompareRun] = []
    for index, entry in enumerate(entries):
        where = f"{path}: runs[{index}]"
        if not isinstance(entry, dict):
            raise ComparisonError(f"{where}: expected a mapping with keys {list(_RUN_KEYS)}, got {entry!r}")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ComparisonError(f"{where}: name: expected letters, digits, '_', '.', '-' (a file name), got {name!r}")
        where = f"{where} ({name})"
        unknown = sorted(set(entry) - set(_RUN_KEYS))
        if unknown:
            raise ComparisonError(f"{where}: unknown key(s) {unknown}; known: {list(_RUN_KEYS)}")
        if any(r.name == name for r in runs):
            raise ComparisonError(f"{where}: name {name!r} is used twice")
        configs = _string_list(entry.get("configs"), f"{where}: configs")
        _check_files(configs, f"{where}: configs")
        run_overrides = _string_list(entry.get("overrides"), f"{where}: overrides")
        _check_overrides(run_overrides, f"{where}: overrides")
        runs.append(CompareRun(name, configs, run_overrides))
    return Comparison(
        name=path.stem,
        path=path,
        experiment=experiment.strip(),
        base=base,
        metrics=metrics,
        runs=tuple(runs),
        tags=tags,
        overrides=overrides,
        tracking_uri=tracking_uri,
        description=description.strip(),
    )


# -- one run ------------------------------------------------------------------------------------------------------
def fit_args(comparison: Comparison, run: CompareRun, out_dir: Path, compare_id: str) -> list[str]:
    """The arguments of `stress-lightning` for one run: `fit`, the configs in order, the output folder (before the
    overrides, which may move it), the overrides, then the logger keys the comparison owns (last, so they win)."""
    args = ["fit"]
    for config in (*comparison.base, *run.configs):
        args += ["--config", config]
    args.append(f"--trainer.default_root_dir={out_dir / run.name}")
    args += [*comparison.overrides, *run.overrides]
    tags = {TAG_COMPARE: comparison.name, TAG_RUN: run.name, TAG_ID: compare_id}
    args += [
        f"--trainer.logger.init_args.experiment_name={comparison.experiment}",
        f"--trainer.logger.init_args.run_name={run.name}",
        f"--trainer.logger.init_args.tags={json.dumps(tags)}",
    ]
    return args


def shell_command(args: Sequence[str]) -> str:
    """`stress-lightning <args>` as a line a shell runs as it is."""
    return shlex.join([PROG, *args])


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def run_fit(args: Sequence[str], log_path: Path, env: dict[str, str]) -> tuple[int, float, bool]:
    """Run `stress-lightning <args>` with this interpreter, stdout and stderr into `log_path`.

    Returns (exit status, wall seconds, interrupted). On Ctrl+C the child (in the same process group) got the
    signal too: it stops after its batch with a checkpoint and ends its run KILLED; this waits for it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "stress_lightning.cli", *args]
    start = time.monotonic()
    interrupted = False
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"$ {shell_command(args)}\n")
        log.flush()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            code = process.wait()
        except KeyboardInterrupt:
            interrupted = True
            try:
                code = process.wait(timeout=120)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                process.kill()
                code = process.wait()
    return code, time.monotonic() - start, interrupted


# -- reading back -------------------------------------------------------------------------------------------------
def _find_runs(client: Any, experiment_id: str, compare_id: str) -> dict[str, Any]:
    """The MLflow runs of this invocation by comparison run name (the latest one where a name repeats)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_ID}` = '{compare_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=1000,
    )
    return {r.data.tags[TAG_RUN]: r for r in runs if TAG_RUN in r.data.tags}


def read_back(client: Any, experiment_id: str | None, compare_id: str, results: Sequence[RunResult]) -> None:
    """Fill each result's run id, metrics and tags from the store; a run that exited 0 without an MLflow run
    tagged with this invocation's id is a failure (a config that sends its logs elsewhere)."""
    found = _find_runs(client, experiment_id, compare_id) if experiment_id is not None else {}
    for result in results:
        mlflow_run = found.get(result.run.name)
        if mlflow_run is None:
            if result.status == "ok":
                result.status = "failed"
                result.reason = (
                    "exited 0 but no MLflow run carries its tags: does a config set trainer.logger.init_args."
                    "tracking_uri? Set `tracking_uri` in the comparison instead"
                )
            continue
        result.run_id = mlflow_run.info.run_id
        result.metrics = dict(mlflow_run.data.metrics)
        result.tags = dict(mlflow_run.data.tags)


# -- the table ----------------------------------------------------------------------------------------------------
def machine_description() -> str:
    """Host, OS, CPU cores, memory and GPUs (from nvidia-smi; no torch import), in one line."""
    parts = [f"{platform.system()} {platform.machine()}", f"{os.cpu_count()} CPU cores"]
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        parts.append(f"{memory / 2**30:.0f} GiB")
    except (ValueError, OSError, AttributeError):
        pass
    gpus: list[str] = []
    if shutil.which("nvidia-smi"):
        try:
            listing = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            gpus = [line.strip() for line in listing.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.TimeoutExpired):
            gpus = []
    parts.append(", ".join(gpus) if gpus else "no GPU")
    return f"{platform.node()}: {', '.join(parts)}"


def _lower_is_better(metric: str) -> bool:
    last = metric.rsplit("/", 1)[-1]
    # A fairness gap (`test/fairness/<attribute>/gap/<metric>`) is better small whatever the metric.
    return "/gap/" in metric or any(word in last for word in _LOWER_IS_BETTER)


def _best(results: Sequence[RunResult], metric: str) -> float | None:
    values = [r.metrics[metric] for r in results if r.status == "ok" and metric in r.metrics]
    if len(values) < 2:
        return None
    return min(values) if _lower_is_better(metric) else max(values)


def _status_cell(result: RunResult) -> str:
    if result.status == "ok":
        return "ok"
    code = f"exit {result.exit_code}" if result.exit_code is not None else "no exit status"
    reason = f"; {result.reason}" if result.reason else ""
    return f"{result.status} ({code}{reason}); log `{result.log_path}`"


def markdown_table(comparison: Comparison, results: Sequence[RunResult]) -> str:
    """One row per run: name, status, MLflow run id, each metric (3 decimals; the best of the finished runs in
    bold), each tag column, wall time. A failed run shows its log instead of metrics."""
    header = ["run", "status", "run id", *comparison.metrics, *comparison.tags, "duration"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    best = {m: _best(results, m) for m in comparison.metrics}
    for result in results:
        ok = result.status == "ok"
        cells = [f"`{result.run.name}`", _status_cell(result), f"`{result.run_id}`" if result.run_id else "-"]
        for metric in comparison.metrics:
            value = result.metrics.get(metric) if ok else None
            text = "-" if value is None else f"{value:.3f}"
            cells.append(f"**{text}**" if value is not None and value == best[metric] else text)
        cells += [result.tags.get(tag, "-") if ok else "-" for tag in comparison.tags]
        cells.append(_format_duration(result.duration_s))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(
    comparison: Comparison,
    results: Sequence[RunResult],
    *,
    command: str,
    tracking: str,
    started: dt.datetime,
    ended: dt.datetime,
    git: dict[str, str],
    machine: str,
    summary_run_id: str | None,
) -> str:
    """The whole Markdown file: provenance lines, the table, and what each run was given."""
    failed = [r for r in results if r.status != "ok"]
    lines = [f"# Comparison `{comparison.name}`", ""]
    if comparison.description:
        lines += [comparison.description, ""]
    lines += [
        f"- command: `{command}`",
        f"- MLflow: experiment `{comparison.experiment}` in `{tracking}`"
        + (f", summary run `{summary_run_id}`" if summary_run_id else ""),
        f"- machine: {machine}",
        f"- git commit: `{git.get('git.commit', 'unknown')}` (uncommitted changes: {git.get('git.dirty', 'unknown')})",
        f"- date: {started:%Y-%m-%d %H:%M} to {ended:%Y-%m-%d %H:%M} UTC",
        f"- base configs: {', '.join(f'`{c}`' for c in comparison.base)}"
        + (f"; every run also gets {' '.join(f'`{o}`' for o in comparison.overrides)}" if comparison.overrides else ""),
        f"- runs: {len(results) - len(failed)} finished, {len(failed)} failed or interrupted",
        "",
        markdown_table(comparison, results),
        "",
        "Metrics are the last value each run logged (test metrics: the best checkpoint on the held-out split); bold: "
        "the best finished run; duration: wall time of the whole `fit` (data, training, test, export).",
        "",
        "| run | configs after the base | overrides |",
        "| --- | --- | --- |",
    ]
    for result in results:
        configs = ", ".join(f"`{c}`" for c in result.run.configs) or "-"
        overrides = " ".join(f"`{o}`" for o in result.run.overrides) or "-"
        lines.append(f"| `{result.run.name}` | {configs} | {overrides} |")
    return "\n".join(lines) + "\n"


def log_summary(client: Any, experiment_id: str, comparison: Comparison, compare_id: str, git: dict[str, str]) -> str:
    """Create the comparison's summary run (its artifacts follow in `finish_summary`); returns its id."""
    tags = {
        TAG_COMPARE: comparison.name,
        TAG_ID: compare_id,
        TAG_ROLE: "summary",
        **git,
    }
    run = client.create_run(experiment_id, run_name=f"{comparison.name} (comparison)", tags=tags)
    return run.info.run_id


def finish_summary(
    client: Any, run_id: str, report_path: Path, report: str, results: Sequence[RunResult], failed: bool
) -> None:
    """The table as the summary run's description (the UI renders it) and artifact, the runs' logs beside it,
    and a pointer to the summary on every run."""
    client.set_tag(run_id, "mlflow.note.content", report)
    client.log_artifact(run_id, str(report_path), ARTIFACT_DIR)
    for result in results:
        if result.log_path.is_file():
            client.log_artifact(run_id, str(result.log_path), f"{ARTIFACT_DIR}/logs")
        if result.run_id:
            client.set_tag(result.run_id, TAG_SUMMARY_RUN, run_id)
    client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


# -- the command --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} compare",
        description="Train every run of a comparison file (stress-lightning fit, one after the other) into one MLflow "
        "experiment, then write their metrics as a Markdown table with the command, machine, git commit and date.",
    )
    parser.add_argument(
        "--config", required=True, metavar="FILE", help="the comparison, e.g. conf/compare/ablations.yaml"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the fit commands, run nothing")
    parser.add_argument(
        "--only", nargs="+", action="extend", default=None, metavar="NAME", help="run only these runs (in file order)"
    )
    parser.add_argument(
        "--out", default=None, metavar="FILE", help="the Markdown table (default outputs/compare/<name>.md)"
    )
    parser.add_argument(
        "--base",
        nargs="+",
        default=None,
        metavar="FILE",
        help="replace the comparison's base configs, e.g. conf/synthetic.yaml conf/size/gpu.yaml",
    )
    parser.add_argument("--experiment", default=None, metavar="NAME", help="replace the comparison's MLflow experiment")
    return parser


def _select(parser: argparse.ArgumentParser, comparison: Comparison, only: Sequence[str] | None) -> list[CompareRun]:
    if not only:
        return list(comparison.runs)
    names = [r.name for r in comparison.runs]
    unknown = [n for n in only if n not in names]
    if unknown:
        parser.error(f"--only: {comparison.path} has no run(s) {unknown}; its runs: {names}")
    return [r for r in comparison.runs if r.name in only]


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    try:
        comparison = load_comparison(args.config)
        if args.base is not None:
            _check_files(args.base, "--base")
            comparison = replace(comparison, base=tuple(args.base))
        if args.experiment is not None:
            if not args.experiment.strip():
                raise ComparisonError("--experiment: give an MLflow experiment name")
            comparison = replace(comparison, experiment=args.experiment.strip())
    except ComparisonError as err:
        raise CommandError(str(err), code=2) from None
    runs = _select(parser, comparison, args.only)
    out = Path(args.out) if args.out else Path("outputs") / "compare" / f"{comparison.name}.md"
    if out.suffix != ".md":
        parser.error(f"--out {out}: expected a file name ending in .md (the logs go to the folder named without .md)")
    out_dir = out.with_suffix("")
    compare_id = f"{comparison.name}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    if args.dry_run:
        for run in runs:
            print(f"# {run.name}: log {out_dir / (run.name + '.log')}")
            print(shell_command(fit_args(comparison, run, out_dir, compare_id)))
        return 0
    return _compare(comparison, runs, out, out_dir, compare_id, command=shell_command(["compare", *argv]))


def _compare(
    comparison: Comparison, runs: Sequence[CompareRun], out: Path, out_dir: Path, compare_id: str, command: str
) -> int:
    from mlflow import MlflowClient

    from stress_lightning.tracking.params import provenance_tags
    from stress_lightning.tracking.store import (
        TrackingUnavailableError,
        check_tracking_reachable,
        display_uri,
        ensure_experiment,
        resolve_tracking_uri,
    )

    try:
        uri = resolve_tracking_uri(comparison.tracking_uri)
        check_tracking_reachable(uri)
    except (ValueError, TrackingUnavailableError) as err:
        raise CommandError(str(err)) from err
    # Every run logs where this process reads back: the store goes to the children in the environment (not on the
    # command line, where a database password would land in logs and in the table).
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    started = dt.datetime.now(dt.UTC)
    print(
        f"comparison {comparison.name}: {len(runs)} run(s) into experiment {comparison.experiment!r} "
        f"at {display_uri(uri)}"
    )
    results: list[RunResult] = []
    interrupted = False
    for index, run in enumerate(runs, start=1):
        log_path = out_dir / f"{run.name}.log"
        print(f"[{index}/{len(runs)}] {run.name}: running (log {log_path})", flush=True)
        code, seconds, interrupted = run_fit(fit_args(comparison, run, out_dir, compare_id), log_path, env)
        status = "interrupted" if interrupted else ("ok" if code == 0 else "failed")
        results.append(RunResult(run, status, code, seconds, log_path))
        word = "done" if status == "ok" else f"{status.upper()} (exit {code}); see {log_path}"
        print(f"[{index}/{len(runs)}] {run.name}: {word} in {_format_duration(seconds)}", flush=True)
        if interrupted:
            break
    client = MlflowClient(uri)
    git = provenance_tags()
    try:
        experiment_id = ensure_experiment(comparison.experiment, uri)
        read_back(client, experiment_id, compare_id, results)
        summary_run_id = log_summary(client, experiment_id, comparison, compare_id, git)
    except Exception as err:  # noqa: BLE001 - the table is still written; the store's error is reported
        store_error: Exception | None = err
        experiment_id = summary_run_id = None
    else:
        store_error = None
    report = markdown_report(
        comparison,
        results,
        command=command,
        tracking=display_uri(uri),
        started=started,
        ended=dt.datetime.now(dt.UTC),
        git=git,
        machine=machine_description(),
        summary_run_id=summary_run_id,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    failed = [r for r in results if r.status != "ok"]
    if summary_run_id is not None:
        finish_summary(client, summary_run_id, out, report, results, failed=bool(failed))
    print(markdown_table(comparison, results))
    print(f"table: {out}" + (f"; MLflow summary run {summary_run_id}" if summary_run_id else ""))
    if store_error is not None:
        raise CommandError(f"runs ended but {display_uri(uri)} could not be read back: {store_error}; table: {out}")
    if interrupted:
        return 130
    return 1 if failed else 0

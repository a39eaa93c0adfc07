"""What a run could not send to its tracking store, kept on local disk until it can be sent.

When the tracking server goes away in the middle of a fit, `StressMLFlowLogger` keeps training and appends what it
could not send (metric batches, parameters, the checkpoints to log, the run's final status) to a JSON-lines file,
one per run: `mlruns/pending/<run_id>.jsonl` by default. Every line is written and flushed as it comes, so a run
killed while the server is away loses nothing it had logged. When the server answers again the logger sends the
file's content in order and deletes it; if the run ends first, the file stays and
`stress-lightning sync <file>` sends it later.

Format: the first line is `{"kind": "run", "tracking_uri": ..., "run_id": ...}`; then
`{"kind": "metrics", "metrics": [[key, value, timestamp_ms, step], ...]}`, `{"kind": "params", "params": {k: v}}`,
`{"kind": "artifact", "path": <local file>, "artifact_path": <folder in the run>, "name": <file name there>}` and
`{"kind": "end", "status": "FINISHED" | "FAILED" | "KILLED"}`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

DEFAULT_SPOOL_DIR = Path("mlruns") / "pending"


def log_artifact_as(
    client: MlflowClient, run_id: str, local: str | Path, artifact_path: str | None, name: str | None = None
) -> None:
    """Log a local file into `artifact_path` under `name` (MLflow keeps the local file name, so a different name
    goes through a hard link in a temporary folder beside the file, or a copy where linking is not possible)."""
    local = Path(local)
    if not name or name == local.name:
        client.log_artifact(run_id, str(local), artifact_path)
        return
    try:
        folder = tempfile.TemporaryDirectory(prefix=".mlflow-upload-", dir=local.parent)
    except OSError:  # a read-only checkpoint folder: copy through the system's temporary folder
        folder = tempfile.TemporaryDirectory(prefix="mlflow-upload-")
    with folder as tmp:
        target = Path(tmp) / name
        try:
            os.link(local, target)
        except OSError:
            shutil.copy2(local, target)
        client.log_artifact(run_id, str(target), artifact_path)


class SpoolError(Exception):
    """A pending file cannot be read or sent; the message names the file."""


def _json_value(value: float) -> float | str:
    # JSON has no NaN/inf; MLflow accepts them as metric values, so keep them as strings and restore on read.
    return value if math.isfinite(value) else repr(value)


class PendingRun:
    """The not-yet-sent part of one run, in memory and in its file (created on the first `add_*`)."""

    def __init__(self, path: str | Path, tracking_uri: str, run_id: str) -> None:
        self.path = Path(path)
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.entries: list[dict[str, Any]] = []

    # -- writing ---------------------------------------------------------------------------------------------------
    def _append(self, entry: dict[str, Any]) -> None:
        new_file = not self.path.exists()
        if new_file:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            if new_file:
                header = {"kind": "run", "tracking_uri": self.tracking_uri, "run_id": self.run_id}
                handle.write(json.dumps(header) + "\n")
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.entries.append(entry)

    def add_metrics(self, metrics: Iterable[Metric]) -> None:
        rows = [[m.key, _json_value(float(m.value)), int(m.timestamp), int(m.step)] for m in metrics]
        if rows:
            self._append({"kind": "metrics", "metrics": rows})

    def add_params(self, params: Mapping[str, str]) -> None:
        if params:
            self._append({"kind": "params", "params": {str(k): str(v) for k, v in params.items()}})

    def add_artifact(self, local_path: str | Path, artifact_path: str | None, name: str | None = None) -> None:
        """A local file to log into `artifact_path`, as `name` (default: its own file name)."""
        local = str(Path(local_path).resolve())
        self._append({"kind": "artifact", "path": local, "artifact_path": artifact_path, "name": name})

    def add_end(self, status: str) -> None:
        self._append({"kind": "end", "status": status})

    # -- reading and sending ---------------------------------------------------------------------------------------
    @property
    def metric_count(self) -> int:
        return sum(len(e["metrics"]) for e in self.entries if e["kind"] == "metrics")

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def load(cls, path: str | Path) -> PendingRun:
        """Read a pending file written by `PendingRun`; a malformed file is a SpoolError naming it and the line."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise SpoolError(f"{path}: cannot read the pending-tracking file: {err}") from err
        if not lines:
            raise SpoolError(f"{path}: empty; not a pending-tracking file")
        entries: list[dict[str, Any]] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                # A run killed mid-write leaves a partial last line: everything before it is still good.
                if number == len(lines):
                    break
                raise SpoolError(f"{path}:{number}: not JSON ({err})") from err
            if not isinstance(entry, dict) or "kind" not in entry:
                raise SpoolError(f"{path}:{number}: expected an object with a 'kind'")
            entries.append(entry)
        header = entries[0] if entries else {}
        if header.get("kind") != "run" or not header.get("run_id") or not header.get("tracking_uri"):
            raise SpoolError(f"{path}: the first line must name the run: {{'kind': 'run', 'tracking_uri', 'run_id'}}")
        pending = cls(path, header["tracking_uri"], header["run_id"])
        known = {"metrics", "params", "artifact", "end"}
        for number, entry in enumerate(entries[1:], start=2):
            if entry["kind"] not in known:
                raise SpoolError(f"{path}:{number}: unknown kind {entry['kind']!r} (known: {sorted(known)})")
        pending.entries = entries[1:]
        return pending

    def send(self, client: MlflowClient) -> None:
        """Send every entry in order, then delete the file. Raises what the client raises; the entries sent before
        the failure are dropped from memory and from the file, so a retry does not send them twice."""
        sent = 0
        try:
            for entry in self.entries:
                self._send_one(client, entry)
                sent += 1
        finally:
            if sent:
                self.entries = self.entries[sent:]
                self._rewrite()

    def _send_one(self, client: MlflowClient, entry: dict[str, Any]) -> None:
        kind = entry["kind"]
        if kind == "metrics":
            metrics = [Metric(k, float(v), int(t), int(s)) for k, v, t, s in entry["metrics"]]
            for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                client.log_batch(self.run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH])
        elif kind == "params":
            params = [Param(k, v) for k, v in entry["params"].items()]
            for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
                client.log_batch(self.run_id, params=params[start : start + MAX_PARAMS_TAGS_PER_BATCH])
        elif kind == "artifact":
            local = Path(entry["path"])
            if not local.exists():
                raise SpoolError(f"{self.path}: artifact {local} to log for run {self.run_id} no longer exists")
            log_artifact_as(client, self.run_id, local, entry.get("artifact_path"), entry.get("name"))
        elif kind == "end":
            client.set_terminated(self.run_id, entry["status"])

    def _rewrite(self) -> None:
        # Keep the file equal to what is still unsent (deleted once empty).
        if not self.entries:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_suffix(".tmp")
        header = {"kind": "run", "tracking_uri": self.tracking_uri, "run_id": self.run_id}
        tmp.write_text("".join(json.dumps(e) + "\n" for e in [header, *self.entries]), encoding="utf-8")
        tmp.replace(self.path)

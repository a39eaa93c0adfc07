"""Where runs live: the tracking URI, the experiment and its artifact location, and the Lightning logger.

The embedded default is a SQLite database `mlruns/mlflow.db` with artifacts under `mlruns/artifacts/<exp_id>/`
(MLflow 3's plain `./mlruns` file store is in maintenance mode). `MLFLOW_TRACKING_URI` or an explicit URI
overrides it: another database URI works the same way, and an `http(s)://` tracking server decides the
artifact location itself (its `--artifacts-destination`).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from argparse import Namespace
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse, urlunparse

import mlflow
import yaml
from filelock import FileLock
from lightning.fabric.utilities.logger import _add_prefix, _convert_params, _flatten_dict
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers.utilities import _scan_checkpoints
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.utils.validation import MAX_METRICS_PER_BATCH

from stress_lightning.tracking.params import log_params_keeping_first, truncate_param_value
from stress_lightning.tracking.spool import DEFAULT_SPOOL_DIR, PendingRun, log_artifact_as

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_EXPERIMENT = "stress-lightning"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"

# SQLAlchemy dialects MLflow's SqlAlchemyStore accepts (`postgresql+psycopg2://` etc. share the prefix).
_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_SERVER_SCHEMES = ("http", "https", "databricks")


CHECKPOINT_ARTIFACT_DIR = "checkpoints"


class TrackingUnavailableError(RuntimeError):
    """The tracking store does not answer; raised before any training work."""


class TrackingSyncError(RuntimeError):
    """A run ended while its tracking store was away; what it could not send is in a local pending file."""


def _scheme(uri: str) -> str:
    return urlparse(uri).scheme.split("+", 1)[0].lower()


def display_uri(uri: str) -> str:
    """The URI without a password (`postgresql://user:***@host/db`), for messages and logs."""
    parsed = urlparse(uri)
    if parsed.password is None:
        return uri
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
    return urlunparse(parsed._replace(netloc=netloc))


def tracking_unreachable_reason(uri: str, timeout_s: float = 5.0) -> str | None:
    """Why the tracking store at `uri` cannot be reached, or None when it answers (or is a local file).

    A server counts as reachable when it answers HTTP at all (an auth error is still an answer): the probe is
    `GET <uri>/health` with `timeout_s`, without MLflow's retries, which take minutes on a dead server. A database
    URI opens one connection.
    """
    scheme = _scheme(uri)
    if scheme in ("http", "https"):
        import requests

        verify: bool | str = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() not in ("true", "1")
        verify = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or verify
        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout_s, verify=verify)
        except requests.RequestException as err:
            # urllib3 wraps the socket error in three layers of text; the errno line is what a person needs.
            errno_text = re.search(r"\[Errno -?\d+\] [^\"')]+", str(err))
            return f"{type(err).__name__}: {errno_text.group(0) if errno_text else err}"
        return None
    if scheme in _DATABASE_SCHEMES and scheme != "sqlite":
        import sqlalchemy

        connect_args = {"connect_timeout": max(1, round(timeout_s))} if scheme in ("postgresql", "mysql") else {}
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args)
        try:
            with engine.connect():
                return None
        except Exception as err:  # noqa: BLE001 - any driver error means "cannot connect"; it is reported
            return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        finally:
            engine.dispose()
    return None


def check_tracking_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Raise TrackingUnavailableError naming `uri` (password hidden) when its store does not answer."""
    reason = tracking_unreachable_reason(uri, timeout_s)
    if reason is not None:
        raise TrackingUnavailableError(
            f"MLflow tracking store {display_uri(uri)} is not reachable ({reason}); nothing was run. Start it "
            "(README: Running MLflow as a server) or point MLFLOW_TRACKING_URI / trainer.logger.init_args."
            "tracking_uri at a store that answers."
        )


def checkpoint_artifact_name(path: str | Path) -> str:
    """A checkpoint's file name as every artifact store accepts it: `epoch=3-step=40.ckpt` -> `epoch-3-step-40.ckpt`
    (`=` and other characters outside [A-Za-z0-9._-] break some stores' keys and URLs)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip("-.") or "checkpoint"
    return f"{stem}.ckpt"


def is_database_uri(uri: str) -> bool:
    """True for a SQLAlchemy database URI (the store is opened in this process)."""
    return _scheme(uri) in _DATABASE_SCHEMES


def _sqlite_path(uri: str) -> Path:
    # sqlite:///relative/x.db -> "relative/x.db"; sqlite:////abs/x.db -> "/abs/x.db".
    raw = unquote(uri[len("sqlite:///") :])
    if not raw or raw == ":memory:":
        raise ValueError(f"tracking URI {uri!r}: an in-memory SQLite store keeps nothing; give a file path")
    return Path(raw)


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Return the tracking URI to use: `uri`, else $MLFLOW_TRACKING_URI, else `sqlite:///mlruns/mlflow.db`.

    A relative SQLite path is made absolute against the current working directory (so that later `chdir`s
    do not move the store) and its folder is created. A plain path or `file:` URI is refused: MLflow 3's file
    store is in maintenance mode.
    """
    candidate = uri or os.environ.get(TRACKING_URI_ENV) or DEFAULT_TRACKING_URI
    scheme = _scheme(candidate)
    if scheme == "sqlite":
        if not candidate.startswith("sqlite:///"):
            raise ValueError(f"tracking URI {candidate!r}: a SQLite URI looks like sqlite:///path/to/mlflow.db")
        db_path = _sqlite_path(candidate)
        if not db_path.is_absolute():
            db_path = Path.cwd() / db_path
        db_path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{db_path.as_posix()}"
    if scheme in _DATABASE_SCHEMES or scheme in _SERVER_SCHEMES:
        return candidate
    raise ValueError(
        f"tracking URI {candidate!r} is not supported: use a database URI (sqlite:///mlruns/mlflow.db, "
        "postgresql://...) or a tracking server (http://host:port); MLflow 3's file store is in maintenance mode"
    )


def default_artifact_root(tracking_uri: str) -> str | None:
    """Artifact root for a store: `<db folder>/artifacts` for SQLite, None where the store decides itself."""
    if _scheme(tracking_uri) != "sqlite":
        return None
    db_path = _sqlite_path(tracking_uri)
    if not db_path.is_absolute():
        db_path = Path.cwd() / db_path
    return (db_path.parent / "artifacts").resolve().as_uri()


def _as_artifact_uri(root: str) -> str:
    # A bare path becomes an absolute file URI; URIs (s3://, file://, mlflow-artifacts:/) pass through.
    return root if urlparse(root).scheme and len(urlparse(root).scheme) > 1 else Path(root).resolve().as_uri()


@contextmanager
def use_tracking_uri(uri: str | None) -> Iterator[None]:
    """Temporarily point MLflow's global tracking URI at `uri` (no-op for None).

    Some MLflow code paths read the global URI whatever client is in hand: logging a model, and the local
    registry store resolving a `models:/<model_id>` source. Setting it around those calls keeps a client on
    another store consistent.
    """
    if uri is None:
        yield
        return
    from mlflow.tracking._tracking_service import utils as tracking_utils

    # Restore exactly what was there: the URI set in this process (None when nobody set one) and the environment
    # variable. Restoring `mlflow.get_tracking_uri()` instead would pin MLflow's default (sqlite:///mlflow.db)
    # globally and into $MLFLOW_TRACKING_URI, and every later store lookup of the process would go there. MLflow
    # has no public getter that tells "unset" from its default, hence the module attribute.
    previous = tracking_utils._tracking_uri
    previous_env = os.environ.get(TRACKING_URI_ENV)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_env is None:
            os.environ.pop(TRACKING_URI_ENV, None)
        else:
            os.environ[TRACKING_URI_ENV] = previous_env


def ensure_experiment(
    name: str,
    tracking_uri: str | None = None,
    artifact_root: str | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """Return the id of experiment `name`, creating it when missing.

    For a database store a new experiment gets `artifact_location = <artifact_root>/<exp_id>` (default root:
    `<db folder>/artifacts`), the layout `mlflow server --default-artifact-root` would give. A tracking server
    chooses the location itself, so `artifact_root` must be None there.
    """
    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(uri)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            raise ValueError(
                f"experiment {name!r} ({uri}) is deleted; restore it (`mlflow experiments restore "
                f"--experiment-id {existing.experiment_id}`) or choose another experiment_name"
            )
        return existing.experiment_id
    try:
        if is_database_uri(uri):
            # The experiment id is only known once the row exists, so let the store derive the location
            # from its default artifact root, exactly as `mlflow server --default-artifact-root` does.
            store = _database_store(uri, artifact_root)
            return store.create_experiment(name, tags=[_experiment_tag(k, v) for k, v in (tags or {}).items()])
        if artifact_root is not None:
            raise ValueError(
                f"artifact_root={artifact_root!r} given for tracking server {uri!r}: a server decides the "
                "artifact location (its --artifacts-destination); leave artifact_root unset"
            )
        return client.create_experiment(name, tags=tags)
    except MlflowException as err:
        # Another process created it between our lookup and our insert: use theirs.
        if err.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        created = client.get_experiment_by_name(name)
        if created is None:
            raise
        return created.experiment_id


def _database_store(uri: str, artifact_root: str | None) -> Any:
    # MLflow's SqlAlchemyStore with our artifact root (what `mlflow server --default-artifact-root` builds).
    # Opening it first also creates the schema, so even the built-in Default experiment lands under the root.
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    root = _as_artifact_uri(artifact_root) if artifact_root else default_artifact_root(uri)
    if root is None:
        raise ValueError(f"tracking URI {uri!r}: give artifact_root for a non-SQLite database store")
    return SqlAlchemyStore(uri, root)


def _store_creation_lock(uri: str) -> Any:
    """A lock beside a SQLite store's file while it may be created: every DDP rank builds a logger, and two processes
    creating the schema of a new database at once fail in its migrations (torchrun and SLURM start ranks together)."""
    if _scheme(uri) != "sqlite":
        return nullcontext()
    path = _sqlite_path(uri)
    return FileLock(path.with_name(path.name + ".lock"))


def _experiment_tag(key: str, value: str) -> Any:
    from mlflow.entities import ExperimentTag

    return ExperimentTag(key, str(value))


class StressMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger with this project's store defaults; usable from LightningCLI YAML.

    ```yaml
    trainer:
      logger:
        class_path: stress_lightning.tracking.StressMLFlowLogger
        init_args: {experiment_name: synthetic, run_name: baseline, tags: {corpus: synthetic}}
    ```
    The tracking URI resolves as in `resolve_tracking_uri` and the experiment is created by
    `ensure_experiment` (artifacts under `mlruns/artifacts/<exp_id>` for the embedded store) on first use,
    on global rank 0 only. Beyond Lightning's logger:

    - the store is probed before the run is created (`check_reachable`): a dead server is one
      TrackingUnavailableError naming it, not minutes of retries;
    - when the store goes away mid-run, training goes on: metrics and parameters are kept in
      `<spool_dir>/<run_id>.jsonl` (`tracking.spool`) and sent, in order, once it answers again; a run that ends
      while it is still away raises TrackingSyncError naming that file (`stress-lightning sync <file>` sends it);
    - checkpoints (`log_model=True`) are logged under `checkpoints/` with names every store accepts
      (`checkpoint_artifact_name`), each with a `<name>.yaml` (score, monitor, aliases best/latest);
    - `resume(run_id)` continues an existing run (the CLI does it for `fit --ckpt_path`);
    - the run is created (or a resumed one reopened) on first real need: `run_id`/`version` (ModelCheckpoint's
      folder, the saved config), logging, checkpoints. `experiment` alone gives the client with the experiment
      ensured, so a fit that fails in `prepare_data` or `setup` (a corpus that yields nothing) leaves no run;
    - `end_status`: when set (e.g. "KILLED"), `finalize` ends the run with this MLflow status whatever status
      Lightning passes.
    """

    def __init__(
        self,
        experiment_name: str = DEFAULT_EXPERIMENT,
        tracking_uri: str | None = None,
        run_name: str | None = None,
        tags: dict[str, Any] | None = None,
        artifact_root: str | None = None,
        run_id: str | None = None,
        log_model: bool | str = False,
        prefix: str = "",
        synchronous: bool | None = None,
        spool_dir: str | None = None,
        probe_timeout_s: float = 5.0,
    ) -> None:
        uri = resolve_tracking_uri(tracking_uri)
        # Lightning's logger opens the store in every process (its MlflowClient does), though only rank 0 logs.
        with _store_creation_lock(uri):
            if is_database_uri(uri) and _scheme(uri) == "sqlite":
                # Create a new embedded store with our artifact root before MLflow creates it with ./mlruns.
                _database_store(uri, artifact_root)
            super().__init__(
                experiment_name=experiment_name,
                run_name=run_name,
                tracking_uri=uri,
                tags=tags,
                log_model=log_model,
                prefix=prefix,
                run_id=run_id,
                synchronous=synchronous,
            )
        self._artifact_root = artifact_root
        # Absolute now, so a later chdir does not move the pending files.
        self._spool_dir = Path(spool_dir or DEFAULT_SPOOL_DIR).resolve()
        self._probe_timeout_s = probe_timeout_s
        self._pending: PendingRun | None = None
        self._checked = False
        self._resumed = False
        self._resume_checkpoint: str | None = None
        self._ended_offline = False
        # When set (e.g. "KILLED"), finalize ends the run with this MLflow status whatever status Lightning passes.
        self.end_status: str | None = None

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    @property
    def pending_path(self) -> Path | None:
        """The local file holding what has not reached the store yet, or None when everything was sent."""
        return None if self._pending is None else self._pending.path

    def check_reachable(self) -> None:
        """Raise TrackingUnavailableError when the store does not answer (once per logger)."""
        if not self._checked:
            check_tracking_reachable(self._tracking_uri, self._probe_timeout_s)
            self._checked = True

    def resume(self, run_id: str, checkpoint: str | None = None) -> None:
        """Log into the existing run `run_id` instead of creating one (before the run is first used); the run gets
        tags `resume.count` and `resume.checkpoint`."""
        if self._initialized and self._run_id != run_id:
            raise RuntimeError(f"logger already writes to run {self._run_id}; cannot switch to run {run_id}")
        self._run_id = run_id
        self._resumed = True
        self._resume_checkpoint = checkpoint

    @property
    def resumed(self) -> bool:
        return self._resumed

    @property
    def run_created(self) -> bool:
        """True once this logger created its run or reopened the one it resumes (then `finalize` ends it)."""
        return self._initialized

    @property
    @rank_zero_experiment
    def experiment(self) -> MlflowClient:
        """The MlflowClient, with the store probed and the experiment ensured; the run is not created here.

        Lightning touches `experiment` before `prepare_data`/`setup` have run; a run created then would be left
        FAILED by a config that never started. `run_id` (and everything that logs) creates it.
        """
        if not self._initialized:
            self.check_reachable()
            if self._experiment_id is None:
                if self._run_id is None:
                    self._experiment_id = ensure_experiment(
                        self._experiment_name, self._tracking_uri, self._artifact_root
                    )
                else:
                    # An existing run (resume, or run_id given): read its experiment, leave the run as it is.
                    self._experiment_id = self._mlflow_client.get_run(self._run_id).info.experiment_id
        return self._mlflow_client

    @rank_zero_only
    def _open_run(self) -> None:
        """Create the run, or reopen the one given (run_id/resume), once; global rank 0 only."""
        if self._initialized:
            return
        _ = self.experiment
        client = super().experiment  # Lightning's: creates the run (tags, run name) or reads the given one
        if self._resumed:
            # A resumed run is running again until this process finalizes it.
            client.update_run(self._run_id, status="RUNNING")
            count = int(client.get_run(self._run_id).data.tags.get("resume.count", "0")) + 1
            client.set_tag(self._run_id, "resume.count", str(count))
            if self._resume_checkpoint:
                client.set_tag(self._run_id, "resume.checkpoint", self._resume_checkpoint)

    @property
    def run_id(self) -> str | None:
        """The run's id, creating the run on first access (None on ranks other than global rank 0)."""
        self._open_run()
        return self._run_id

    # -- logging that survives a lost store ------------------------------------------------------------------------
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics = _add_prefix(dict(metrics), self._prefix, self.LOGGER_JOIN_CHAR)
        timestamp_ms = int(time.time() * 1000)
        batch = []
        for key, value in metrics.items():
            if isinstance(value, str):
                rank_zero_warn(f"StressMLFlowLogger: metric {key}={value!r} is a string; not logged")
                continue
            # MLflow accepts letters, digits and `_ / . -` and space in metric names (as Lightning's logger does).
            clean = re.sub(r"[^a-zA-Z0-9_/. -]+", "", key)
            if clean != key:
                rank_zero_warn(f"StressMLFlowLogger: metric name {key!r} logged as {clean!r}")
            batch.append(Metric(key=clean, value=float(value), timestamp=timestamp_ms, step=step or 0))
        if batch:
            self._deliver("metrics", batch)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        flat = _flatten_dict(_convert_params(params))
        self._deliver("params", {k: truncate_param_value(str(v)) for k, v in flat.items()})

    def _send(self, kind: str, payload: Any) -> None:
        client = self.experiment  # the run exists: _deliver opened it
        if kind == "metrics":
            for start in range(0, len(payload), MAX_METRICS_PER_BATCH):
                batch = payload[start : start + MAX_METRICS_PER_BATCH]
                client.log_batch(self._run_id, metrics=batch, **self._log_batch_kwargs)
        else:
            log_params_keeping_first(client, self._run_id, payload)

    def _unreachable(self) -> str | None:
        return tracking_unreachable_reason(self._tracking_uri, self._probe_timeout_s)

    def _deliver(self, kind: str, payload: Any) -> None:
        # The run must exist before anything can be kept for it (creating it needs the store: that error is raised).
        self._open_run()
        if self._pending is not None and not self._flush_pending():
            self._keep(kind, payload, None)
            return
        if _scheme(self._tracking_uri) in ("http", "https"):
            # MLflow's client retries a dead server with backoff for minutes per call; a probe of a few ms first
            # keeps training going at full speed while the server is away.
            reason = self._unreachable()
            if reason is not None:
                self._keep(kind, payload, reason)
                return
        try:
            self._send(kind, payload)
        except Exception as err:
            # Only a store that no longer answers turns an error into kept data; any other error is real.
            reason = self._unreachable()
            if reason is None:
                raise
            self._keep(kind, payload, reason or str(err))

    def _open_pending(self, reason: str | None) -> PendingRun:
        if self._pending is None:
            path = self._spool_dir / f"{self._run_id}.jsonl"
            # A file left by an earlier process for this run (a resumed run) goes first.
            self._pending = (
                PendingRun.load(path) if path.exists() else PendingRun(path, self._tracking_uri, self._run_id)
            )
            rank_zero_warn(
                f"MLflow tracking store {display_uri(self._tracking_uri)} is unreachable ({reason}); training goes "
                f"on and what run {self._run_id} logs is kept in {path} until the store answers again"
            )
        return self._pending

    def _keep(self, kind: str, payload: Any, reason: str | None) -> None:
        pending = self._open_pending(reason)
        if kind == "metrics":
            pending.add_metrics(payload)
        else:
            pending.add_params(payload)

    def _flush_pending(self) -> bool:
        """Send what was kept; True when nothing is left (the store answered)."""
        if self._pending is None:
            return True
        if self._unreachable() is not None:
            return False
        count = self._pending.metric_count
        try:
            self._pending.send(self.experiment)
        except Exception:
            if self._unreachable() is None:
                raise
            return False
        rank_zero_info(
            f"MLflow tracking store {display_uri(self._tracking_uri)} answers again: sent {count} kept metric "
            f"values of run {self._run_id}"
        )
        self._pending = None
        return True

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        # A logger whose run was never created (the fit failed before it started) has nothing to end.
        if not self._initialized or self._ended_offline:
            return
        # Only a fit that ended well raises over a store that stayed away (SLURM's requeue handler passes "finished").
        completed = status == "success" and self.end_status is None
        status = self.end_status or {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}.get(
            status, status
        )
        reason = self._unreachable() if self._flush_pending() else "still unreachable"
        if reason is None:
            super().finalize(status)
            return
        # The store is away at the end: the run's end and its checkpoints join the kept data.
        pending = self._open_pending(reason)
        if self._checkpoint_callback is not None:
            for _t, path, _score, _tag in _scan_checkpoints(self._checkpoint_callback, self._logged_model_time):
                pending.add_artifact(path, CHECKPOINT_ARTIFACT_DIR, checkpoint_artifact_name(path))
        pending.add_end(status)
        self._ended_offline = True
        message = (
            f"MLflow tracking store {display_uri(self._tracking_uri)} did not come back before run {self._run_id} "
            f"ended: {pending.metric_count} metric values and the run's end are kept in {pending.path}; send them "
            f"with `stress-lightning sync {pending.path}` once the store answers"
        )
        if completed:
            raise TrackingSyncError(message)
        # A failing or stopped run is already ending with its own error: add this one as a warning, not over it.
        rank_zero_warn(message)

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def _scan_and_log_checkpoints(self, checkpoint_callback: ModelCheckpoint) -> None:
        # Lightning's version logs each checkpoint into a folder named after its file (`epoch=3-step=40/`):
        # here they go under `checkpoints/` with portable names, and the metadata beside each.
        for timestamp, path, score, _tag in _scan_checkpoints(checkpoint_callback, self._logged_model_time):
            name = checkpoint_artifact_name(path)
            aliases = ["latest", "best"] if path == checkpoint_callback.best_model_path else ["latest"]
            metadata = {
                "original_filename": Path(path).name,
                "score": score.item() if hasattr(score, "item") else score,
                "monitor": checkpoint_callback.monitor,
                "mode": checkpoint_callback.mode,
                "aliases": aliases,
            }
            log_artifact_as(self.experiment, self.run_id, path, CHECKPOINT_ARTIFACT_DIR, name)
            with tempfile.TemporaryDirectory(prefix="stress_ckpt_meta_") as tmp:
                meta_path = Path(tmp) / f"{Path(name).stem}.yaml"
                meta_path.write_text(yaml.safe_dump(metadata, sort_keys=False), encoding="utf-8")
                self.experiment.log_artifact(self.run_id, str(meta_path), CHECKPOINT_ARTIFACT_DIR)
            self._logged_model_time[path] = timestamp

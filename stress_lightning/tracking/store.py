"""Where runs live: the tracking URI, the experiment and its artifact location, and the Lightning logger.

The embedded default is a SQLite database `mlruns/mlflow.db` with artifacts under `mlruns/artifacts/<exp_id>/`
(MLflow 3's plain `./mlruns` file store is in maintenance mode). `MLFLOW_TRACKING_URI` or an explicit URI
overrides it: another database URI works the same way, and an `http(s)://` tracking server decides the
artifact location itself (its `--artifacts-destination`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_EXPERIMENT = "stress-lightning"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"

# SQLAlchemy dialects MLflow's SqlAlchemyStore accepts (`postgresql+psycopg2://` etc. share the prefix).
_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_SERVER_SCHEMES = ("http", "https", "databricks")


def _scheme(uri: str) -> str:
    return urlparse(uri).scheme.split("+", 1)[0].lower()


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
    on global rank 0 only.
    """

    def __init__(
        self,
        experiment_name: str = DEFAULT_EXPERIMENT,
        tracking_uri: str | None = None,
        run_name: str | None = None,
        tags: dict[str, Any] | None = None,
        artifact_root: str | None = None,
        run_id: str | None = None,
        log_model: bool = False,
        prefix: str = "",
        synchronous: bool | None = None,
    ) -> None:
        uri = resolve_tracking_uri(tracking_uri)
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

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    @property
    @rank_zero_experiment
    def experiment(self) -> MlflowClient:
        if not self._initialized and self._run_id is None and self._experiment_id is None:
            self._experiment_id = ensure_experiment(self._experiment_name, self._tracking_uri, self._artifact_root)
        return super().experiment

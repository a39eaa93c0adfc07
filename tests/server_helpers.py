"""A real MLflow tracking server for the tests: PostgreSQL from Debian's packages as the backend store (SQLite when
PostgreSQL cannot be started, and the reason is kept), `mlflow server --serve-artifacts` with a local artifact
destination, both on 127.0.0.1 ports chosen at random. The server can be stopped and started again on the same
port and store, as a lost server would be."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

_PG_BIN_GLOBS = ("/usr/lib/postgresql/*/bin",)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bin(name: str) -> str | None:
    for pattern in _PG_BIN_GLOBS:
        for folder in sorted(glob.glob(pattern), reverse=True):
            if os.access(Path(folder) / name, os.X_OK):
                return str(Path(folder) / name)
    return shutil.which(name)


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with a password-protected role and database `mlflow`.

    PostgreSQL refuses to run as root: as root the cluster is owned by and run as the `postgres` system user, in a
    folder of its own under the system's temporary folder (pytest's are private to root).
    """

    def __init__(self, password: str = "test-only-password") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="stress_pg_"))
        self.password = password
        self.port = free_port()
        self.data = self.root / "pgdata"
        self._as_user: list[str] = []

    def start(self) -> str:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("PostgreSQL's initdb/pg_ctl are not installed (Debian package postgresql)")
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise RuntimeError("running as root without runuser: cannot start PostgreSQL as another user")
            self._as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run(
            [initdb, "-D", str(self.data), "-U", "mlflow", "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8"]
        )
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root}"
        self._run([pg_ctl, "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-o", options, "-w", "start"])
        uri = f"postgresql+psycopg2://mlflow:{self.password}@127.0.0.1:{self.port}/postgres"
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("CREATE DATABASE mlflow"))
        engine.dispose()
        return uri.rsplit("/", 1)[0] + "/mlflow"

    def _run(self, args: list[str]) -> None:
        proc = subprocess.run([*self._as_user, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")

    def stop(self) -> None:
        pg_ctl = _pg_bin("pg_ctl")
        if pg_ctl and self.data.exists():
            subprocess.run(
                [*self._as_user, pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.root, ignore_errors=True)


class TrackingServer:
    """`mlflow server` on 127.0.0.1 over PostgreSQL (or SQLite) with proxied artifacts under `root/artifacts`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.postgres: Postgres | None = None
        self.backend = "postgresql"
        self.fallback_reason: str | None = None
        self._proc: subprocess.Popen | None = None
        self.backend_uri = ""

    def setup(self) -> None:
        postgres = Postgres()
        try:
            self.backend_uri = postgres.start()
            self.postgres = postgres
        except Exception as err:  # noqa: BLE001 - the fallback is announced by the tests that use it
            postgres.stop()
            self.backend = "sqlite"
            self.fallback_reason = f"PostgreSQL could not be started ({err}); the server uses SQLite"
            self.backend_uri = f"sqlite:///{self.root / 'mlflow.db'}"
        self.start()

    def start(self, timeout_s: float = 120) -> None:
        mlflow_cli = Path(sys.executable).with_name("mlflow")
        log = (self.root / "server.log").open("a")
        self._proc = subprocess.Popen(
            [
                str(mlflow_cli),
                "server",
                "--backend-store-uri",
                self.backend_uri,
                "--serve-artifacts",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends the server and its workers together
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self._proc.returncode}); see {self.root / 'server.log'}")
            try:
                if requests.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer on {self.uri} within {timeout_s} s")

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=30)
        self._proc = None
        # The port is closed once the server is gone: a client then sees "connection refused" at once.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"{self.uri}/health", timeout=1)
            except requests.RequestException:
                return
            time.sleep(0.2)

    def close(self) -> None:
        self.stop()
        if self.postgres is not None:
            self.postgres.stop()

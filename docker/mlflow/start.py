"""Entrypoint of the `mlflow` service in docker-compose.yml: create the artifact bucket in MinIO if it is missing,
then replace this process with `mlflow server` (PostgreSQL backend store, artifacts proxied to the bucket).

Everything comes from the environment that docker-compose.yml passes in; nothing here has a default secret.
The module imports without boto3 so that the tests can check it on a machine without the server's packages.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import Any, NoReturn
from urllib.parse import quote

# Variables this script reads; docker-compose.yml must pass each one to the service (tests/test_compose.py checks).
REQUIRED_ENV = (
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "MLFLOW_ARTIFACTS_BUCKET",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_PUBLISHED_PORT",
)
# Credentials that must not keep the placeholder value shipped in .env.example.
SECRET_ENV = ("POSTGRES_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
PLACEHOLDER_PREFIX = "change-me"

POSTGRES_HOST = "postgres"  # the compose service name
POSTGRES_PORT = 5432
SERVER_PORT = 5000  # inside the container; published on 127.0.0.1 only

# S3 bucket naming rules (3-63 characters, lowercase letters, digits, dots, hyphens; starts and ends alphanumeric).
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# head_bucket answers a missing bucket with a bare HTTP status, create_bucket with a named code.
_MISSING_CODES = {"404", "NoSuchBucket", "NotFound"}
_ALREADY_OURS_CODES = {"BucketAlreadyOwnedByYou"}


class ConfigError(RuntimeError):
    """The environment the compose file passed in cannot start the server."""


def check_env(env: Mapping[str, str]) -> None:
    """Fail with the names of missing variables and of secrets still set to the .env.example placeholder."""
    missing = [name for name in REQUIRED_ENV if not env.get(name)]
    if missing:
        raise ConfigError(
            f"mlflow service: missing environment variables {', '.join(missing)}; "
            "they come from docker-compose.yml and .env (copy .env.example to .env)"
        )
    placeholders = [name for name in SECRET_ENV if env[name].startswith(PLACEHOLDER_PREFIX)]
    if placeholders:
        raise ConfigError(
            f"mlflow service: {', '.join(placeholders)} still hold the '{PLACEHOLDER_PREFIX}' placeholder "
            "from .env.example; set real values in .env, then `docker compose up -d` again"
        )
    bucket = env["MLFLOW_ARTIFACTS_BUCKET"]
    if not _BUCKET_NAME.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"mlflow service: MLFLOW_ARTIFACTS_BUCKET={bucket!r} is not a valid S3 bucket name "
            "(3-63 characters: lowercase letters, digits, '.', '-'; alphanumeric at both ends)"
        )
    port = env["MLFLOW_PUBLISHED_PORT"]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"mlflow service: MLFLOW_PUBLISHED_PORT={port!r} (MLFLOW_PORT in .env) is not a TCP port")


def backend_store_uri(env: Mapping[str, str]) -> str:
    """SQLAlchemy URI of the PostgreSQL backend store; user, password and database are percent-encoded so that
    characters such as '@', ':' or '/' in a password cannot change where the URI points."""
    user = quote(env["POSTGRES_USER"], safe="")
    password = quote(env["POSTGRES_PASSWORD"], safe="")
    database = quote(env["POSTGRES_DB"], safe="")
    return f"postgresql+psycopg2://{user}:{password}@{POSTGRES_HOST}:{POSTGRES_PORT}/{database}"


def server_argv(env: Mapping[str, str]) -> list[str]:
    """`mlflow server` command line. The backend store URI holds the database password, so it travels in
    $MLFLOW_BACKEND_STORE_URI (read by `mlflow server`) rather than on the command line, where `ps` shows it."""
    published = env["MLFLOW_PUBLISHED_PORT"]
    # A browser or client on the host sends Host: 127.0.0.1:<published port> (or localhost:...); accept only those,
    # which also keeps DNS-rebinding pages out. Origins likewise, for the UI's own requests.
    hosts = [f"127.0.0.1:{published}", f"localhost:{published}"]
    origins = [f"http://{host}" for host in hosts]
    return [
        "mlflow",
        "server",
        "--artifacts-destination",
        f"s3://{env['MLFLOW_ARTIFACTS_BUCKET']}/",
        "--serve-artifacts",
        "--host",
        "0.0.0.0",
        "--port",
        str(SERVER_PORT),
        "--allowed-hosts",
        ",".join(hosts),
        "--cors-allowed-origins",
        ",".join(origins),
    ]


def _error_code(exc: Exception) -> str:
    response: Any = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def ensure_bucket(client: Any, bucket: str) -> bool:
    """Create `bucket` unless it exists; True when this call created it. Safe to run at every start and from
    two containers at once. `client` is a boto3 S3 client (anything with its head_bucket/create_bucket and
    exceptions.ClientError)."""
    client_error = client.exceptions.ClientError
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except client_error as exc:
        code = _error_code(exc)
        if code not in _MISSING_CODES:
            raise ConfigError(
                f"mlflow service: cannot use bucket {bucket!r} at $MLFLOW_S3_ENDPOINT_URL (S3 error {code or exc}); "
                "check MINIO_ROOT_USER / MINIO_ROOT_PASSWORD in .env"
            ) from exc
    try:
        client.create_bucket(Bucket=bucket)
    except client_error as exc:
        if _error_code(exc) not in _ALREADY_OURS_CODES:
            raise ConfigError(f"mlflow service: cannot create bucket {bucket!r}: {exc}") from exc
        return False
    return True


def s3_client(env: Mapping[str, str]) -> Any:
    """boto3 S3 client for MinIO: path-style addressing (MinIO serves no per-bucket host names here) and retries
    for the moments right after MinIO reports healthy."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 10, "mode": "standard"}),
    )


def main() -> NoReturn:
    from botocore.exceptions import BotoCoreError

    env = os.environ
    try:
        check_env(env)
        bucket = env["MLFLOW_ARTIFACTS_BUCKET"]
        created = ensure_bucket(s3_client(env), bucket)
    except ConfigError as exc:
        print(exc, file=sys.stderr, flush=True)
        sys.exit(2)
    except BotoCoreError as exc:  # connection refused, timeouts: MinIO is not answering
        print(f"mlflow service: cannot reach MinIO at {env['MLFLOW_S3_ENDPOINT_URL']}: {exc}", file=sys.stderr)
        sys.exit(3)
    print(f"mlflow service: bucket {bucket!r} {'created' if created else 'already exists'}", flush=True)
    env["MLFLOW_BACKEND_STORE_URI"] = backend_store_uri(env)
    argv = server_argv(env)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()

"""Checks of the MLflow server stack (docker-compose.yml, .env.example, docker/) that need no Docker engine:
what the compose file declares, what it reads from .env, and the mlflow service's entrypoint (docker/mlflow/start.py)
against a stubbed S3 client and the installed mlflow's own `server` command line."""

from __future__ import annotations

import importlib.util
import py_compile
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
START = ROOT / "docker" / "mlflow" / "start.py"

LOOPBACK = "127.0.0.1"
PLACEHOLDER = "change-me"
# Variables whose values are credentials: required (${VAR:?message}), never defaulted, placeholders in .env.example.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|ROOT_USER")
# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, $VAR.
_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)
EXPECTED_SERVICES = {"postgres", "minio", "mlflow"}


# ----------------------------------------------------------------------------------------------------- helpers


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def load_env_example() -> dict[str, str]:
    """KEY=value lines of .env.example, in order; a duplicate key is an error (compose would take the last)."""
    values: dict[str, str] = {}
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        assert sep, f"{ENV_EXAMPLE.name}:{number}: not KEY=value: {line!r}"
        assert key not in values, f"{ENV_EXAMPLE.name}:{number}: {key} set twice"
        values[key.strip()] = value.strip()
    return values


def string_values(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML tree (compose interpolates values, not keys)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from string_values(value)
    elif isinstance(node, list):
        for value in node:
            yield from string_values(value)


def interpolations(text: str) -> list[tuple[str, str, str]]:
    """(name, operator, argument) of each interpolation in `text`; `$$` is a literal dollar, not one."""
    found = []
    for match in _INTERPOLATION.finditer(text.replace("$$", "")):
        if match["bare"]:
            found.append((match["bare"], "", ""))
        else:
            found.append((match["name"], match["op"] or "", match["arg"] or ""))
    return found


def resolve(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one value against `env`; an unset required variable raises KeyError."""

    def substitute(match: re.Match[str]) -> str:
        name = match["bare"] or match["name"]
        op, arg = match["op"] or "", match["arg"] or ""
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise KeyError(f"{name}: {arg}")
        if op == ":-" and not value or op == "-" and value is None:
            return arg
        if op == ":+":
            return arg if value else ""
        return value or ""

    parts = text.split("$$")
    return "$".join(_INTERPOLATION.sub(substitute, part) for part in parts)


def published_ports(entry: Any, env: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(host_ip, host_port, container_port) of one `ports:` entry, short or long syntax; host_ip "" means every
    interface, which is what Docker does when none is given."""
    if isinstance(entry, Mapping):
        return [(str(entry.get("host_ip", "")), str(entry.get("published", "")), str(entry["target"]))]
    text = resolve(str(entry), env).split("/", 1)[0]
    host_ip = ""
    if text.startswith("["):  # [::1]:5000:5000
        host_ip, _, text = text[1:].partition("]:")
    fields = text.split(":")
    if len(fields) == 3:
        host_ip, host_port, container = fields
    elif len(fields) == 2:
        host_port, container = fields
    else:
        host_port, container = "", fields[0]
    return [(host_ip, host_port, container)]


def all_interpolated_names() -> set[str]:
    return {name for value in string_values(load_compose()) for name, _, _ in interpolations(value)}


def dockerfile_of(service: Mapping[str, Any]) -> Path:
    build = service["build"]
    context = ROOT / (build if isinstance(build, str) else build["context"])
    name = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    return context / name


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def is_root(user: str) -> bool:
    return user.split(":", 1)[0].strip() in ("", "root", "0")


def load_start() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_mlflow_start", START)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    # No __pycache__ next to the script: docker/mlflow/ is the image's build context.
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return module


@pytest.fixture(scope="module")
def start() -> ModuleType:
    return load_start()


def mlflow_env(values: Mapping[str, str]) -> dict[str, str]:
    """The environment compose gives the mlflow service when .env holds `values`."""
    environment = load_compose()["services"]["mlflow"]["environment"]
    return {key: resolve(str(value), values) for key, value in environment.items()}


REAL_VALUES = {
    "POSTGRES_PASSWORD": "pg-Secret-1",
    "MINIO_ROOT_USER": "mlflow-svc",
    "MINIO_ROOT_PASSWORD": "s3-Secret-1",
}


# -------------------------------------------------------------------------------------------- compose structure


def test_compose_parses_with_the_three_services() -> None:
    compose = load_compose()
    assert isinstance(compose, dict), f"{COMPOSE.name} is not a YAML mapping"
    assert set(compose["services"]) == EXPECTED_SERVICES


def test_every_service_has_an_enabled_healthcheck() -> None:
    for name, service in load_compose()["services"].items():
        check = service.get("healthcheck")
        assert check, f"service {name} has no healthcheck"
        assert not check.get("disable"), f"service {name} disables its healthcheck"
        test = check.get("test")
        assert isinstance(test, list) and len(test) >= 2, f"service {name}: healthcheck.test must be a command list"
        assert test[0] in ("CMD", "CMD-SHELL"), f"service {name}: healthcheck.test starts with {test[0]!r}"
        assert all(str(part).strip() for part in test[1:]), f"service {name}: empty healthcheck command"


def test_healthchecks_use_what_each_image_provides() -> None:
    services = load_compose()["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["minio"]["healthcheck"]["test"][1:] == ["mc", "ready", "local"]
    mlflow_check = " ".join(services["mlflow"]["healthcheck"]["test"])
    assert mlflow_check.split()[1] == "python", "python:3.11-slim has no curl: the check must run python"
    port = load_start().SERVER_PORT
    assert f"127.0.0.1:{port}/health" in mlflow_check


def test_mlflow_health_endpoint_skips_the_host_check() -> None:
    # The health check calls 127.0.0.1:5000 inside the container, a Host the server does not allow; it passes only
    # because MLflow exempts /health from host validation.
    from mlflow.server.security_utils import is_health_endpoint

    assert is_health_endpoint("/health")


@pytest.mark.parametrize(
    ("entry", "loopback"),
    [
        ("127.0.0.1:5000:5000", True),
        ("127.0.0.1:${MLFLOW_PORT:-5000}:5000/tcp", True),
        ({"target": 5000, "published": 5000, "host_ip": "127.0.0.1"}, True),
        ("5000:5000", False),
        ("0.0.0.0:5000:5000", False),
        ("[::]:5000:5000", False),
        ("5000", False),
        (5000, False),
        ("${MLFLOW_PORT:-5000}:5000", False),
        ({"target": 5000, "published": 5000}, False),
    ],
)
def test_port_parser_tells_loopback_from_every_interface(entry: Any, loopback: bool) -> None:
    (host_ip, _, container) = published_ports(entry, {})[0]
    assert (host_ip == LOOPBACK) is loopback
    assert container == "5000"


def test_every_published_port_binds_loopback_only() -> None:
    env = load_env_example()
    published: dict[str, set[str]] = {}
    for name, service in load_compose()["services"].items():
        assert service.get("network_mode") != "host", f"service {name} uses the host network"
        assert "expose" not in service or all(":" not in str(p) for p in service["expose"])
        for entry in service.get("ports", []):
            for host_ip, host_port, container in published_ports(entry, env):
                assert host_ip == LOOPBACK, f"service {name}: port {entry!r} binds {host_ip or 'every interface'}"
                assert host_port, f"service {name}: port {entry!r} has no fixed host port"
                published.setdefault(name, set()).add(container)
    # The database stays on the compose network; MLflow and MinIO's API and console are reachable from the host.
    assert published == {"mlflow": {str(load_start().SERVER_PORT)}, "minio": {"9000", "9001"}}


def test_named_volumes_hold_the_state() -> None:
    compose = load_compose()
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            if isinstance(mount, Mapping):
                assert mount.get("type") == "volume", f"service {name}: {mount!r} is not a named volume"
                source = mount["source"]
            else:
                source = str(mount).split(":", 1)[0]
                assert not source.startswith((".", "/", "~", "$")), f"service {name}: bind mount {mount!r}"
            assert source in declared, f"service {name}: volume {source!r} is not declared under volumes:"
            used.add(source)
    assert used == declared, f"declared but unused volumes: {sorted(declared - used)}"
    mounts = {name: [str(m) for m in service.get("volumes", [])] for name, service in compose["services"].items()}
    assert any(m.endswith(":/var/lib/postgresql/data") for m in mounts["postgres"]), "PGDATA is not on a volume"
    data_dir = compose["services"]["minio"]["command"][1]
    assert any(m.endswith(f":{data_dir}") for m in mounts["minio"]), "MinIO's data directory is not on a volume"


def test_depends_on_waits_for_health() -> None:
    services = load_compose()["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, Mapping), f"service {name}: depends_on as a list waits for start, not health"
        for other, condition in depends.items():
            assert other in services, f"service {name} depends on unknown service {other}"
            assert condition.get("condition") == "service_healthy", f"service {name} does not wait for {other}"
    assert set(services["mlflow"]["depends_on"]) == {"postgres", "minio"}


def test_services_run_as_non_root() -> None:
    for name, service in load_compose()["services"].items():
        user = str(service.get("user", ""))
        assert not is_root(user), f"service {name} runs as {user or 'the image default (root)'}"
        if "build" in service:
            dockerfile = dockerfile_of(service)
            assert dockerfile.is_file(), f"service {name}: {dockerfile} is missing"
            users = [args for word, args in instructions(dockerfile) if word == "USER"]
            assert users, f"{dockerfile.relative_to(ROOT)} never sets USER: the image runs as root"
            assert not is_root(users[-1]), f"{dockerfile.relative_to(ROOT)}: final USER is {users[-1]}"


def test_images_are_pinned() -> None:
    services = load_compose()["services"]
    images = {name: s["image"] for name, s in services.items() if "build" not in s}
    bases = {
        name: [args for word, args in instructions(dockerfile_of(s)) if word == "FROM"][-1]
        for name, s in services.items()
        if "build" in s
    }
    for name, image in {**images, **bases}.items():
        repository, _, tag = image.split()[0].rpartition(":")
        assert repository and tag and tag != "latest", f"service {name}: image {image!r} is not pinned to a tag"
    assert re.fullmatch(r"postgres:\d+(\.\d+)?-alpine", images["postgres"]), images["postgres"]
    assert re.fullmatch(r"minio/minio:RELEASE\.\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z", bases["minio"]), bases["minio"]
    assert bases["mlflow"] == "python:3.11-slim"


def test_mlflow_image_pins_its_packages_and_starts_with_start_py() -> None:
    dockerfile = dockerfile_of(load_compose()["services"]["mlflow"])
    steps = instructions(dockerfile)
    installs = " ".join(args for word, args in steps if word == "RUN" and "pip install" in args)
    requirements = dict(re.findall(r"\"([A-Za-z0-9_.-]+)==([0-9][^\"\s]*)\"", installs))
    assert requirements.get("mlflow") == "3.17.2"
    assert {"psycopg2-binary", "boto3"} <= set(requirements), f"unpinned packages in {installs!r}"
    unpinned = [word for word in re.findall(r"\"([^\"]+)\"", installs) if "==" not in word]
    assert not unpinned, f"{dockerfile.relative_to(ROOT)}: unpinned {unpinned}"
    assert any(word == "COPY" and args.split()[0] == START.name for word, args in steps)
    entrypoint = [args for word, args in steps if word == "ENTRYPOINT"][-1]
    assert f"/opt/mlflow/{START.name}" in entrypoint


# ------------------------------------------------------------------------------------------ variables and secrets


def test_every_variable_is_documented_in_env_example() -> None:
    used = all_interpolated_names()
    documented = set(load_env_example())
    assert used <= documented, (
        f"used in {COMPOSE.name} but missing from {ENV_EXAMPLE.name}: {sorted(used - documented)}"
    )
    assert documented <= used, f"in {ENV_EXAMPLE.name} but never used: {sorted(documented - used)}"


def test_env_example_comments_every_group() -> None:
    blocks = ENV_EXAMPLE.read_text().split("\n\n")
    for block in blocks:
        lines = [line for line in block.splitlines() if line.strip()]
        if any(not line.startswith("#") for line in lines):
            assert lines[0].startswith("#"), f"{ENV_EXAMPLE.name}: no comment above {lines[0]!r}"


def test_secrets_are_required_and_never_defaulted() -> None:
    compose = load_compose()
    secrets: set[str] = set()
    for value in string_values(compose):
        for name, op, arg in interpolations(value):
            if SECRET_NAME.search(name):
                secrets.add(name)
                assert op == ":?" and arg.strip(), (
                    f"{COMPOSE.name}: secret {name} used as {value!r}, not ${{{name}:?...}}"
                )
    assert secrets == {"POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
    # A secret-named setting must come from .env, never be written into a committed file.
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                found = interpolations(str(value))
                assert len(found) == 1 and found[0][1] == ":?", f"service {name}: {key} is not taken from .env"
    for path in sorted((ROOT / "docker").rglob("Dockerfile")):
        for word, args in instructions(path):
            if word in ("ENV", "ARG"):
                assert not SECRET_NAME.search(args), f"{path.relative_to(ROOT)}: secret in {word} {args}"


def test_compose_refuses_to_start_without_the_secrets() -> None:
    values = load_env_example()
    env = {**values, **REAL_VALUES}
    del env["POSTGRES_PASSWORD"]
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        mlflow_env(env)


def test_env_example_holds_placeholders_only() -> None:
    values = load_env_example()
    for key, value in values.items():
        if SECRET_NAME.search(key):
            assert value.startswith(PLACEHOLDER), f"{ENV_EXAMPLE.name}: {key} must be a {PLACEHOLDER} placeholder"
        else:
            # Names and port numbers only: anything long or mixed-case could be a real credential.
            assert re.fullmatch(r"[a-z0-9.-]{1,32}", value), f"{ENV_EXAMPLE.name}: {key}={value!r} looks like a secret"


def test_start_script_refuses_the_placeholders(start: ModuleType) -> None:
    env = mlflow_env(load_env_example())
    with pytest.raises(start.ConfigError, match="AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"):
        start.check_env(env)
    start.check_env(mlflow_env({**load_env_example(), **REAL_VALUES}))


def test_compose_passes_everything_the_start_script_reads(start: ModuleType) -> None:
    environment = load_compose()["services"]["mlflow"]["environment"]
    assert set(start.REQUIRED_ENV) <= set(environment), sorted(set(start.REQUIRED_ENV) - set(environment))
    endpoint = environment["MLFLOW_S3_ENDPOINT_URL"]
    assert endpoint == "http://minio:9000", "the server must reach MinIO's S3 API over the compose network"


# ------------------------------------------------------------------------------------------ docker/mlflow/start.py


def test_start_script_compiles(tmp_path: Path) -> None:
    py_compile.compile(str(START), cfile=str(tmp_path / "start.pyc"), doraise=True)


def test_check_env_names_what_is_wrong(start: ModuleType) -> None:
    good = mlflow_env({**load_env_example(), **REAL_VALUES})
    with pytest.raises(start.ConfigError, match="POSTGRES_DB"):
        start.check_env({k: v for k, v in good.items() if k != "POSTGRES_DB"})
    with pytest.raises(start.ConfigError, match="not a valid S3 bucket name"):
        start.check_env({**good, "MLFLOW_ARTIFACTS_BUCKET": "Artifacts_Bucket"})
    with pytest.raises(start.ConfigError, match="not a TCP port"):
        start.check_env({**good, "MLFLOW_PUBLISHED_PORT": "70000"})


def test_backend_store_uri_survives_awkward_passwords(start: ModuleType) -> None:
    from sqlalchemy.engine import make_url

    password = "p@ss:w/rd%40?#"
    uri = start.backend_store_uri({"POSTGRES_USER": "ml flow", "POSTGRES_PASSWORD": password, "POSTGRES_DB": "runs"})
    url = make_url(uri)
    assert url.drivername == "postgresql+psycopg2"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "ml flow",
        password,
        "postgres",
        5432,
        "runs",
    )


def test_server_command_is_valid_for_the_installed_mlflow(start: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.cli import server

    env = mlflow_env({**load_env_example(), **REAL_VALUES, "MLFLOW_PORT": "5123"})
    argv = start.server_argv(env)
    assert argv[:2] == ["mlflow", "server"]
    # Click parses the arguments exactly as `mlflow server` would, without starting anything.
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    params = server.make_context("server", argv[2:]).params
    assert params["serve_artifacts"] is True
    assert params["artifacts_destination"] == "s3://mlflow-artifacts/"
    assert (params["host"], params["port"]) == ("0.0.0.0", start.SERVER_PORT)
    assert params["allowed_hosts"] == "127.0.0.1:5123,localhost:5123"
    assert params["cors_allowed_origins"] == "http://127.0.0.1:5123,http://localhost:5123"
    # The database password travels in $MLFLOW_BACKEND_STORE_URI, which `mlflow server` reads, never in argv.
    assert REAL_VALUES["POSTGRES_PASSWORD"] not in " ".join(argv)
    assert params["backend_store_uri"] is None
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", start.backend_store_uri(env))
    assert server.make_context("server", argv[2:]).params["backend_store_uri"] == start.backend_store_uri(env)


def test_mlflow_accepts_the_browser_on_loopback(start: ModuleType) -> None:
    from mlflow.server.security_utils import is_allowed_host_header, should_block_cors_request

    argv = start.server_argv({**mlflow_env({**load_env_example(), **REAL_VALUES})})
    hosts = argv[argv.index("--allowed-hosts") + 1].split(",")
    origins = argv[argv.index("--cors-allowed-origins") + 1].split(",")
    assert is_allowed_host_header(hosts, "127.0.0.1:5000")
    assert is_allowed_host_header(hosts, "localhost:5000")
    assert not is_allowed_host_header(hosts, "attacker.example:5000")
    assert not should_block_cors_request("http://127.0.0.1:5000", "POST", origins)
    assert should_block_cors_request("https://attacker.example", "POST", origins)


class _ClientError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}}


class _StubS3:
    """head_bucket/create_bucket of a boto3 S3 client over an in-memory set of buckets."""

    class exceptions:  # boto3 clients expose their error classes as client.exceptions
        ClientError = _ClientError

    def __init__(self, buckets: set[str], head_error: str | None = None, create_error: str | None = None) -> None:
        self.buckets = buckets
        self.head_error = head_error
        self.create_error = create_error
        self.created: list[str] = []

    def head_bucket(self, Bucket: str) -> dict[str, Any]:
        if self.head_error:
            raise _ClientError(self.head_error)
        if Bucket not in self.buckets:
            raise _ClientError("404")
        return {}

    def create_bucket(self, Bucket: str) -> dict[str, Any]:
        if self.create_error:
            raise _ClientError(self.create_error)
        self.buckets.add(Bucket)
        self.created.append(Bucket)
        return {}


def test_ensure_bucket_creates_a_missing_bucket_once(start: ModuleType) -> None:
    client = _StubS3(set())
    assert start.ensure_bucket(client, "mlflow-artifacts") is True
    assert start.ensure_bucket(client, "mlflow-artifacts") is False
    assert client.created == ["mlflow-artifacts"]


def test_ensure_bucket_tolerates_a_concurrent_creation(start: ModuleType) -> None:
    client = _StubS3(set(), create_error="BucketAlreadyOwnedByYou")
    assert start.ensure_bucket(client, "mlflow-artifacts") is False


@pytest.mark.parametrize(
    ("head_error", "create_error", "message"),
    [("403", None, "check MINIO_ROOT_USER"), (None, "BucketAlreadyExists", "cannot create bucket")],
)
def test_ensure_bucket_reports_what_it_cannot_fix(
    start: ModuleType, head_error: str | None, create_error: str | None, message: str
) -> None:
    client = _StubS3(set(), head_error=head_error, create_error=create_error)
    with pytest.raises(start.ConfigError, match=message) as error:
        start.ensure_bucket(client, "mlflow-artifacts")
    assert "mlflow-artifacts" in str(error.value)
    assert client.created == []

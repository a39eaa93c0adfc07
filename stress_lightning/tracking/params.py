"""Run parameters and provenance tags: the flattened resolved config, the YAML itself, the git commit."""

from __future__ import annotations

import subprocess
from argparse import Namespace
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

CONFIG_ARTIFACT = "config/config.yaml"
_TRUNCATION_MARK = "...[truncated]"


def _as_mapping(node: Any) -> Mapping[str, Any] | None:
    # jsonargparse's Namespace subclasses argparse.Namespace and has as_dict(); plain Namespaces use vars().
    if isinstance(node, Mapping):
        return node
    if hasattr(node, "as_dict") and callable(node.as_dict):
        return node.as_dict()
    if isinstance(node, Namespace):
        return vars(node)
    return None


def _format_value(value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, Path):
        return value.as_posix()
    return str(value)


def truncate_param_value(value: str, limit: int = MAX_PARAM_VAL_LENGTH) -> str:
    """Cut a value to MLflow's parameter length limit, marking the cut."""
    if len(value) <= limit:
        return value
    return value[: limit - len(_TRUNCATION_MARK)] + _TRUNCATION_MARK


def flatten_config(config: Any, prefix: str = "", sep: str = ".") -> dict[str, str]:
    """Flatten a nested config (LightningCLI/jsonargparse Namespace, dict, lists) into `a.b.c -> str` params.

    Lists of scalars stay one value (`[1, 2]`); lists holding mappings are indexed (`callbacks.0.class_path`).
    Values are cut to MLflow's parameter limit; a key longer than MLflow allows is an error naming it.
    """
    flat: dict[str, str] = {}

    def visit(node: Any, key: str) -> None:
        mapping = _as_mapping(node)
        if mapping is not None:
            if not mapping and key:
                flat[key] = "{}"
            for child_key, child in mapping.items():
                visit(child, f"{key}{sep}{child_key}" if key else str(child_key))
            return
        if isinstance(node, list | tuple) and any(_as_mapping(item) is not None for item in node):
            for index, item in enumerate(node):
                visit(item, f"{key}{sep}{index}" if key else str(index))
            return
        if not key:
            raise ValueError(f"flatten_config: expected a mapping or namespace at the top, got {type(node).__name__}")
        if len(key) > MAX_ENTITY_KEY_LENGTH:
            raise ValueError(f"config key {key!r} is longer than MLflow's {MAX_ENTITY_KEY_LENGTH}-character limit")
        flat[key] = truncate_param_value(_format_value(node))

    visit(config, prefix)
    return flat


def log_params_batched(client: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    """Log params in batches of MLflow's per-request limit (100)."""
    items = [Param(key, truncate_param_value(str(value))) for key, value in params.items()]
    for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + MAX_PARAMS_TAGS_PER_BATCH], synchronous=True)


def log_params_keeping_first(client: MlflowClient, run_id: str, params: Mapping[str, str]) -> dict[str, str]:
    """Log params into a run that may already hold some (a resumed run): new keys are logged, equal values are
    skipped, and a changed value is not logged (MLflow parameters are write-once) but named in the run's tag
    `params.changed_on_resume`; returns {key: new value} of those changes."""
    wanted = {key: truncate_param_value(str(value)) for key, value in params.items()}
    existing = client.get_run(run_id).data.params if wanted else {}
    log_params_batched(client, run_id, {k: v for k, v in wanted.items() if k not in existing})
    changed = {k: v for k, v in wanted.items() if k in existing and existing[k] != v}
    if changed:
        previous = client.get_run(run_id).data.tags.get("params.changed_on_resume", "")
        keys = sorted(set(filter(None, previous.split(", "))) | set(changed))
        client.set_tag(run_id, "params.changed_on_resume", truncate_param_value(", ".join(keys), 5000))
    return changed


def log_config(
    run_id: str,
    yaml_text: str,
    flat: Mapping[str, str],
    client: MlflowClient | None = None,
    artifact_file: str = CONFIG_ARTIFACT,
) -> str:
    """Log a run's resolved config: the flattened params and the YAML text as artifact `config/config.yaml`;
    returns the artifact path used.

    A run that already has its config (a resumed fit) keeps it: the new YAML goes beside it as
    `config/config.resume-<n>.yaml`, new keys become params and changed ones are listed in the tag
    `params.changed_on_resume` (`log_params_keeping_first`). `client` defaults to one on the current tracking URI.
    """
    client = client or MlflowClient()
    folder, _, name = artifact_file.rpartition("/")
    present = {Path(a.path).name for a in client.list_artifacts(run_id, folder or None)}
    if name in present:
        stem, dot, suffix = name.rpartition(".")
        count = sum(1 for p in present if p.startswith(f"{stem}.resume-"))
        artifact_file = f"{folder + '/' if folder else ''}{stem}.resume-{count + 1}{dot}{suffix}"
    log_params_keeping_first(client, run_id, flat)
    client.log_text(run_id, yaml_text, artifact_file)
    return artifact_file


def _git(args: list[str], cwd: Path) -> str | None:
    # No git binary or not a work tree: there is no commit to report, which callers record as such.
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=30)
    except FileNotFoundError:
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip()


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The HEAD commit of the git work tree containing `cwd` (default: this package), or None outside git."""
    return _git(["rev-parse", "HEAD"], _default_cwd(cwd))


def git_dirty(cwd: str | Path | None = None) -> bool | None:
    """Whether tracked files differ from HEAD (untracked files ignored), or None outside git."""
    status = _git(["status", "--porcelain", "--untracked-files=no"], _default_cwd(cwd))
    return None if status is None else bool(status)


def _default_cwd(cwd: str | Path | None) -> Path:
    # The code that ran is this package's source, wherever the user launched the command from.
    return Path(cwd) if cwd is not None else Path(__file__).resolve().parent


def provenance_tags(cwd: str | Path | None = None, data_fingerprint: str | None = None) -> dict[str, str]:
    """Run tags `git.commit`, `git.dirty` and (when given) `data.fingerprint`; `unknown` outside git."""
    commit = git_commit(cwd)
    dirty = git_dirty(cwd)
    tags = {
        "git.commit": commit or "unknown",
        "git.dirty": "unknown" if dirty is None else str(dirty).lower(),
    }
    if data_fingerprint is not None:
        tags["data.fingerprint"] = str(data_fingerprint)
    return tags

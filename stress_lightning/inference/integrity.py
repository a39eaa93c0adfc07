"""Checksums of model files: written when a model is logged or exported, checked by every consumer before loading.

Two records, kept apart so that changing the files alone cannot pass:

- `checksums.json` inside the model (a pyfunc artifact of its own, `CHECKSUMS_ARTIFACT`): the SHA-256 and size of
  every other artifact by name (`state_dict`, `net_config`, `labels`, `spec`, `onnx`, `expression_onnx`) and of the
  models-from-code script MLflow runs on `mlflow.pyfunc.load_model`. Written from the local files before upload.
- the tag `CHECKSUMS_TAG` on the logged model and on every registered version of it (in the tracking database, not
  the artifact store): JSON {file: SHA-256} of `checksums.json` itself and of the files MLflow writes beside it
  (`MLmodel`, the environment files). A consumer loading `models:/NAME@alias` or `models:/NAME/N` checks the
  downloaded files against the version's tag, then the artifacts against `checksums.json`.

An export folder (`stress-lightning export`) carries a `checksums.json` of its files (`files` only); loading an
ONNX file beside one checks it. Any mismatch raises `ChecksumMismatch` naming the file and both digests; a model
logged before checksums existed loads with an `UnverifiedModelWarning`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stress_lightning.inference.loading import ModelLoadError

ALGORITHM = "sha256"
CHECKSUMS_FILE = "checksums.json"
CHECKSUMS_ARTIFACT = "checksums"
CHECKSUMS_TAG = "checksums.sha256"
_CHUNK = 1 << 20


class ChecksumMismatch(ModelLoadError):
    """A model file whose content is not what was recorded when the model was logged; it is not loaded."""


class UnverifiedModelWarning(UserWarning):
    """A model that carries no checksums (logged before they were recorded): loaded, but not verified."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(path: Path) -> dict[str, Any]:
    return {ALGORITHM: sha256_file(path), "bytes": path.stat().st_size}


def write_manifest(
    path: Path, artifacts: Mapping[str, str | Path] | None = None, files: Mapping[str, str | Path] | None = None
) -> str:
    """Write `checksums.json` at `path`: `artifacts` {name: file} (recorded with the file's name) and `files`
    {path relative to the model or folder: file}. Returns the SHA-256 of what was written."""
    manifest: dict[str, Any] = {"algorithm": ALGORITHM}
    if artifacts:
        manifest["artifacts"] = {
            name: {"file": Path(p).name, **_entry(Path(p))} for name, p in sorted(artifacts.items())
        }
    if files:
        manifest["files"] = {name: _entry(Path(p)) for name, p in sorted(files.items())}
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return sha256_file(path)


def read_manifest(path: Path, source: str) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{source}: {path}: cannot read the checksums ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("algorithm") != ALGORITHM:
        raise ModelLoadError(f"{source}: {path}: not a checksums file of this package (expected algorithm sha256)")
    for section in ("artifacts", "files"):
        entries = manifest.get(section, {})
        if not isinstance(entries, dict) or not all(
            isinstance(e, dict) and isinstance(e.get(ALGORITHM), str) for e in entries.values()
        ):
            raise ModelLoadError(f"{source}: {path}: `{section}` must map names to {{sha256, bytes}} entries")
    return manifest


def check_file(path: Path, expected: str, what: str, source: str, recorded_in: str | None = None) -> None:
    """Raise ChecksumMismatch unless `path` hashes to `expected` (a missing file is a mismatch too)."""
    where = f" in {recorded_in}" if recorded_in else ""
    if not path.is_file():
        raise ChecksumMismatch(
            f"{source}: {what} is missing ({path}) though its checksum is recorded{where}, so the model is not loaded"
        )
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumMismatch(
            f"{source}: {what} does not match its checksum ({path}): sha256 expected {expected} (recorded{where}), "
            f"got {actual}; the file changed after its checksum was recorded, so it is not loaded"
        )


def no_checksums(source: str) -> None:
    warnings.warn(
        f"{source}: the model carries no checksums (logged before stress-lightning recorded them), so its files "
        "cannot be verified; log it again to add them",
        UnverifiedModelWarning,
        stacklevel=3,
    )


def verify_artifacts(artifacts: Mapping[str, Path], source: str, model_dir: Path | None = None) -> bool:
    """Check a pyfunc model's artifacts (by name) against its `checksums.json`, and, with `model_dir`, the files it
    lists by path. Every artifact must be listed: one added after logging is refused. Returns False (after an
    UnverifiedModelWarning) when the model has no checksums."""
    if CHECKSUMS_ARTIFACT not in artifacts:
        no_checksums(source)
        return False
    manifest_path = Path(artifacts[CHECKSUMS_ARTIFACT])
    manifest = read_manifest(manifest_path, source)
    listed = manifest.get("artifacts", {})
    unlisted = sorted(set(artifacts) - set(listed) - {CHECKSUMS_ARTIFACT})
    if unlisted:
        raise ChecksumMismatch(
            f"{source}: artifacts {unlisted} are not in {CHECKSUMS_FILE} (added after the model was logged), "
            "so the model is not loaded"
        )
    for name, entry in sorted(listed.items()):
        if name not in artifacts:
            raise ChecksumMismatch(
                f"{source}: artifact {name!r} is listed in {CHECKSUMS_FILE} but the model does not declare it "
                "(its MLmodel changed after logging), so it is not loaded"
            )
        check_file(Path(artifacts[name]), entry[ALGORITHM], f"artifact {name!r}", source, CHECKSUMS_FILE)
    if model_dir is not None:
        for relative, entry in sorted(manifest.get("files", {}).items()):
            check_file(model_dir / relative, entry[ALGORITHM], relative, source, CHECKSUMS_FILE)
    return True


def parse_recorded(text: str, where: str, source: str) -> dict[str, str]:
    """The value of a `CHECKSUMS_TAG` tag: {file relative to the model: sha256}."""
    try:
        recorded = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{source}: tag {CHECKSUMS_TAG} of {where} is not JSON ({err})") from err
    if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
        raise ModelLoadError(f"{source}: tag {CHECKSUMS_TAG} of {where} must map file names to sha256 digests")
    return recorded


def verify_recorded(model_dir: Path, recorded: Mapping[str, str], where: str, source: str) -> None:
    """Check downloaded model files against the digests the registry recorded for them (`CHECKSUMS_TAG`)."""
    for relative, expected in sorted(recorded.items()):
        check_file(model_dir / relative, expected, relative, source, f"tag {CHECKSUMS_TAG} of {where}")


def digest_folder_files(folder: Path, names: list[str]) -> dict[str, str]:
    """{name: sha256} of the files `names` under `folder` (the model files MLflow wrote, for `CHECKSUMS_TAG`)."""
    return {name: sha256_file(folder / name) for name in sorted(names)}


def verify_folder(path: Path, source: str) -> None:
    """Check `path` against a `checksums.json` beside it (an export folder), when there is one that lists it."""
    manifest_path = path.parent / CHECKSUMS_FILE
    if not manifest_path.is_file():
        return
    entry = read_manifest(manifest_path, source).get("files", {}).get(path.name)
    if entry is not None:
        check_file(path, entry[ALGORITHM], path.name, source, str(manifest_path))

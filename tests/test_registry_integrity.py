"""Registry artifacts carry checksums and consumers refuse files that changed: a version registered as RegistryCallback
registers it, then one file at a time changed on disk in the artifact store (and restored), loaded through every
consumer path: `load_model` / `resolve_model` on registry URIs and local folders, `mlflow.pyfunc.load_model`,
`tracking.pyfunc.load_pyfunc`, and `stress-lightning stream`."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml
from test_registry_commands import NAME, Store
from test_tracking import _example

from stress_lightning.commands import run
from stress_lightning.inference.integrity import (
    CHECKSUMS_FILE,
    CHECKSUMS_TAG,
    ChecksumMismatch,
    UnverifiedModelWarning,
    sha256_file,
    write_manifest,
)
from stress_lightning.inference.loading import resolve_model
from stress_lightning.tracking.pyfunc import MODEL_CODE_FILE, load_pyfunc
from stress_lightning.tracking.registry import EXPORT_SHA256_TAGS, check_exported
from stress_lightning.tracking.store import use_tracking_uri

MODEL_URI = f"models:/{NAME}@challenger"
OLD = "stress-before-checksums"
PLAIN = "stress-registered-by-mlflow"


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, template_db: Path) -> Iterator[tuple[Store, Path]]:
    """One version of the smallest network in a store of this module's own: (store, the version's model folder in
    the artifact store). Tests change its files and put them back."""
    root = tmp_path_factory.mktemp("integrity")
    shutil.copy(template_db, root / "mlflow.db")
    store = Store(f"sqlite:///{root}/mlflow.db", root)
    version = store.version(0.8)
    # The same logged model registered as `mlflow.register_model` does, which copies no tag onto the version.
    with use_tracking_uri(store.uri):
        mlflow.register_model(store.registry.get_version(version).source, PLAIN)
    yield store, store.model_dir(version)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


class _Restore:
    """Keeps the bytes of the files a test changes and writes them back afterwards."""

    def __init__(self) -> None:
        self.saved: dict[Path, bytes | None] = {}

    def __call__(self, path: Path) -> Path:
        self.saved.setdefault(path, path.read_bytes() if path.exists() else None)
        return path

    def restore(self) -> None:
        for path, data in self.saved.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)


@pytest.fixture
def keep() -> Iterator[_Restore]:
    restore = _Restore()
    yield restore
    restore.restore()


def test_a_registered_version_carries_checksums_and_loads_checked(registered: tuple[Store, Path]) -> None:
    store, model_dir = registered
    manifest = json.loads((model_dir / "artifacts" / CHECKSUMS_FILE).read_text())
    assert set(manifest["artifacts"]) == {"net_config", "state_dict", "labels", "spec"}
    for entry in manifest["artifacts"].values():
        assert entry["sha256"] == sha256_file(model_dir / "artifacts" / entry["file"])
    assert manifest["files"][MODEL_CODE_FILE]["sha256"] == sha256_file(model_dir / MODEL_CODE_FILE)
    # The registry's record (version tag, copied from the logged model's): checksums.json and MLflow's own files.
    recorded = json.loads(store.registry.get_version("1").tags[CHECKSUMS_TAG])
    assert recorded["artifacts/checksums.json"] == sha256_file(model_dir / "artifacts" / CHECKSUMS_FILE)
    assert {"MLmodel", "requirements.txt", MODEL_CODE_FILE} <= set(recorded)
    assert all(sha256_file(model_dir / name) == digest for name, digest in recorded.items())

    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedModelWarning)
        assert resolve_model(MODEL_URI, tracking_uri=store.uri).net is not None
        table = load_pyfunc(f"models:/{NAME}/1", tracking_uri=store.uri).predict(_example(2))
    assert len(table) == 2


def _replace_state_dict_and_manifest(model_dir: Path, keep: _Restore) -> None:
    """Other weights with a checksums.json rewritten to match them: only the registry's record can tell."""
    artifacts = model_dir / "artifacts"
    _flip(keep(artifacts / "state_dict.pt"))
    manifest = json.loads(keep(artifacts / CHECKSUMS_FILE).read_text())
    names = {name: artifacts / entry["file"] for name, entry in manifest["artifacts"].items()}
    write_manifest(artifacts / CHECKSUMS_FILE, names, {MODEL_CODE_FILE: model_dir / MODEL_CODE_FILE})


def _edit_script(model_dir: Path, keep: _Restore) -> None:
    script = keep(model_dir / MODEL_CODE_FILE)
    script.write_text(script.read_text() + "open('ran.txt', 'w').write('the edited script ran')\n")


CASES = {
    "registered state_dict.pt with one byte flipped": (
        lambda d, keep: _flip(keep(d / "artifacts" / "state_dict.pt")),
        r"artifact 'state_dict' does not match its checksum .*recorded in checksums\.json",
    ),
    "registered weights replaced and checksums.json rewritten to match": (
        _replace_state_dict_and_manifest,
        r"artifacts/checksums\.json does not match its checksum .*recorded in tag checksums\.sha256 of version 1",
    ),
    "registered models-from-code script edited": (
        _edit_script,
        r"stress_multitask_model\.py does not match its checksum .*recorded in tag checksums\.sha256",
    ),
    "registered checksums.json deleted": (
        lambda d, keep: keep(d / "artifacts" / CHECKSUMS_FILE).unlink(),
        r"artifacts/checksums\.json is missing .*though its checksum is recorded in tag checksums\.sha256",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_changed_registry_file_is_refused_by_every_consumer(
    registered: tuple[Store, Path], keep: _Restore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad_input, case
) -> None:
    store, model_dir = registered
    change, message = CASES[case]
    change(model_dir, keep)
    monkeypatch.chdir(tmp_path)  # where the edited script would leave its mark

    with pytest.raises(ChecksumMismatch, match=message) as err:
        resolve_model(MODEL_URI, tracking_uri=store.uri)
    assert str(err.value).startswith(f"{MODEL_URI}: ")
    bad_input.record("checkpoints", f"{case}: load_model", str(err.value))
    # A version registered by mlflow.register_model is checked against its logged model's record.
    with pytest.raises(ChecksumMismatch) as plain:
        resolve_model(f"models:/{PLAIN}/1", tracking_uri=store.uri)
    if "tag checksums.sha256" in str(err.value):
        assert "tag checksums.sha256 of logged model m-" in str(plain.value)
    # The pyfunc path checks before MLflow runs the model's script.
    with pytest.raises(ChecksumMismatch, match=message):
        load_pyfunc(f"models:/{NAME}/1", tracking_uri=store.uri)
    assert not (tmp_path / "ran.txt").exists()

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    code = run(["stream", "--source", str(video), "--model", MODEL_URI, "--tracking-uri", store.uri])
    assert code == 1


def test_stream_command_names_the_changed_file(
    registered: tuple[Store, Path], keep: _Restore, tmp_path: Path, capsys: pytest.CaptureFixture, bad_input
) -> None:
    store, model_dir = registered
    _flip(keep(model_dir / "artifacts" / "state_dict.pt"))
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    assert run(["stream", "--source", str(video), "--model", MODEL_URI, "--tracking-uri", store.uri]) == 1
    err = capsys.readouterr().err
    error_line = next(line for line in err.splitlines() if line.startswith("error:"))
    assert error_line.startswith(f"error: model: {MODEL_URI}: artifact 'state_dict' does not match its checksum")
    bad_input.record("checkpoints", "stream --model: registered weights with one byte flipped", error_line, 1)


def test_a_downloaded_folder_is_checked_without_the_registry(
    registered: tuple[Store, Path], tmp_path: Path, bad_input
) -> None:
    store, model_dir = registered
    local = tmp_path / "model"
    shutil.copytree(model_dir, local)
    resolve_model(local)  # intact: loads

    _flip(local / "artifacts" / "state_dict.pt")
    # MLflow's own loader: the model's load_context checks its artifacts.
    with pytest.raises(ChecksumMismatch, match="artifact 'state_dict' does not match its checksum") as err:
        mlflow.pyfunc.load_model(str(local))
    bad_input.record("checkpoints", "local MLflow folder, weights flipped: mlflow.pyfunc.load_model", str(err.value))
    shutil.copyfile(model_dir / "artifacts" / "state_dict.pt", local / "artifacts" / "state_dict.pt")

    # An artifact slipped into MLmodel after logging (a graph the stream would run instead of the weights).
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    (local / "artifacts" / "model.onnx").write_bytes(b"not the exported graph")
    mlmodel["flavors"]["python_function"]["artifacts"]["onnx"] = {"path": "artifacts/model.onnx"}
    (local / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(ChecksumMismatch, match=r"artifacts \['onnx'\] are not in checksums\.json") as err:
        resolve_model(local)
    bad_input.record("checkpoints", "local MLflow folder, an artifact added to MLmodel: load_model", str(err.value))


def test_a_version_logged_before_checksums_loads_with_a_warning(registered: tuple[Store, Path], bad_input) -> None:
    store, _ = registered
    version = store.version(0.7, name=OLD)
    old_dir = store.model_dir(version, name=OLD)
    model_id = store.registry.get_version(version, name=OLD).source.removeprefix("models:/")
    # As such a version is: no record on the version or its logged model, no checksums.json in the model.
    store.client.delete_model_version_tag(OLD, version, CHECKSUMS_TAG)
    store.client.delete_logged_model_tag(model_id, CHECKSUMS_TAG)
    mlmodel = yaml.safe_load((old_dir / "MLmodel").read_text())
    del mlmodel["flavors"]["python_function"]["artifacts"]["checksums"]
    (old_dir / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    (old_dir / "artifacts" / CHECKSUMS_FILE).unlink()

    with pytest.warns(UnverifiedModelWarning, match="carries no checksums") as caught:
        loaded = resolve_model(f"models:/{OLD}/{version}", tracking_uri=store.uri)
    assert loaded.net is not None
    bad_input.record("checkpoints", "version registered before checksums existed (warning)", str(caught[0].message))
    with use_tracking_uri(store.uri), pytest.warns(UnverifiedModelWarning):
        assert len(mlflow.pyfunc.load_model(f"models:/{OLD}/{version}").predict(_example(1))) == 1


def test_exported_graphs_are_checked_before_they_go_into_a_model(tmp_path: Path, bad_input) -> None:
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"graph bytes as exported")
    tags = {EXPORT_SHA256_TAGS["model.onnx"]: sha256_file(graph)}
    check_exported({"onnx": graph}, tags, "run 0123")
    check_exported({"onnx": graph}, {}, "run 0123")  # exported before the tags existed: nothing to check
    graph.write_bytes(b"graph bytes changed in the store")
    with pytest.raises(ChecksumMismatch, match=r"export/model\.onnx does not match its checksum") as err:
        check_exported({"onnx": graph}, tags, "run 0123")
    assert "run tag export.onnx.sha256" in str(err.value)
    bad_input.record("checkpoints", "exported model.onnx changed in the run before registration", str(err.value))

"""The registry by hand: the promotion gate's artifact check (a failed export, a worse metric or missing model files
never move `champion`), `stress-lightning promote` and `stress-lightning models list`, on a SQLite store."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from test_tracking import _example, _tiny_net

from stress_lightning.commands import run
from stress_lightning.data.taxonomy import BASIC_EXPRESSIONS as EXPRESSION_NAMES
from stress_lightning.data.taxonomy import STRESS_LEVELS as STRESS_NAMES
from stress_lightning.tracking.pyfunc import EXPRESSION_ONNX_ARTIFACT, ONNX_ARTIFACT, log_pyfunc_model
from stress_lightning.tracking.registry import RUN_ONNX, ModelRegistry
from stress_lightning.tracking.store import ensure_experiment, use_tracking_uri

NAME = "stress-multitask"
PROMOTION_TAGS = {
    "promotion.decision",
    "promotion.reason",
    "promotion.metric",
    "promotion.candidate_value",
    "promotion.previous_version",
    "promotion.previous_value",
}


class Store:
    """Runs with the smallest network logged as the pyfunc model and registered, as RegistryCallback does."""

    def __init__(self, uri: str, tmp_path: Path) -> None:
        self.uri = uri
        self.tmp_path = tmp_path
        self.client = MlflowClient(uri)
        self.registry = ModelRegistry(client=self.client)
        self.exp_id = ensure_experiment("registry", uri)

    def run(self, f1: float | None, export: str = "ok", exported_onnx: bool = False) -> str:
        """A finished run with test metrics and export tags (and, with `exported_onnx`, the export callback's
        ONNX artifacts, placeholder bytes: the gate checks their presence, not their content)."""
        run_id = self.client.create_run(self.exp_id).info.run_id
        if f1 is not None:
            self.client.log_metric(run_id, "test/stress_f1", f1)
        self.client.log_metric(run_id, "test/expression_acc", 0.5)
        self.client.log_metric(run_id, "test/hr_mae_bpm", 4.25)
        self.client.set_tag(run_id, "export.onnx.status", export)
        self.client.set_tag(run_id, "export.fp16.status", "ok" if export == "ok" else "skipped")
        self.client.set_tag(run_id, "export.tensorrt.status", "skipped")
        if exported_onnx:
            for path in RUN_ONNX.values():
                local = self.tmp_path / "exported" / Path(path).name
                local.parent.mkdir(exist_ok=True)
                local.write_bytes(b"onnx placeholder")
                self.client.log_artifact(run_id, str(local), str(Path(path).parent))
        return run_id

    def register(self, run_id: str, onnx_files: dict[str, Path] | None = None, name: str = NAME) -> str:
        names = {"expression": list(EXPRESSION_NAMES), "stress": list(STRESS_NAMES)}
        info = log_pyfunc_model(
            _tiny_net(), names, _example(1), run_id=run_id, tracking_uri=self.uri, onnx_files=onnx_files
        )
        tags = {k: v for k, v in self.client.get_run(run_id).data.tags.items() if k.startswith("export.")}
        return self.registry.register(run_id, "model", name=name, model_id=info.model_id, tags=tags)

    def version(self, f1: float | None, export: str = "ok", name: str = NAME) -> str:
        return self.register(self.run(f1, export), name=name)

    def model_dir(self, version: str, name: str = NAME) -> Path:
        uri = self.client.get_model_version_download_uri(name, version)
        assert uri.startswith("file:"), uri
        return Path(unquote(urlparse(uri).path))

    def champion(self, name: str = NAME) -> str | None:
        return self.registry.get_alias_version("champion", name)


@pytest.fixture
def store(store_uri: str, tmp_path: Path) -> Store:
    return Store(store_uri, tmp_path)


def _predicts(uri: str, model_uri: str) -> None:
    with use_tracking_uri(uri):
        model = mlflow.pyfunc.load_model(model_uri)
    table = model.predict(_example(2))
    assert len(table) == 2 and set(table["stress_level"]) <= set(STRESS_NAMES)
    assert np.isfinite(table["hr_bpm"].to_numpy()).all()


def _cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = run(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- the gate ---------------------------------------------------------------------------------------------------
def test_run_onnx_paths_match_the_export_and_pyfunc_modules() -> None:
    from stress_lightning.tracking.callbacks import EXPORTED_ONNX

    # The registry keeps its own copy (no torch import for a registry command); it must not drift.
    assert dict(RUN_ONNX) == EXPORTED_ONNX
    assert set(RUN_ONNX) == {ONNX_ARTIFACT, EXPRESSION_ONNX_ARTIFACT}


def test_failed_export_is_refused_and_champion_still_loads(store: Store) -> None:
    v1 = store.version(0.6)
    assert store.registry.promote_if_better(v1).promoted
    v2 = store.version(0.9, export="failed")  # a better model whose export failed (the callback's path)

    decision = store.registry.promote_if_better(v2)
    assert not decision.promoted and decision.champion_version == v1
    assert "gate failed: export.onnx.status='failed' (need 'ok')" in decision.reason
    assert store.champion() == v1
    assert store.registry.get_alias_version("challenger") == v2
    assert store.registry.get_version(v2).tags["promotion.decision"] == "rejected"
    _predicts(store.uri, f"models:/{NAME}@champion")


def test_worse_metric_is_refused_and_champion_unchanged(store: Store) -> None:
    v1 = store.version(0.8)
    store.registry.promote_if_better(v1)
    v2 = store.version(0.7)

    decision = store.registry.promote_if_better(v2)
    assert not decision.promoted and decision.missing_artifacts == ()
    assert decision.reason == f"test/stress_f1 0.7 < champion v{v1} 0.8"
    assert store.champion() == v1
    tags = store.registry.get_version(v2).tags
    assert tags["promotion.previous_version"] == v1 and tags["promotion.candidate_value"] == "0.7"


def test_missing_model_files_are_refused_even_when_tags_and_metric_pass(store: Store) -> None:
    v1 = store.version(0.5)
    store.registry.promote_if_better(v1)
    v2 = store.version(0.9)
    v3 = store.version(0.95)
    (store.model_dir(v2) / "artifacts" / "state_dict.pt").unlink()  # the weights are lost from the store
    shutil.rmtree(store.model_dir(v3))  # the whole model folder is gone

    weights = store.registry.promote_if_better(v2)
    assert not weights.promoted and weights.missing_artifacts == ("artifacts/state_dict.pt (artifact 'state_dict')",)
    assert "model artifacts missing at file:" in weights.reason and "state_dict.pt" in weights.reason
    folder = store.registry.promote_if_better(v3)
    assert not folder.promoted and folder.missing_artifacts == ("MLmodel",)
    assert store.champion() == v1
    _predicts(store.uri, f"models:/{NAME}@champion")

    # The same version with its files in place passes: the check is about the files, not the version.
    v4 = store.version(0.9)
    assert store.registry.promote_if_better(v4).promoted and store.champion() == v4


def test_onnx_graphs_are_checked_when_the_onnx_gate_is_required(store: Store) -> None:
    onnx_dir = store.tmp_path / "graphs"
    onnx_dir.mkdir()
    graphs = {key: onnx_dir / Path(path).name for key, path in RUN_ONNX.items()}
    for path in graphs.values():
        path.write_bytes(b"onnx placeholder")

    carried = store.register(store.run(0.7, exported_onnx=True), onnx_files=graphs)
    uri, missing = store.registry.missing_artifacts(carried, require_onnx=True)
    assert uri is not None and missing == []
    (store.model_dir(carried) / "artifacts" / "expression.onnx").unlink()
    refused = store.registry.promote_if_better(carried)
    assert not refused.promoted and refused.missing_artifacts == (
        "artifacts/expression.onnx (artifact 'expression_onnx')",
    )

    # The run exported both graphs but the model was logged without them: not the model the gate vouches for.
    run_id = store.run(0.8, exported_onnx=True)
    bare = store.register(run_id)
    decision = store.registry.promote_if_better(bare)
    assert not decision.promoted
    assert f"export/model.onnx of run {run_id} (exported, but not carried by the model as artifact 'onnx')" in (
        decision.reason
    )
    # Without the ONNX gate the graphs are not asked for.
    assert store.registry.promote_if_better(bare, require_tags={}).promoted
    assert store.champion() == bare


# -- stress-lightning promote -----------------------------------------------------------------------------------
def test_promote_dry_run_changes_nothing(store: Store, capsys: pytest.CaptureFixture) -> None:
    v1 = store.version(0.6)
    store.registry.promote_if_better(v1)
    v2 = store.version(0.9)
    aliases = store.registry.aliases(NAME)

    code, out, _ = _cli(capsys, "promote", "--version", v2, "--dry-run", "--tracking-uri", store.uri)
    assert code == 0
    assert out.strip() == (
        f"dry run: {NAME} v{v2} would be promoted to champion (test/stress_f1 0.9 >= champion v{v1} 0.6); "
        f"current champion: v{v1}; nothing changed"
    )
    assert store.registry.aliases(NAME) == aliases and store.champion() == v1
    assert not PROMOTION_TAGS & set(store.registry.get_version(v2).tags)

    code, out, _ = _cli(capsys, "promote", "--version", v1, "--dry-run", "--json", "--tracking-uri", store.uri)
    payload = json.loads(out)
    assert code == 0 and payload["dry_run"] is True and payload["promoted"] is True
    assert payload["reason"] == "already champion" and payload["version"] == v1


def test_promote_version_moves_the_alias_and_records_the_decision(
    store: Store, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)  # the default store, like the other commands
    v1 = store.version(0.6)
    code, out, _ = _cli(capsys, "promote", "--version", v1)
    assert (
        code == 0
        and out.strip()
        == f"{NAME} v{v1}: promoted to champion (no champion yet; test/stress_f1=0.6); " + ("previous champion: none")
    )
    v2 = store.version(0.9)
    code, out, _ = _cli(capsys, "promote", "--version", v2)
    assert code == 0 and f"promoted to champion (test/stress_f1 0.9 >= champion v{v1} 0.6)" in out
    assert out.strip().endswith(f"previous champion: v{v1}")
    assert store.champion() == v2
    tags = store.registry.get_version(v2).tags
    assert tags["promotion.decision"] == "champion" and tags["promotion.previous_version"] == v1

    # A refusal is a decision too: exit 0, the line says why and who stays.
    v3 = store.version(0.7)
    code, out, _ = _cli(capsys, "promote", "--version", v3)
    assert code == 0
    assert out.strip() == (
        f"{NAME} v{v3}: not promoted to champion (test/stress_f1 0.7 < champion v{v2} 0.9); champion stays v{v2}"
    )
    assert store.registry.get_version(v3).tags["promotion.decision"] == "rejected"

    # Another alias and metric.
    code, out, _ = _cli(capsys, "promote", "--version", v3, "--alias", "staging", "--metric", "test/expression_acc")
    assert code == 0 and "promoted to staging (no staging yet; test/expression_acc=0.5)" in out
    assert store.registry.get_alias_version("staging") == v3 and store.champion() == v2


def test_promote_run_id_takes_the_newest_version_of_the_run(store: Store, capsys: pytest.CaptureFixture) -> None:
    run_id = store.run(0.8)
    first = store.register(run_id)
    store.version(0.3)  # another run's version in between
    second = store.register(run_id)
    assert int(second) > int(first)

    code, out, err = _cli(capsys, "promote", "--run-id", run_id, "--tracking-uri", store.uri)
    assert code == 0 and out.startswith(f"{NAME} v{second}: promoted to champion")
    assert f"using the newest, v{second}" in err
    assert store.champion() == second

    other = store.run(0.9)
    code, _, err = _cli(capsys, "promote", "--run-id", other, "--tracking-uri", store.uri)
    assert code == 1 and err.strip() == (
        f"error: run {other} has no version registered under model {NAME!r} in {store.uri}"
    )


def test_promote_input_errors_exit_1_naming_what_is_missing(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    v1 = store.version(0.6)
    code, _, err = _cli(capsys, "promote", "--version", "9", "--tracking-uri", store.uri)
    assert code == 1 and f"error: registered model {NAME!r} has no version 9 in {store.uri} (versions: {v1})" in err
    code, _, err = _cli(capsys, "promote", "--version", "1", "--name", "nope", "--tracking-uri", store.uri)
    assert code == 1 and f"registered model 'nope' not found in {store.uri} (registered: {NAME})" in err
    code, _, err = _cli(capsys, "promote", "--run-id", "abc", "--name", "nope", "--tracking-uri", store.uri)
    assert code == 1 and "registered model 'nope' not found" in err

    absent = tmp_path / "elsewhere" / "mlflow.db"
    code, _, err = _cli(capsys, "promote", "--version", "1", "--tracking-uri", f"sqlite:///{absent}")
    assert code == 1 and f"error: no MLflow store at {absent}" in err
    assert not absent.parent.exists()  # a typo does not create an empty store
    assert store.champion() is None


def test_an_unreachable_server_exits_1_quickly_without_its_password(capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://user:secret@127.0.0.1:{port}"
    for argv in (["promote", "--version", "1"], ["models", "list"]):
        code, _, err = _cli(capsys, *argv, "--tracking-uri", uri)
        assert code == 1 and f"error: MLflow store http://user:***@127.0.0.1:{port} is not reachable" in err
        assert "secret" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "one of the arguments --version --run-id is required"),
        (["--version", "2", "--run-id", "x"], "not allowed with argument"),
        (["--version", "two"], "--version must be a positive integer, got 'two'"),
        (["--version", "0"], "--version must be a positive integer"),
        (["--version", "1", "--tracking-uri", "./mlruns"], "file store is in maintenance mode"),
    ],
)
def test_promote_usage_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["promote", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


# -- stress-lightning models ------------------------------------------------------------------------------------
def test_models_list_text_and_json(store: Store, capsys: pytest.CaptureFixture) -> None:
    v1 = store.version(0.8)
    store.registry.promote_if_better(v1)
    v2 = store.version(0.7)
    store.registry.promote_if_better(v2)
    v3 = store.version(0.9, export="failed")  # registered, not yet judged
    other = store.version(None, name="other-model")
    run_ids = {v: store.registry.get_version(v).run_id for v in (v1, v2, v3)}

    code, out, _ = _cli(capsys, "models", "list", "--name", NAME, "--tracking-uri", store.uri)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == f"{NAME}: 3 versions (challenger v{v3}, champion v{v1})"
    assert lines[1].split() == [
        "version",
        "aliases",
        "run",
        "created",
        "stress_f1",
        "expr_acc",
        "hr_mae_bpm",
        "onnx",
        "fp16",
        "tensorrt",
        "promotion",
    ]
    newest, middle, oldest = (line.split() for line in lines[2:])
    assert newest[:3] == [v3, "challenger", run_ids[v3][:8]]
    assert newest[5:12] == ["0.9", "0.5", "4.25", "failed", "skipped", "skipped", "-"]
    assert middle[:3] == [v2, "-", run_ids[v2][:8]] and middle[5] == "0.7"
    assert lines[3].endswith(f"rejected: test/stress_f1 0.7 < champion v{v1} 0.8")
    assert oldest[:2] == [v1, "champion"] and oldest[11] == "champion:"
    assert "other-model" not in out

    code, out, _ = _cli(capsys, "models", "list", "--json", "--tracking-uri", store.uri)
    rows = json.loads(out)
    assert code == 0 and [(r["name"], str(r["version"])) for r in rows] == [  # models by name, newest first
        ("other-model", other),
        (NAME, v3),
        (NAME, v2),
        (NAME, v1),
    ]
    first = rows[1]
    assert first["aliases"] == ["challenger"] and first["run_id"] == run_ids[v3]
    assert first["metrics"] == {"test/stress_f1": 0.9, "test/expression_acc": 0.5, "test/hr_mae_bpm": 4.25}
    assert first["export"] == {"onnx": "failed", "fp16": "skipped", "tensorrt": "skipped"}
    assert first["promotion"] == {"decision": None, "reason": None}
    assert rows[3]["aliases"] == ["champion"] and rows[3]["promotion"]["decision"] == "champion"
    assert rows[0]["metrics"]["test/stress_f1"] is None and rows[0]["aliases"] == ["challenger"]
    assert first["created"][:4].isdigit() and "T" in first["created"]

    # Without --name, every model gets its table.
    code, out, _ = _cli(capsys, "models", "list", "--tracking-uri", store.uri)
    assert code == 0 and f"{NAME}: 3 versions" in out and "other-model: 1 version (challenger v1)" in out


def test_models_errors_and_empty_registry(store_uri: str, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _cli(capsys, "models", "list", "--tracking-uri", store_uri)
    assert code == 0 and out.strip() == f"no registered models in {store_uri}"
    code, out, _ = _cli(capsys, "models", "list", "--json", "--tracking-uri", store_uri)
    assert code == 0 and json.loads(out) == []
    code, _, err = _cli(capsys, "models", "list", "--name", "nope", "--tracking-uri", store_uri)
    assert code == 1 and f"error: registered model 'nope' not found in {store_uri}" in err

    # Plain `models` lists the architectures by kind (tests/test_models_zoo_command.py); an unknown action is usage.
    code, out, err = _cli(capsys, "models")
    assert code == 0 and out.startswith("spatial: ") and err == ""
    with pytest.raises(SystemExit) as exit_info:
        run(["models", "zoo"])
    assert exit_info.value.code == 2 and "invalid choice: 'zoo'" in capsys.readouterr().err

"""MLflow store resolution, config params, plots, the pyfunc model in a fresh process, and gated promotion."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from stress_lightning.data.taxonomy import BASIC_EXPRESSIONS as EXPRESSION_NAMES
from stress_lightning.data.taxonomy import STRESS_LEVELS as STRESS_NAMES
from stress_lightning.models.net import MultiTaskNet
from stress_lightning.tracking.params import flatten_config, git_commit, git_dirty, log_config
from stress_lightning.tracking.plots import confusion_counts, confusion_matrix_figure, hr_trace_figure
from stress_lightning.tracking.pyfunc import log_pyfunc_model
from stress_lightning.tracking.registry import ModelRegistry
from stress_lightning.tracking.store import (
    StressMLFlowLogger,
    ensure_experiment,
    resolve_tracking_uri,
    use_tracking_uri,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


# -- params --------------------------------------------------------------------------------------------------
def test_flatten_config_nested_namespaces_lists_and_limits() -> None:
    config = {
        "model": Namespace(class_path="pkg.Module", init_args={"lr": 0.002, "net": {"spatial_backbone": "conv4"}}),
        "trainer": {"callbacks": [{"class_path": "A", "init_args": {"x": 1}}, {"class_path": "B"}], "devices": [0, 1]},
        "data": {"root": Path("data/synthetic"), "empty": {}, "missing": None},
        "note": "x" * (MAX_PARAM_VAL_LENGTH + 50),
    }
    flat = flatten_config(config)
    assert flat["model.class_path"] == "pkg.Module"
    assert flat["model.init_args.lr"] == "0.002"
    assert flat["model.init_args.net.spatial_backbone"] == "conv4"
    assert flat["trainer.callbacks.0.init_args.x"] == "1"
    assert flat["trainer.callbacks.1.class_path"] == "B"
    assert flat["trainer.devices"] == "[0, 1]"
    assert flat["data.root"] == "data/synthetic"
    assert flat["data.empty"] == "{}"
    assert flat["data.missing"] == "None"
    assert len(flat["note"]) == MAX_PARAM_VAL_LENGTH and flat["note"].endswith("[truncated]")
    with pytest.raises(ValueError, match="longer than MLflow"):
        flatten_config({"k" * 300: 1})


def test_log_config_batches_params_and_stores_yaml(store_uri: str) -> None:
    client = MlflowClient(store_uri)
    run = client.create_run(ensure_experiment("params", store_uri))
    flat = flatten_config({"group": {f"p{i:03d}": i for i in range(250)}})
    log_config(run.info.run_id, "group:\n  p000: 0\n", flat, client=client)
    logged = client.get_run(run.info.run_id).data.params
    assert len(logged) == 250 and logged["group.p249"] == "249"
    path = client.download_artifacts(run.info.run_id, "config/config.yaml")
    assert Path(path).read_text() == "group:\n  p000: 0\n"


def test_git_commit_and_dirty(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    commit = git_commit(REPO_ROOT)
    assert commit is not None and len(commit) == 40
    assert git_dirty(REPO_ROOT) in (True, False)
    assert git_commit(tmp_path) is None and git_dirty(tmp_path) is None


# -- store ---------------------------------------------------------------------------------------------------
def test_resolve_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert (tmp_path / "mlruns").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///other/db.sqlite")
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path}/other/db.sqlite"
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    with pytest.raises(ValueError, match="file store is in maintenance mode"):
        resolve_tracking_uri("./mlruns")
    with pytest.raises(ValueError, match="in-memory"):
        resolve_tracking_uri("sqlite:///:memory:")


def test_experiment_artifacts_live_under_artifacts_exp_id(store_uri: str, tmp_path: Path) -> None:
    exp_id = ensure_experiment("layout", store_uri)
    assert ensure_experiment("layout", store_uri) == exp_id
    location = MlflowClient(store_uri).get_experiment(exp_id).artifact_location
    assert location == (tmp_path / "artifacts" / exp_id).as_uri()

    fresh_uri = f"sqlite:///{tmp_path}/fresh/mlflow.db"
    StressMLFlowLogger(experiment_name="unused", tracking_uri=fresh_uri)
    default = MlflowClient(fresh_uri).get_experiment("0").artifact_location
    assert default == (tmp_path / "fresh" / "artifacts" / "0").as_uri()

    logger = StressMLFlowLogger(experiment_name="via-logger", tracking_uri=store_uri, run_name="r", tags={"k": "v"})
    run = logger.experiment.get_run(logger.run_id)
    assert run.info.run_name == "r" and run.data.tags["k"] == "v"
    assert run.info.artifact_uri.startswith((tmp_path / "artifacts" / logger.experiment_id).as_uri() + "/")


# -- plots ---------------------------------------------------------------------------------------------------
def test_confusion_and_trace_figures() -> None:
    cm = confusion_counts(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 2]]
    fig = confusion_matrix_figure(cm, ["low", "normal", "high"], "stress")
    assert len(fig.axes) == 2 and "stress" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="3 class names"):
        confusion_matrix_figure(np.zeros((2, 2), int), ["low", "normal", "high"], "bad")
    with pytest.raises(ValueError, match="4 true labels but 3"):
        confusion_counts(np.zeros(4), np.zeros(3), 3)
    trace = hr_trace_figure(np.array([70.0, 72.0]), np.array([71.0, 71.0]), "hr")
    assert "MAE 1.00 bpm" in trace.axes[0].get_title()


# -- pyfunc + registry -------------------------------------------------------------------------------------
def _tiny_net() -> MultiTaskNet:
    torch.manual_seed(0)
    return MultiTaskNet(spatial_backbone="conv4", temporal_backbone="c3d_small", roi_frames=64).eval()


def _example(batch_size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch_size)
    return {
        "frames": rng.random((batch_size, 4, 3, 32, 32), dtype=np.float32),
        "roi": (0.5 + 0.01 * rng.random((batch_size, 64, 3, 8, 8), dtype=np.float32)).astype(np.float32),
    }


_CONSUMER = """
import json, sys
import mlflow
import numpy as np
model = mlflow.pyfunc.load_model("models:/stress-multitask@champion")
rng = np.random.default_rng(0)
clips = {"frames": rng.random((3, 4, 3, 32, 32), dtype=np.float32),
         "roi": (0.5 + 0.01 * rng.random((3, 64, 3, 8, 8), dtype=np.float32)).astype(np.float32)}
out = model.predict(clips)
signature = model.metadata.signature
print(json.dumps({"columns": list(out.columns), "rows": len(out), "stress": out["stress_level"].tolist(),
                  "hr_bpm": out["hr_bpm"].tolist(), "inputs": signature.inputs is None,
                  "outputs": [c.name for c in signature.outputs.inputs], "params": [p.name for p in signature.params]}))
"""


def test_pyfunc_champion_loads_in_a_fresh_process(store_uri: str, tmp_path: Path) -> None:
    client = MlflowClient(store_uri)
    run = client.create_run(ensure_experiment("pyfunc", store_uri))
    run_id = run.info.run_id
    client.log_metric(run_id, "test/stress_f1", 0.8)
    client.set_tag(run_id, "export.onnx.status", "ok")
    names = {"expression": list(EXPRESSION_NAMES), "stress": list(STRESS_NAMES)}
    info = log_pyfunc_model(_tiny_net(), names, _example(1), run_id=run_id, tracking_uri=store_uri)
    # The signature describes the video table (the model also takes clips, so no input schema is enforced).
    assert info.signature.inputs is None
    assert [c.name for c in info.signature.outputs.inputs][:3] == ["video", "t_start_s", "t_end_s"]

    registry = ModelRegistry(client=client)
    version = registry.register(run_id, "model")  # found by run + name, without the model id
    assert registry.promote_if_better(version).promoted

    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri}
    result = subprocess.run(
        [sys.executable, "-c", _CONSUMER], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    expected = (
        ["expression"]
        + [f"expression_prob_{n}" for n in EXPRESSION_NAMES]
        + ["hr_bpm", "rmssd_ms", "lf_hf_ratio", "stress_level"]
        + [f"stress_prob_{n}" for n in STRESS_NAMES]
    )
    assert payload["columns"] == expected and payload["rows"] == 3
    assert payload["inputs"] is True
    assert payload["params"] == ["hr_method", "update_every_s", "hr_window_s"]
    assert "stress_prob_high" in payload["outputs"] and "quality" in payload["outputs"]
    assert set(payload["stress"]) <= set(STRESS_NAMES)
    assert all(40.0 <= hr <= 180.0 for hr in payload["hr_bpm"])

    # The same model in this process agrees with the network it was built from.
    with use_tracking_uri(store_uri):
        loaded = mlflow.pyfunc.load_model(f"models:/{info.model_id}")
    clips = _example(2)
    table = loaded.predict(clips)
    with torch.no_grad():
        out = _tiny_net()(torch.from_numpy(clips["frames"]), torch.from_numpy(clips["roi"]))
    np.testing.assert_allclose(table["hr_bpm"].to_numpy(), out["hr_bpm"].numpy(), rtol=1e-5)
    with pytest.raises(Exception, match="frames"):
        loaded.predict({"frames": clips["frames"][:, :, :2], "roi": clips["roi"]})  # two colour channels


def _candidate(client: MlflowClient, exp_id: str, f1: float | None, export_ok: bool, files: Path) -> tuple[str, str]:
    run_id = client.create_run(exp_id).info.run_id
    if f1 is not None:
        client.log_metric(run_id, "test/stress_f1", f1)
    if export_ok:
        client.set_tag(run_id, "export.onnx.status", "ok")
    model_id = client.create_logged_model(exp_id, name="model", source_run_id=run_id).model_id
    # The gate checks that the model's files are in the store; an MLmodel declaring no artifact is a complete model
    # as far as the gate is concerned (test_registry_commands.py covers real models and missing files).
    files.mkdir(exist_ok=True)
    (files / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: none\n")
    client.log_model_artifacts(model_id, str(files))
    return model_id, run_id


def test_promotion_gate(store_uri: str, tmp_path: Path) -> None:
    client = MlflowClient(store_uri)
    exp_id = ensure_experiment("gate", store_uri)
    registry = ModelRegistry(client=client)
    assert registry.get_alias_version("champion") is None

    def new_version(f1: float | None, export_ok: bool = True) -> str:
        model_id, run_id = _candidate(client, exp_id, f1, export_ok, tmp_path / "model_files")
        return registry.register(run_id, "model", model_id=model_id)

    v1 = new_version(0.80)
    first = registry.promote_if_better(v1)
    assert first.promoted and "no champion yet" in first.reason
    assert registry.get_alias_version("champion") == v1

    v2 = new_version(0.70)
    worse = registry.promote_if_better(v2)
    assert not worse.promoted and worse.champion_version == v1
    assert registry.get_alias_version("champion") == v1
    assert registry.get_alias_version("challenger") == v2
    tags = registry.get_version(v2).tags
    assert tags["promotion.decision"] == "rejected" and "0.7 < champion v1 0.8" in tags["promotion.reason"]

    v3 = new_version(0.80)
    assert registry.promote_if_better(v3).promoted
    assert registry.get_alias_version("champion") == v3

    v4 = new_version(0.95, export_ok=False)
    blocked = registry.promote_if_better(v4)
    assert not blocked.promoted and "gate failed: export.onnx.status=None" in blocked.reason
    assert registry.get_alias_version("champion") == v3
    assert registry.get_alias_version("challenger") == v4

    v5 = new_version(None)
    missing = registry.promote_if_better(v5)
    assert not missing.promoted and "missing" in missing.reason
    assert registry.get_version(v5).tags["promotion.decision"] == "rejected"

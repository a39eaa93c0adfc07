"""The real entry point in subprocesses: fit on a tiny synthetic config, then validate and predict from the
checkpoint; the MLflow store holds the run, its artifacts and a registered model a fresh process can load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "stress_lightning.cli"]
METRICS = [
    "expression_acc",
    "expression_f1",
    "expression_balanced_acc",
    "hr_mae_bpm",
    "hr_rmse_bpm",
    "hr_pearson",
    "stress_f1",
    "stress_precision",
    "stress_recall",
    "stress_specificity",
    "loss",
]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(args: list[str], tmp: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=REPO, env=_env(tmp), capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


def _tiny_args(tmp: Path) -> list[str]:
    return [
        "--config",
        "conf/synthetic.yaml",
        "--config",
        "conf/tiny.yaml",
        f"--data.init_args.root={tmp / 'corpus'}",
        f"--data.init_args.cache_dir={tmp / 'cache'}",
        f"--trainer.default_root_dir={tmp / 'out'}",
    ]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "mlruns").mkdir()
    _run([*CLI, "fit", *_tiny_args(tmp)], tmp)
    return tmp


def _client(tmp: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")


def test_fit_logs_run_with_metrics_config_and_artifacts(fitted: Path) -> None:
    client = _client(fitted)
    experiment = client.get_experiment_by_name("stress-lightning")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    for stage in ("train", "val", "test"):
        for name in METRICS:
            assert f"{stage}/{name}" in run.data.metrics, f"missing metric {stage}/{name}"
    params = run.data.params
    assert params["model.init_args.net.spatial_backbone"] == "conv4"
    assert "data.init_args.corpus_options.generator.num_subjects" in params
    assert params["data.init_args.expression_classes"].startswith("[")
    tags = run.data.tags
    assert tags.get("git.commit")
    assert tags.get("data.fingerprint")
    assert tags.get("export.onnx.status") == "ok"
    assert tags.get("export.tensorrt.status") in {"ok", "skipped"}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "config" in artifacts and "plots" in artifacts and "export" in artifacts
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"test_expression_confusion.png", "test_stress_confusion.png", "test_hr_bland_altman.png"} <= plots


def test_registered_model_loads_in_fresh_process(fitted: Path) -> None:
    client = _client(fitted)
    version = client.get_model_version_by_alias("stress-multitask", "champion")
    assert client.get_model_version_by_alias("stress-multitask", "challenger").version == version.version
    script = """
import json, sys, numpy as np, mlflow
model = mlflow.pyfunc.load_model("models:/stress-multitask@champion")
rng = np.random.default_rng(0)
frames = rng.random((2, 8, 3, 32, 32), dtype=np.float32)
roi = (0.5 + 0.01 * rng.random((2, 100, 3, 8, 8))).astype(np.float32)
out = model.predict({"frames": frames, "roi": roi})
print(json.dumps({"columns": list(out.columns), "rows": len(out), "hr": out["hr_bpm"].tolist(),
                  "stress": out["stress_level"].tolist()}))
"""
    proc = _run([sys.executable, "-c", script], fitted)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rows"] == 2
    assert {
        "expression",
        "hr_bpm",
        "rmssd_ms",
        "lf_hf_ratio",
        "stress_level",
        "expression_prob_happy",
        "stress_prob_high",
    } <= set(result["columns"])
    assert all(40 <= hr <= 180 for hr in result["hr"])
    assert set(result["stress"]) <= {"low", "normal", "high"}


def _checkpoint(tmp: Path) -> Path:
    checkpoints = sorted((tmp / "out").rglob("*.ckpt"))
    assert checkpoints, f"no checkpoint under {tmp / 'out'}"
    return checkpoints[0]


def test_validate_and_predict_from_checkpoint(fitted: Path) -> None:
    ckpt = _checkpoint(fitted)
    proc = _run([*CLI, "validate", *_tiny_args(fitted), f"--ckpt_path={ckpt}"], fitted)
    assert "val/expression_acc" in proc.stdout + proc.stderr
    _run([*CLI, "predict", *_tiny_args(fitted), f"--ckpt_path={ckpt}"], fitted)
    import pandas as pd

    table = pd.read_csv(fitted / "out" / "predict" / "predictions.csv")
    assert len(table) > 0 and {"clip_index", "expression", "hr_bpm", "stress_level"} <= set(table.columns)


def test_print_config_and_lightning_alias(fitted: Path) -> None:
    proc = _run([*CLI, "fit", *_tiny_args(fitted), "--print_config"], fitted)
    assert "spatial_backbone: conv4" in proc.stdout
    alias = Path(sys.executable).with_name("lightning")
    if alias.exists():
        proc = _run([str(alias), "fit", *_tiny_args(fitted), "--print_config"], fitted)
        assert "corpus: synthetic" in proc.stdout


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--model.init_args.no_such_key=1"], "no_such_key"),
        (["--data.init_args.batch_size=many"], "batch_size"),
        (["--config", "conf/does_not_exist.yaml"], "does_not_exist.yaml"),
    ],
)
def test_bad_config_gives_one_clear_error(tmp_path: Path, extra: list[str], expected: str) -> None:
    proc = _run([*CLI, "fit", *_tiny_args(tmp_path), *extra], tmp_path, check=False)
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_malformed_config_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  init_args: [unclosed\n")
    proc = _run([*CLI, "fit", *_tiny_args(tmp_path), "--config", str(bad)], tmp_path, check=False)
    assert proc.returncode != 0 and "bad.yaml" in proc.stderr

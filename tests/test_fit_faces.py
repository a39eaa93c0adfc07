"""`make fit-faces` in a tiny variant: the real photos in ../shared/data/faces/muxspace go through the real CLI
(reader, face detection and alignment, cache, training, test, MLflow, registry as `stress-faces`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "faces" / "muxspace"

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"{PHOTOS} is absent (the shared real-data folder)"),
]


def test_fit_faces_tiny_registers_stress_faces(tmp_path: Path) -> None:
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", PYTHONUNBUFFERED="1")
    args = [
        sys.executable,
        "-m",
        "stress_lightning.cli",
        "fit",
        "--config",
        "conf/faces.yaml",
        "--config",
        "conf/faces_tiny.yaml",
        f"--data.init_args.root={PHOTOS}",
        f"--data.init_args.cache_dir={tmp_path / 'cache'}",
        f"--trainer.default_root_dir={tmp_path / 'out'}",
    ]
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    # The reader saw both official splits and left contempt out (not one of the run's 7 classes), counted.
    assert "labels left out (not in the run's classes): {'contempt':" in proc.stdout

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    run = client.search_runs([client.get_experiment_by_name("stress-lightning").experiment_id])[0]
    for stage in ("val", "test"):
        assert f"{stage}/expression_balanced_acc" in run.data.metrics
    version = client.get_model_version_by_alias("stress-faces", "challenger")
    assert version.run_id == run.info.run_id
    # The registered model carries the run's class names.
    script = """
import json, numpy as np, mlflow
model = mlflow.pyfunc.load_model("models:/stress-faces@challenger")
frames = np.random.default_rng(0).random((1, 2, 3, 32, 32), dtype=np.float32)
roi = np.zeros((1, 50, 3, 8, 8), np.float32)
print(json.dumps(list(model.predict({"frames": frames, "roi": roi}).columns)))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    columns = json.loads(out.stdout.strip().splitlines()[-1])
    assert {f"expression_prob_{name}" for name in ("angry", "happy", "neutral")} <= set(columns)

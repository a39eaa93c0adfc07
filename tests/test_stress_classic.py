"""The paper's alternative stress heads: the feature builder, the Random Forest and SVM, and the callback that fits
them after a real tiny fit (the CLI in a subprocess) and logs each as a child run with a loadable MLflow model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import f1_score

from stress_lightning.models.heads import physiology_features
from stress_lightning.models.registry import STRESS_CLASSIFIERS, UnknownNameError
from stress_lightning.models.stress_classic import FEATURE_NAMES, feature_names, stress_features
from stress_lightning.tracking.stress_classic import (
    CLASSIFIER_TAG,
    SOURCE_RUN_TAG,
    ClassicStressCallback,
    effective_settings,
    parent_metric_name,
    stress_metrics,
)

REPO = Path(__file__).resolve().parents[1]
STRESS_METRICS = ("test/stress_f1", "test/stress_precision", "test/stress_recall", "test/stress_specificity")
LEVELS = ("low", "normal", "high")


def _outputs(n: int, seed: int = 0, separable: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Network-like outputs for n clips and their stress levels; `separable`: HR, RMSSD and one expression
    probability move with the level, as the synthetic corpus makes them."""
    rng = np.random.default_rng(seed)
    level = np.arange(n) % 3
    logits = rng.normal(size=(n, 7))
    hr = rng.normal(75.0, 4.0, n)
    rmssd = rng.lognormal(np.log(40.0), 0.2, n)
    if separable:
        logits[:, 2] += 1.5 * level  # fear
        hr += 12.0 * level
        rmssd /= 1.6**level
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    lf_hf = rng.lognormal(np.log(1.5), 0.3, n)
    return {"expression_probs": probs, "hr_bpm": hr, "rmssd_ms": rmssd, "lf_hf_ratio": lf_hf}, level


def test_features_are_the_probabilities_and_the_heads_physiology_transform() -> None:
    outputs, _ = _outputs(6)
    features = stress_features(outputs)
    assert features.shape == (6, len(FEATURE_NAMES)) == (6, 10)
    np.testing.assert_allclose(features[:, :7], outputs["expression_probs"])
    expected = physiology_features(*(torch.as_tensor(outputs[k]) for k in ("hr_bpm", "rmssd_ms", "lf_hf_ratio")))
    np.testing.assert_allclose(features[:, 7:], expected.numpy())
    # Tensors (as the network returns them) and [N, 1] columns give the same array.
    as_tensors = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in outputs.items()}
    as_tensors["hr_bpm"] = as_tensors["hr_bpm"][:, None]
    np.testing.assert_allclose(stress_features(as_tensors), features, rtol=1e-5, atol=1e-5)
    assert FEATURE_NAMES[0] == "expression_prob_angry" and FEATURE_NAMES[7:] == ("hr_z", "log_rmssd_z", "log_lf_hf_z")
    assert feature_names(["calm", "tense"]) == ["expression_prob_calm", "expression_prob_tense", *FEATURE_NAMES[7:]]

    with pytest.raises(ValueError, match=r"lack \['lf_hf_ratio'\]"):
        stress_features({k: v for k, v in outputs.items() if k != "lf_hf_ratio"})
    with pytest.raises(ValueError, match="hr_bpm has 5 values for 6 rows"):
        stress_features({**outputs, "hr_bpm": outputs["hr_bpm"][:5]})
    with pytest.raises(ValueError, match=r"non-finite features in 1 row\(s\), first \[2\]"):
        stress_features({**outputs, "hr_bpm": np.where(np.arange(6) == 2, np.nan, outputs["hr_bpm"])})


@pytest.mark.parametrize("method", ["random_forest", "svm"])
def test_each_classifier_fits_and_beats_chance_reproducibly(method: str) -> None:
    train_out, train_y = _outputs(90, seed=1, separable=True)
    test_out, test_y = _outputs(45, seed=2, separable=True)
    train_x, test_x = stress_features(train_out), stress_features(test_out)
    names = np.asarray(LEVELS, dtype=object)
    estimator = STRESS_CLASSIFIERS.build(method).fit(train_x, names[train_y])
    pred = np.asarray([LEVELS.index(p) for p in estimator.predict(test_x)])
    assert f1_score(test_y, pred, average="macro") > 0.7  # chance: about 0.33
    assert estimator.predict_proba(test_x).shape == (45, 3)
    again = STRESS_CLASSIFIERS.build(method).fit(train_x, names[train_y])
    np.testing.assert_array_equal(again.predict(test_x), estimator.predict(test_x))  # seeded


def test_stress_metrics_are_the_modules_macro_averages() -> None:
    true = np.array([0, 0, 1, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0, 2])
    metrics = stress_metrics(pred, true, num_expressions=7, num_stress=3)
    assert set(metrics) == set(STRESS_METRICS)
    assert metrics["test/stress_f1"] == pytest.approx(f1_score(true, pred, average="macro"), abs=1e-6)


def test_bad_methods_and_settings_are_refused_when_the_config_is_read() -> None:
    with pytest.raises(UnknownNameError, match="unknown stress classifier 'xgboost'; known names: random_forest, svm"):
        ClassicStressCallback(methods=["random_forest", "xgboost"])
    with pytest.raises(ValueError, match=r"settings for \['svm'\], which are not in methods \['random_forest'\]"):
        ClassicStressCallback(methods=["random_forest"], settings={"svm": {"C": 2.0}})
    with pytest.raises(TypeError, match="building stress classifier 'random_forest' with \\['n_trees'\\]"):
        ClassicStressCallback(settings={"random_forest": {"n_trees": 10}})
    with pytest.raises(ValueError, match="name a classifier twice"):
        ClassicStressCallback(methods=["svm", "svm"])
    assert effective_settings("random_forest", {"max_depth": 4}) == {
        "n_estimators": 300,
        "class_weight": "balanced",
        "random_state": 0,
        "max_depth": 4,
    }


def test_conf_part_appends_the_callback_to_the_run_s_list(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """conf/experiment/stress_classic.yaml adds the callback to the list the run already has (`callbacks+`)."""
    from stress_lightning.cli import main

    monkeypatch.chdir(REPO)
    monkeypatch.setattr("sys.argv", ["stress-lightning"])
    args = [
        "fit",
        "--print_config",
        "--config",
        "conf/synthetic.yaml",
        "--config",
        "conf/experiment/stress_classic.yaml",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    callbacks = yaml.safe_load(captured.out)["trainer"]["callbacks"]
    default = yaml.safe_load((REPO / "conf/callbacks/default.yaml").read_text())
    assert [c["class_path"] for c in callbacks[:-1]] == [c["class_path"] for c in default]
    last = callbacks[-1]
    assert last["class_path"] == "stress_lightning.tracking.stress_classic.ClassicStressCallback"
    assert ClassicStressCallback(**last["init_args"]).methods == ["random_forest", "svm"]


# -- the callback after a real fit ------------------------------------------------------------------------------
def test_callback_logs_a_child_run_per_classifier_with_a_loadable_model(tmp_path: Path) -> None:
    import mlflow

    from stress_lightning.tracking.store import use_tracking_uri

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    # The run's provenance tags and this callback: the default list's export and registration are tested elsewhere
    # and cost time here.
    callbacks = [
        {"class_path": "stress_lightning.tracking.callbacks.MLflowRunCallback"},
        {
            "class_path": "stress_lightning.tracking.stress_classic.ClassicStressCallback",
            "init_args": {"settings": {"random_forest": {"n_estimators": 20}, "svm": {"calibration_folds": 2}}},
        },
    ]
    args = [
        *("--config", "conf/synthetic.yaml", "--config", "conf/tiny.yaml"),
        f"--data.init_args.root={tmp_path / 'corpus'}",
        f"--data.init_args.cache_dir={tmp_path / 'cache'}",
        f"--trainer.default_root_dir={tmp_path / 'out'}",
        f"--trainer.callbacks={json.dumps(callbacks)}",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "stress_lightning.cli", "fit", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("stress-lightning")
    runs = client.search_runs([experiment.experiment_id])
    fits = [r for r in runs if CLASSIFIER_TAG not in r.data.tags]
    assert len(fits) == 1 and len(runs) == 3
    fit = fits[0]
    children = {r.data.tags[CLASSIFIER_TAG]: r for r in runs if CLASSIFIER_TAG in r.data.tags}
    assert set(children) == {"random_forest", "svm"}
    for method, child in children.items():
        tags, params, metrics = child.data.tags, child.data.params, child.data.metrics
        assert tags["mlflow.parentRunId"] == tags[SOURCE_RUN_TAG] == fit.info.run_id
        assert tags["git.commit"] == fit.data.tags["git.commit"] and tags["mlflow.runName"].endswith(f"-{method}")
        assert child.info.status == "FINISHED"
        assert set(STRESS_METRICS) <= set(metrics) and all(0.0 <= metrics[k] <= 1.0 for k in STRESS_METRICS)
        assert fit.data.metrics[parent_metric_name(method)] == pytest.approx(metrics["test/stress_f1"])
        assert params["method"] == method and params["features"] == ",".join(FEATURE_NAMES)
        assert int(params["train_samples"]) > 0 and int(params["test_samples"]) > 0
        assert params["stress_levels"] == "low,normal,high"
        plots = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
        assert plots == {"plots/test_stress_confusion.png"}

        with use_tracking_uri(uri):
            model = mlflow.pyfunc.load_model(f"runs:/{child.info.run_id}/model")
        assert model.metadata.get_input_schema().input_names() == list(FEATURE_NAMES)
        example, _ = _outputs(4, separable=True)
        predicted = model.predict(pd.DataFrame(stress_features(example), columns=list(FEATURE_NAMES)))
        assert len(predicted) == 4 and set(np.asarray(predicted).tolist()) <= set(LEVELS)
    assert "ClassicStressCallback: random_forest test/stress_f1" in proc.stdout + proc.stderr

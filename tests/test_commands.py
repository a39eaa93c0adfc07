"""`stress-lightning data summary|corpora` and `stress-lightning evaluate`, run in-process through `cli.main`."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import lightning.pytorch as pl
import numpy as np
import pytest
from mlflow import MlflowClient

from stress_lightning.cli import main
from stress_lightning.data.corpora import CORPORA, build_corpus
from stress_lightning.models.module import MultiTaskStressModule
from stress_lightning.tracking.pyfunc import log_pyfunc_model
from stress_lightning.tracking.registry import ModelRegistry
from stress_lightning.tracking.store import ensure_experiment

TINY_GENERATOR = {"num_subjects": 4, "duration_s": 6.0, "fps": 25.0, "width": 64, "height": 64, "seed": 0}
TINY_NET = {"spatial_backbone": "conv4", "temporal_backbone": "c3d_small", "rppg_backbone": "rppg_cnn"}
FIXED_METRICS = {
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
    "loss_expression",
    "loss_hr",
    "loss_hrv",
    "loss_stress",
    "loss_ppg",
}
SUMMARY_KEYS = {"corpus", "splits", "expression", "unmapped", "stress", "cardiac", "problems"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("commands")


@pytest.fixture(scope="module")
def synthetic_root(workdir: Path) -> Path:
    root = workdir / "synthetic"
    build_corpus("synthetic", generator=TINY_GENERATOR).prepare(root, progress=False)
    return root


@pytest.fixture(scope="module")
def image_root(workdir: Path) -> Path:
    """train/{happy,sad,contempt}/ and val/happy/ (no test folder), one corrupt train image."""
    root = workdir / "faces"
    rng = np.random.default_rng(0)
    layout = {("train", "happy"): 3, ("train", "sad"): 2, ("train", "contempt"): 2, ("val", "happy"): 1}
    for (split, label), count in layout.items():
        folder = root / split / label
        folder.mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            assert cv2.imwrite(str(folder / f"{split}{label}_{i}.jpg"), image)
    (root / "train" / "happy" / "broken_0.jpg").write_bytes(b"this is not a jpeg")
    return root


def _run_json(capsys: pytest.CaptureFixture, args: list[str]) -> dict:
    capsys.readouterr()
    main(args)
    return json.loads(capsys.readouterr().out)


# -- data -------------------------------------------------------------------------------------------------------
def test_data_corpora_lists_names_layout_and_url(capsys: pytest.CaptureFixture) -> None:
    main(["data", "corpora"])
    out = capsys.readouterr().out
    for name in CORPORA.names():
        assert name in out
    assert "layout:" in out and "url:" in out
    listed = _run_json(capsys, ["data", "corpora", "--json"])
    assert {e["name"] for e in listed} == set(CORPORA.names())
    assert all(e["layout"] for e in listed)


def test_summary_of_synthetic_corpus(synthetic_root: Path, capsys: pytest.CaptureFixture) -> None:
    summary = _run_json(capsys, ["data", "summary", "--corpus", "synthetic", "--root", str(synthetic_root), "--json"])
    assert set(summary) == SUMMARY_KEYS
    assert summary["corpus"] == "synthetic"
    splits = summary["splits"]
    assert set(splits) == {"train", "val", "test"}
    assert sum(s["subjects"] for s in splits.values()) == 4
    assert sum(s["items"] for s in splits.values()) == 12  # 3 sessions per subject
    for counts in splits.values():
        assert counts["items"] == 3 * counts["subjects"]
    assert summary["stress"] == {"low": 4, "normal": 4, "high": 4}
    assert summary["cardiac"] == {"ecg": 12, "ppg": 0, "hr": 0, "none": 0}
    assert summary["problems"] == [] and summary["unmapped"] == {}
    # Each event's label once per item.
    items = build_corpus("synthetic").read_checked(synthetic_root)
    events = sum(len(item.expression.events) for item in items)
    assert sum(summary["expression"].values()) == events
    assert list(summary["expression"]) == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]

    main(["data", "summary", "--corpus", "synthetic", "--root", str(synthetic_root)])
    text = capsys.readouterr().out
    assert "subjects" in text and "ecg" in text and "problems: 0" in text
    assert "rest periods not counted" in text


def test_summary_of_image_folder_with_unmapped_corrupt_and_missing_split(
    image_root: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["data", "summary", "--corpus", "image_folder", "--root", str(image_root), "--option", "test_fraction=0"]
    summary = _run_json(capsys, [*args, "--json"])
    assert set(summary) == SUMMARY_KEYS
    assert summary["splits"]["train"]["items"] == 8  # 7 images + the broken one
    assert summary["splits"]["val"]["items"] == 1
    assert summary["splits"]["test"] == {"items": 0, "subjects": 0}
    assert summary["expression"]["happy"] == 5 and summary["expression"]["sad"] == 2
    assert summary["unmapped"] == {"contempt": 2}
    assert summary["cardiac"] == {"ecg": 0, "ppg": 0, "hr": 0, "none": 9}
    assert summary["stress"] == {"low": 0, "normal": 0, "high": 0}
    broken = str(image_root / "train" / "happy" / "broken_0.jpg")
    assert [p["path"] for p in summary["problems"]] == [broken]
    assert summary["problems"][0]["reason"]

    # contempt becomes a class when the run lists it.
    eight = "angry,disgust,fear,happy,sad,surprise,neutral,contempt"
    summary = _run_json(capsys, [*args, "--json", "--expression-classes", eight])
    assert summary["expression"]["contempt"] == 2 and summary["unmapped"] == {}

    # --no-check does not open the files.
    summary = _run_json(capsys, [*args, "--json", "--no-check"])
    assert summary["problems"] == []

    main(args)
    text = capsys.readouterr().out
    assert "contempt (unmapped)" in text and broken in text and "problems: 1" in text


def test_summary_usage_and_read_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "summary", "--corpus", "no_such_corpus", "--root", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no_such_corpus" in err and "synthetic" in err and "image_folder" in err

    missing = tmp_path / "does_not_exist"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "summary", "--corpus", "image_folder", "--root", str(missing)])
    assert exit_info.value.code == 1
    assert str(missing) in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:
        main(["data", "summary", "--corpus", "synthetic", "--root", str(tmp_path)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "corpus.json" in err and str(tmp_path) in err

    with pytest.raises(SystemExit) as exit_info:
        main(["data", "summary", "--corpus", "image_folder", "--root", str(tmp_path), "--option", "novalue"])
    assert exit_info.value.code == 2


# -- evaluate ---------------------------------------------------------------------------------------------------
def _tiny_module() -> MultiTaskStressModule:
    pl.seed_everything(0)
    return MultiTaskStressModule(net=TINY_NET, fps=25.0, roi_frames=100, face_frames=8, face_size=32, roi_size=8)


@pytest.fixture(scope="module")
def checkpoint(workdir: Path) -> tuple[Path, MultiTaskStressModule]:
    module = _tiny_module()
    trainer = pl.Trainer(
        logger=False, enable_checkpointing=False, accelerator="cpu", default_root_dir=workdir, enable_progress_bar=False
    )
    trainer.strategy.connect(module)
    path = workdir / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return path, module


def _evaluate_args(model: str, root: Path, workdir: Path, *extra: str) -> list[str]:
    return [
        "evaluate",
        "--model",
        model,
        "--corpus",
        "synthetic",
        "--root",
        str(root),
        "--cache-dir",
        str(workdir / "cache"),
        "--batch-size",
        "4",
        "--json",
        *extra,
    ]


@pytest.fixture(scope="module")
def checkpoint_result(checkpoint, synthetic_root: Path, workdir: Path) -> dict:
    # Module-scoped capture: run once, shared by the checkpoint and registry tests.
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        main(_evaluate_args(str(checkpoint[0]), synthetic_root, workdir))
    return json.loads(buffer.getvalue())


def test_evaluate_checkpoint_prints_fixed_metric_names(checkpoint_result: dict, checkpoint) -> None:
    result = checkpoint_result
    assert set(result) == {"model", "corpus", "split", "samples", "metrics"}
    assert result["model"] == str(checkpoint[0]) and result["corpus"] == "synthetic" and result["split"] == "test"
    assert result["samples"] > 0
    names = set(result["metrics"])
    assert all(name.startswith("test/") for name in names)
    assert {name.removeprefix("test/") for name in names} <= FIXED_METRICS
    for name in ("loss", "expression_acc", "expression_f1", "hr_mae_bpm", "stress_f1", "stress_specificity"):
        assert f"test/{name}" in names
    assert all(np.isfinite(v) for v in result["metrics"].values())


def test_evaluate_val_split_uses_val_prefix(
    checkpoint, synthetic_root: Path, workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    result = _run_json(capsys, _evaluate_args(str(checkpoint[0]), synthetic_root, workdir, "--split", "val"))
    assert result["split"] == "val" and result["samples"] > 0
    assert result["metrics"] and all(name.startswith("val/") for name in result["metrics"])
    assert "val/stress_f1" in result["metrics"]


def test_evaluate_registered_model_matches_checkpoint(
    checkpoint,
    checkpoint_result: dict,
    synthetic_root: Path,
    workdir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    module = checkpoint[1]
    client = MlflowClient(uri)
    run_id = client.create_run(ensure_experiment("train", uri)).info.run_id
    frames, roi = module.example_input(1)
    names = {"expression": module.expression_names, "stress": module.stress_names}
    info = log_pyfunc_model(
        module.net, names, {"frames": frames.numpy(), "roi": roi.numpy()}, run_id=run_id, tracking_uri=uri
    )
    ModelRegistry(tracking_uri=uri).register(run_id, "model", name="tiny-stress", model_id=info.model_id)

    args = _evaluate_args("models:/tiny-stress@challenger", synthetic_root, workdir)
    result = _run_json(capsys, [*args, "--log-mlflow", "--experiment", "evaluations"])
    assert result["samples"] == checkpoint_result["samples"]
    assert set(result["metrics"]) == set(checkpoint_result["metrics"])
    for name, value in checkpoint_result["metrics"].items():
        assert result["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name

    by_version = _run_json(capsys, _evaluate_args("models:/tiny-stress/1", synthetic_root, workdir))
    assert by_version["metrics"] == pytest.approx(result["metrics"])

    # Only --log-mlflow logs, into the named experiment.
    experiment = client.get_experiment_by_name("evaluations")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    logged = runs[0].data
    assert logged.params["model"] == "models:/tiny-stress@challenger"
    assert logged.params["corpus"] == "synthetic" and logged.params["split"] == "test"
    assert logged.params["root"] == str(synthetic_root)
    assert logged.metrics == pytest.approx(result["metrics"])
    all_runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(all_runs) == 2  # the training run and the one evaluation logged


def test_evaluate_errors(synthetic_root: Path, workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(SystemExit) as exit_info:
        main(_evaluate_args(str(missing), synthetic_root, workdir))
    assert exit_info.value.code == 1
    assert str(missing) in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", str(missing), "--corpus", "unknown", "--root", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "synthetic" in capsys.readouterr().err


def test_lightning_subcommands_still_go_to_lightning_cli(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    assert "--data" in capsys.readouterr().out

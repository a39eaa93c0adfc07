"""What a user sees for a bad option, config file or checkpoint: one line that names it, exit status 2, and no MLflow
run (the config never started). Errors found during work exit 1; a bug keeps its traceback.

Most cases run `stress_lightning.cli.main` in this process: a CLI start in a subprocess costs 10-20 s of imports. One
case runs the real entry point in a subprocess, for the process's own exit status and stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning
import pytest
import torch
from mlflow import MlflowClient

from stress_lightning.cli import exit_status, main, reported_error
from stress_lightning.data.errors import CorpusError
from stress_lightning.tracking.spool import PendingRun
from stress_lightning.tracking.store import StressMLFlowLogger

REPO = Path(__file__).resolve().parents[1]
TINY = ["--config", "conf/synthetic.yaml", "--config", "conf/tiny.yaml"]
BASIC = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def _runs(store_uri: str) -> list:
    client = MlflowClient(store_uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _error_block(stderr: str) -> str:
    """The `error: ...` line (and at most one more) that ends stderr; no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(starts) == 1, stderr
    block = lines[starts[0] :]
    assert len(block) <= 2, stderr
    return "\n".join(block)


@pytest.fixture
def cli(tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """`run(subcommand, *options)` -> (exit status, stderr, stdout) of `main` on the tiny config, with the corpus,
    cache, outputs and MLflow store under tmp_path."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    monkeypatch.setattr(sys, "argv", ["stress-lightning"])  # LightningCLI warns when argv and args both hold options
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # seed_everything sets them for the rest of the process
        monkeypatch.delenv(name, raising=False)

    def run(subcommand: str, *options: str) -> tuple[int, str, str]:
        args = [
            subcommand,
            *TINY,
            f"--data.init_args.root={tmp_path / 'corpus'}",
            f"--data.init_args.cache_dir={tmp_path / 'cache'}",
            f"--trainer.default_root_dir={tmp_path / 'out'}",
            *(o.format(tmp=tmp_path) for o in options),
        ]
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(args)
        captured = capsys.readouterr()
        return exited.value.code, captured.err, captured.out

    return run


# (what was tried, options ({tmp}: the test's folder), what the message must name, found while parsing)
CONFIG_CASES = [
    ("unknown key in the data module's arguments", ["--data.init_args.bogus", "3"], "data.init_args.bogus", True),
    ("unknown top-level option", ["--bogus", "3"], "--bogus", True),
    ("int option given `abc`", ["--data.init_args.batch_size", "abc"], "data.init_args.batch_size", True),
    ("`trainer.max_epochs -3`", ["--trainer.max_epochs", "-3"], "max_epochs", False),
    (
        "unknown spatial backbone `efficientnet_b9`",
        ["--model.init_args.net.spatial_backbone", "efficientnet_b9"],
        "model.init_args.net.spatial_backbone: unknown spatial backbone 'efficientnet_b9'; known names: conv4",
        False,
    ),
    ("unknown corpus name", ["--data.init_args.corpus", "nosuch"], "data.init_args.corpus: unknown corpus", False),
    (
        "corpus option of the wrong type (`generator.num_subjects x`)",
        ["--data.init_args.corpus_options.generator.num_subjects", "x"],
        "num_subjects",
        False,
    ),
    ("`--config` file that does not exist", ["--config", "{tmp}/missing.yaml"], "missing.yaml", True),
    ("`--config` file that is not valid YAML", ["--config", "{tmp}/broken.yaml"], "broken.yaml", True),
]


@pytest.mark.parametrize(("case", "options", "named", "at_parse"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_is_one_line_exit_2_and_no_run(
    cli, bad_input, tmp_path: Path, store_uri: str, case: str, options: list[str], named: str, at_parse: bool
) -> None:
    (tmp_path / "broken.yaml").write_text("model:\n  init_args: [unclosed\n", encoding="utf-8")
    status, stderr, _ = cli("fit", *options)
    block = _error_block(stderr)
    bad_input.record("configs", case, block, exit_status=status)
    assert status == 2
    assert named in block
    if at_parse:
        assert len(stderr.strip().splitlines()) <= 3, stderr  # nothing else: no usage dump
    assert _runs(store_uri) == []


def test_clip_longer_than_every_video_exits_2_without_a_run(tmp_path: Path, store_uri: str, bad_input) -> None:
    # The reproduction, through the real entry point: a CorpusError from the data module's setup used to end
    # in a traceback, exit status 1 and an MLflow run left FAILED. The corpus is rendered and cached in this process
    # (workers=0): each spawned worker would pay the imports again.
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-m",
        "stress_lightning.cli",
        "fit",
        *TINY,
        f"--data.init_args.root={tmp_path / 'corpus'}",
        f"--data.init_args.cache_dir={tmp_path / 'cache'}",
        f"--trainer.default_root_dir={tmp_path / 'out'}",
        "--data.init_args.workers=0",
        "--data.init_args.clip_seconds",
        "100",
    ]
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    block = _error_block(proc.stderr)
    bad_input.record("configs", "`clip_seconds 100` (longer than every video)", block, exit_status=proc.returncode)
    assert proc.returncode == 2
    assert "the train split yields no samples" in block and "shorter than a clip" in block
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert _runs(store_uri) == []


def _checkpoint(path: Path, classes: list[str], with_taxonomy: bool = True) -> Path:
    """A checkpoint as `fit` on the tiny config writes it, with another expression taxonomy."""
    from stress_lightning.models.module import MultiTaskStressModule

    net = {"spatial_backbone": "conv4", "temporal_backbone": "c3d_small", "rppg_backbone": "rppg_cnn"}
    module = MultiTaskStressModule(
        net=net, expression_classes=classes, roi_frames=100, face_size=32, corpora=["synthetic"]
    )
    hparams = {"_class_path": "stress_lightning.models.module.MultiTaskStressModule", **module.hparams}
    if not with_taxonomy:
        hparams.pop("expression_classes")
    checkpoint = {
        "epoch": 0,
        "global_step": 2,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": module.state_dict(),
        "hyper_parameters": hparams,
    }
    torch.save(checkpoint, path)
    return path


def _bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.ckpt"
    if kind == "garbage":
        path.write_bytes(bytes(range(256)) + b"x" * 44)  # 300 bytes, none of them a checkpoint
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    elif kind == "contempt":
        _checkpoint(path, [*BASIC, "contempt"])
    elif kind == "contempt_untagged":
        _checkpoint(path, [*BASIC, "contempt"], with_taxonomy=False)
    return path  # "missing": never written


# (what was tried, subcommand, file kind, what the message must say)
CHECKPOINT_CASES = [
    ("`fit --ckpt_path` to a missing file", "fit", "missing", "no such file"),
    ("`validate --ckpt_path` to a missing file", "validate", "missing", "no such file"),
    ("`test --ckpt_path` to a missing file", "test", "missing", "no such file"),
    ("`predict --ckpt_path` to a missing file", "predict", "missing", "no such file"),
    ("`fit --ckpt_path` to a 300-byte file that is not a checkpoint", "fit", "garbage", "not a checkpoint torch can"),
    ("`predict --ckpt_path` to a 300-byte file that is not a checkpoint", "predict", "garbage", "not a checkpoint"),
    ("`test --ckpt_path` to an empty file", "test", "empty", "an empty file, not a checkpoint"),
    ("`validate --ckpt_path` to a folder", "validate", "folder", "a folder, not a checkpoint file"),
    (
        "`fit --ckpt_path` of a model trained on 8 expression classes, data with 7",
        "fit",
        "contempt",
        "its expression head was trained for 8 classes",
    ),
    (
        "`test --ckpt_path` of a model trained on 8 expression classes, data with 7",
        "test",
        "contempt",
        "this config's data.init_args.expression_classes has 7",
    ),
    (
        "`validate --ckpt_path` whose heads do not fit and whose hyperparameters omit the taxonomy",
        "validate",
        "contempt_untagged",
        "net.expression_head.mlp.1.3.weight has shape (8, 256) there and (7, 256)",
    ),
]


@pytest.mark.parametrize(("case", "subcommand", "kind", "says"), CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_bad_checkpoint_is_one_line_exit_2_and_no_run(
    cli, bad_input, tmp_path: Path, store_uri: str, case: str, subcommand: str, kind: str, says: str
) -> None:
    path = _bad_file(tmp_path, kind)
    status, stderr, _ = cli(subcommand, f"--ckpt_path={path}")
    block = _error_block(stderr)
    bad_input.record("checkpoints", case, block, exit_status=status)
    assert status == 2
    assert f"--ckpt_path {path}: " in block and says in block
    assert _runs(store_uri) == []


def test_help_and_print_config_still_work(cli) -> None:
    status, _, out = cli("fit", "--print_config")
    assert status in (0, None) and "spatial_backbone: conv4" in out
    status, _, out = cli("fit", "--data.help", "ClipDataModule")
    assert status in (0, None) and "--data.clip_seconds" in out


def test_input_error_from_a_dataloader_worker_is_one_line_exit_1() -> None:
    # torch re-raises a worker's error in the main process as a RuntimeError holding the worker's traceback
    # (CorpusError takes two arguments); found during work, it is exit status 1, as a corrupt video in epoch 3.
    from torch._utils import ExceptionWrapper

    try:
        raise CorpusError("corpus/s01.mp4", "truncated: decoding stopped at frame 40 of 150")
    except CorpusError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(RuntimeError) as caught:
        wrapper.reraise()
    from stress_lightning.cli import error_message

    reported = reported_error(caught.value, started=True)
    assert reported is caught.value
    assert exit_status(reported, started=True) == 1
    assert error_message(reported) == "corpus/s01.mp4: truncated: decoding stopped at frame 40 of 150"
    # A bug is not reported as the user's input: its traceback stays.
    assert reported_error(KeyError("state_dict"), started=False) is None


# -- the MLflow run exists only once work needs it -----------------------------------------------------------------
def test_logger_creates_its_run_on_first_need_and_ends_it_with_end_status(store_uri: str) -> None:
    logger = StressMLFlowLogger(experiment_name="lazy", tracking_uri=store_uri)
    client = logger.experiment  # what Lightning touches before prepare_data/setup
    assert logger.experiment_id is not None and not logger.run_created
    logger.finalize("failed")  # a fit that failed before it started: nothing to end
    assert _runs(store_uri) == []

    run_id = logger.run_id
    assert logger.run_created and [r.info.run_id for r in _runs(store_uri)] == [run_id]
    logger.end_status = "KILLED"
    logger.finalize("success")
    assert client.get_run(run_id).info.status == "KILLED"

    # A resumed run is reopened (RUNNING, resume.count) when it is first needed, not when the logger is touched.
    resumed = StressMLFlowLogger(experiment_name="lazy", tracking_uri=store_uri)
    resumed.resume(run_id, checkpoint="last.ckpt")
    _ = resumed.experiment
    assert client.get_run(run_id).info.status == "KILLED"
    assert resumed.run_id == run_id
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.tags["resume.count"] == "1"
    resumed.finalize("success")
    assert client.get_run(run_id).info.status == "FINISHED"


def test_end_status_reaches_the_pending_file_when_the_store_is_away(
    store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = StressMLFlowLogger(experiment_name="away", tracking_uri=store_uri, spool_dir=str(tmp_path / "pending"))
    run_id = logger.run_id
    monkeypatch.setattr(logger, "_unreachable", lambda: "ConnectionError: [Errno 111] Connection refused")
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.end_status = "KILLED"
    with pytest.warns(UserWarning) as warned:
        logger.finalize("success")  # a stopped run warns about the kept file instead of raising over its own stop
    assert any("did not come back" in str(w.message) for w in warned)
    entries = PendingRun.load(tmp_path / "pending" / f"{run_id}.jsonl").entries
    assert entries[-1] == {"kind": "end", "status": "KILLED"}

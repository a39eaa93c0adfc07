"""Resuming a fit continues its MLflow run: the run a checkpoint belongs to, and `--ckpt_path last`.

Checkpoints written while an MLflow logger is active carry `checkpoint[CHECKPOINT_RUN_KEY] = {"run_id",
"experiment_id", "tracking_uri"}` (MLflowRunCallback.on_save_checkpoint). Older checkpoints are recognised by
Lightning's default folder layout `<root>/<experiment_id>/<run_id>/checkpoints/<file>.ckpt`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from mlflow.exceptions import MlflowException

CHECKPOINT_RUN_KEY = "stress_lightning.mlflow"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def _read_plain(path: Path) -> dict[str, Any] | None:
    # weights_only and memory-mapped: only the small entries are looked at, and nothing in the file is executed.
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - Lightning reports an unreadable checkpoint when it loads it
        rank_zero_warn(f"{path}: not read as plain data ({type(err).__name__}); its run is taken from its folder")
        return None
    return checkpoint if isinstance(checkpoint, dict) else None


def _run_of(path: Path, checkpoint: dict[str, Any] | None) -> dict[str, str] | None:
    info = checkpoint.get(CHECKPOINT_RUN_KEY) if checkpoint is not None else None
    if isinstance(info, dict) and info.get("run_id"):
        return {str(k): str(v) for k, v in info.items()}
    # Lightning's default layout for an MLflow logger: <root>/<experiment_id>/<run_id>/checkpoints/<file>.ckpt
    parts = path.resolve().parts
    if len(parts) >= 3 and parts[-2] == "checkpoints" and _RUN_ID.match(parts[-3]):
        return {"run_id": parts[-3], "experiment_id": parts[-4] if len(parts) >= 4 else ""}
    return None


def checkpoint_run(path: str | Path) -> dict[str, str] | None:
    """The MLflow run a checkpoint was written by: {"run_id", ...}, or None when it does not say."""
    path = Path(path)
    return _run_of(path, _read_plain(path))


def last_checkpoint(trainer: Trainer, experiment_id: str | None) -> Path | None:
    """What `--ckpt_path last` means for an MLflow-logged fit: the newest `last*.ckpt` of this experiment.

    Lightning looks for `last.ckpt` in the checkpoint folder of the *current* run, which for an MLflow logger is a
    new run's folder (`<root>/<experiment_id>/<run_id>/checkpoints`), so it never finds one. Here: a ModelCheckpoint
    with an explicit `dirpath` is searched there; otherwise every run folder of the experiment under the trainer's
    `default_root_dir`.
    """
    folders: list[Path] = []
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            folders.append(Path(callback.dirpath))
    candidates = [p for folder in folders for p in folder.glob("last*.ckpt")]
    if not folders and experiment_id is not None:
        root = Path(trainer.default_root_dir) / str(experiment_id)
        candidates = list(root.glob("*/checkpoints/last*.ckpt"))
    candidates = [p for p in candidates if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def _searched(trainer: Trainer, experiment_id: str | None) -> str:
    folders = [str(c.dirpath) for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.dirpath]
    if not folders:
        folders = [str(Path(trainer.default_root_dir) / str(experiment_id) / "*" / "checkpoints")]
    return ", ".join(folders)


def prepare_resume(trainer: Trainer, logger: Any, ckpt_path: str | None) -> tuple[str | None, int | None]:
    """Point `logger` (a StressMLFlowLogger) at the run of the checkpoint a fit resumes from; returns the checkpoint
    path to hand to `trainer.fit` (`last` resolved to a file, other values unchanged) and the step it was saved at
    (None when no checkpoint file was read).

    A checkpoint whose run is not in this tracking store (copied from elsewhere) starts a new run tagged
    `resumed_from.run_id` / `resumed_from.checkpoint`, with a warning.
    """
    if not ckpt_path or ckpt_path in ("best", "hpc", "registry") or ckpt_path.startswith("registry:"):
        return ckpt_path, None
    if ckpt_path == "last":
        from stress_lightning.tracking.store import ensure_experiment

        experiment_id = ensure_experiment(logger._experiment_name, logger.tracking_uri, logger._artifact_root)
        found = last_checkpoint(trainer, experiment_id)
        if found is None:
            # Training starts from scratch in a new run (Lightning's behaviour for `last` without a file); the runs a
            # killed process left RUNNING are closed as the fit starts (tracking.lifecycle.FaultTolerance).
            rank_zero_warn(
                f"--ckpt_path last: no last*.ckpt under {_searched(trainer, experiment_id)}; training starts from "
                "scratch in a new MLflow run"
            )
            return None, None
        rank_zero_info(f"--ckpt_path last: resuming from {found}")
        path = found
    else:
        path = Path(ckpt_path)
        if not path.is_file():
            return ckpt_path, None  # Lightning reports a missing file itself
    checkpoint = _read_plain(path)
    step = checkpoint.get("global_step") if checkpoint is not None else None
    step = step if isinstance(step, int) else None
    info = _run_of(path, checkpoint)
    if info is None:
        rank_zero_warn(f"{path} does not say which MLflow run wrote it; the resumed fit logs to a new run")
        return str(path), step
    run_id = info["run_id"]
    from mlflow import MlflowClient

    try:
        MlflowClient(logger.tracking_uri).get_run(run_id)
    except MlflowException:
        rank_zero_warn(
            f"{path} was written by MLflow run {run_id}, which is not in this tracking store; the resumed fit logs "
            "to a new run tagged resumed_from.run_id"
        )
        logger.tags = {**(logger.tags or {}), "resumed_from.run_id": run_id, "resumed_from.checkpoint": str(path)}
        return str(path), step
    logger.resume(run_id, checkpoint=str(path))
    rank_zero_info(f"Resuming MLflow run {run_id} from {path}")
    return str(path), step

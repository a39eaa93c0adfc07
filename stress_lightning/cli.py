"""LightningCLI entry point: `stress-lightning fit|validate|test|predict --config conf/<experiment>.yaml`.

The same `main` is installed as the `lightning` command, which the `lightning` package no longer ships.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import yaml

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network call on import

from lightning.pytorch import LightningDataModule, LightningModule, Trainer  # noqa: E402
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback  # noqa: E402
from lightning.pytorch.loggers import MLFlowLogger  # noqa: E402
from lightning.pytorch.utilities import rank_zero_info  # noqa: E402

import stress_lightning.data.mixed  # noqa: E402, F401  (MixedDataModule, importable by class_path)
from stress_lightning.commands import COMMANDS  # noqa: E402
from stress_lightning.commands import run as run_command  # noqa: E402
from stress_lightning.models.module import MultiTaskStressModule  # noqa: E402
from stress_lightning.tracking.params import flatten_config, log_config  # noqa: E402
from stress_lightning.tracking.resume import checkpoint_run, prepare_resume  # noqa: E402
from stress_lightning.tracking.store import (  # noqa: E402
    StressMLFlowLogger,
    TrackingSyncError,
    TrackingUnavailableError,
    check_tracking_reachable,
    resolve_tracking_uri,
)


class MLflowSaveConfigCallback(SaveConfigCallback):
    """Logs the resolved config to the MLflow run: the YAML as an artifact and every key as a flat parameter."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)]
        if not loggers or trainer.global_rank != 0:
            return
        yaml_text = self.parser.dump(self.config, skip_none=False)
        flat = flatten_config(self.config.as_dict())
        for logger in loggers:
            log_config(logger.run_id, yaml_text, flat, client=logger.experiment)


class StressLightningCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After `fit`, test the best checkpoint on the held-out split (this runs export and registration "
            "callbacks). Used by `fit` only.",
        )
        for name in (
            "expression_classes",
            "stress_levels",
            "fps",
            "roi_frames",
            "face_frames",
            "face_size",
            "roi_size",
        ):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.link_arguments("data.corpus_names", "model.init_args.corpora", apply_on="instantiate")
        parser.link_arguments("data.face_pipeline", "model.init_args.face_pipeline", apply_on="instantiate")

    def instantiate_classes(self) -> None:
        # Before anything is built: an MLflow logger's client opens a database store as it is constructed, and a
        # failure inside jsonargparse's instantiation would surface as "does not validate against any of the Union
        # subtypes". Probe each configured MLflow store first and fail with its name. Every DDP rank probes, though
        # only rank 0 logs: a rank that went on alone would wait for the failed ones at the process-group rendezvous.
        config = self.config[self.subcommand] if self.subcommand else self.config
        for uri in _configured_tracking_uris(config):
            check_tracking_reachable(uri)
        super().instantiate_classes()

    # A fit resumed from a checkpoint continues the checkpoint's MLflow run (the stores were probed before the
    # classes were built, in instantiate_classes).
    def before_fit(self) -> None:
        logger = next((lg for lg in self.trainer.loggers if isinstance(lg, StressMLFlowLogger)), None)
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        self._resume_step = None
        if logger is not None and ckpt_path:
            resolved, self._resume_step = prepare_resume(self.trainer, logger, str(ckpt_path))
            self.config_init[self.subcommand]["ckpt_path"] = resolved

    def _tag_checkpoint_source(self) -> None:
        # validate/test/predict from a checkpoint log to a run of their own that names the checkpoint's run.
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        for logger in self.trainer.loggers:
            if isinstance(logger, StressMLFlowLogger) and ckpt_path and os.path.isfile(str(ckpt_path)):
                info = checkpoint_run(str(ckpt_path)) or {}
                tags = {"checkpoint.path": os.path.abspath(str(ckpt_path))}
                if info.get("run_id"):
                    tags["checkpoint.run_id"] = info["run_id"]
                logger.tags = {**(logger.tags or {}), **tags}

    def before_validate(self) -> None:
        self._tag_checkpoint_source()

    def before_test(self) -> None:
        self._tag_checkpoint_source()

    def before_predict(self) -> None:
        self._tag_checkpoint_source()

    def after_fit(self) -> None:
        trainer = self.trainer
        if not self.config[self.subcommand].get("test_after_fit", True) or trainer.interrupted:
            return
        if trainer.fast_dev_run:
            return
        resume_step = getattr(self, "_resume_step", None)
        if resume_step is not None and trainer.global_step <= resume_step:
            # A resumed fit that had nothing left to train: testing again would register the same model again.
            rank_zero_info(
                f"Resumed at step {resume_step} with nothing left to train (raise trainer.max_epochs to continue); "
                "not testing or registering again"
            )
            return
        callback = trainer.checkpoint_callback
        ckpt_path = "best" if callback is not None and getattr(callback, "best_model_path", "") else None
        trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)


def _configured_tracking_uris(config: Any) -> list[str]:
    """The tracking URIs of the MLflow loggers in a parsed config (`trainer.logger`: one entry or a list)."""
    import importlib

    trainer = config.get("trainer") if hasattr(config, "get") else None
    entries = trainer.get("logger") if trainer is not None and hasattr(trainer, "get") else None
    uris = []
    for entry in entries if isinstance(entries, list) else [entries]:
        class_path = getattr(entry, "class_path", None)
        if not isinstance(class_path, str) or "." not in class_path:
            continue
        module_name, _, class_name = class_path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue  # jsonargparse reports an unknown class itself
        if not (isinstance(cls, type) and issubclass(cls, MLFlowLogger)):
            continue
        init_args = getattr(entry, "init_args", None)
        try:
            uris.append(resolve_tracking_uri(getattr(init_args, "tracking_uri", None)))
        except ValueError:
            continue  # a URI this package does not resolve (a file store given to Lightning's own logger)
    return uris


def _config_paths(args: list[str]) -> list[str]:
    paths = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            paths.append(args[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def _check_config_files(args: list[str]) -> None:
    """Fail with the file named when a --config file is not valid YAML (jsonargparse reports only the line)."""
    for path in _config_paths(args):
        if not os.path.isfile(path):
            continue  # jsonargparse names a missing file itself
        try:
            with open(path, encoding="utf-8") as handle:
                yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            raise SystemExit(f"error: {path}: not valid YAML: {exc}") from None


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in COMMANDS:
        # COMMANDS (`data`, `promote`, `sync`, ...) are argparse programs of their own; the rest is LightningCLI.
        code = run_command(argv)
        if code:
            raise SystemExit(code)
        return
    _check_config_files(argv)
    try:
        _run_cli(args)
    except (TrackingUnavailableError, TrackingSyncError) as exc:
        raise SystemExit(f"error: {exc}") from None


def _run_cli(args: list[str] | None) -> None:
    StressLightningCLI(
        MultiTaskStressModule,
        # Any LightningDataModule with the linked attributes: ClipDataModule (one corpus), MixedDataModule.
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=MLflowSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        args=args,
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()

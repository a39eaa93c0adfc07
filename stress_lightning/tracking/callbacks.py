"""Lightning callbacks that put provenance, evaluation plots and the registered model into the MLflow run.

Both read the run from the trainer's MLFlowLogger (`logger.run_id`; `logger.experiment` is an MlflowClient)
and act on global rank 0 only. Without an MLflow logger they do nothing and say so once.

Contract with the LightningModule (`stress_lightning.models.module`):
- `pl_module.last_eval_outputs[stage]` for stage in {"val", "test"}: dict of 1-D numpy arrays for the last
  finished evaluation epoch of that stage, each task's arrays holding only its labelled samples:
  `expression_pred`, `expression_true`, `stress_pred`, `stress_true` (class indices), `hr_pred_bpm`,
  `hr_true_bpm`. Under DDP they hold every rank's samples (gathered at the epoch's end, in dataset order), so the
  plots drawn on rank 0 cover the whole split.
- `pl_module.expression_names`, `pl_module.stress_names`: class names in index order.
- `pl_module.net`: the MultiTaskNet; `pl_module.example_input(batch_size) -> (frames, roi)` tensors.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import get_dataset_source_from_json
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from mlflow.utils.validation import MAX_DATASET_DIGEST_SIZE

from stress_lightning.tracking.params import provenance_tags
from stress_lightning.tracking.plots import confusion_counts, confusion_matrix_figure, hr_trace_figure
from stress_lightning.tracking.pyfunc import log_pyfunc_model
from stress_lightning.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    DEFAULT_GATE_TAGS,
    DEFAULT_METRIC,
    DEFAULT_MODEL_NAME,
    RUN_ONNX,
    ModelRegistry,
    check_exported,
)
from stress_lightning.tracking.resume import CHECKPOINT_RUN_KEY
from stress_lightning.tracking.store import display_uri

PLOTS_DIR = "plots"
EXPORTED_ONNX = RUN_ONNX  # the ONNX graphs ExportCallback logs, by the pyfunc artifact that carries each


def _exported_onnx(client: MlflowClient, run_id: str, tags: Mapping[str, str], folder: Path) -> dict[str, Path]:
    """The run's checked ONNX artifacts (ExportCallback), downloaded into `folder`; none unless export was ok."""
    if tags.get("export.onnx.status") != "ok":
        return {}
    present = {a.path for a in client.list_artifacts(run_id, "export")}
    files = {
        key: Path(client.download_artifacts(run_id, path, str(folder)))
        for key, path in EXPORTED_ONNX.items()
        if path in present
    }
    # What goes into the model must be what ExportCallback checked (its SHA-256 run tags).
    check_exported(files, tags, f"run {run_id}")
    return files


def find_mlflow_logger(trainer: Trainer) -> MLFlowLogger | None:
    """The trainer's first MLFlowLogger, or None."""
    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


def sharded_strategy(trainer: Trainer) -> str | None:
    """The name of the trainer's strategy when it shards the model's parameters across ranks (FSDP, model
    parallel), else None."""
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    strategy = getattr(trainer, "strategy", None)
    return type(strategy).__name__ if isinstance(strategy, (FSDPStrategy, ModelParallelStrategy)) else None


class RunAwareCallback(Callback):
    """Shared plumbing: locate the MLflow run on rank 0 and warn once when there is none.

    `runs_model`: the callback runs the in-memory network on rank 0 alone (export, registry). Under a strategy that
    shards the parameters that would gather them in a collective the other ranks never join (a hang), so such a
    callback does nothing there and says how to export and register from the full checkpoint instead.
    """

    runs_model = False

    def __init__(self) -> None:
        super().__init__()
        self._warned_no_logger = False

    def _run(self, trainer: Trainer) -> tuple[MlflowClient, str] | None:
        if not trainer.is_global_zero:
            return None
        sharded = sharded_strategy(trainer) if self.runs_model else None
        if sharded is not None:
            best = getattr(trainer.checkpoint_callback, "best_model_path", "") or "<best checkpoint>"
            rank_zero_warn(
                f"{type(self).__name__}: skipped under {sharded} (each rank holds only a shard of the model); export "
                "and register from the full checkpoint on one device: stress-lightning test --config <experiment> "
                f"--trainer conf/trainer/gpu.yaml --ckpt_path {best}"
            )
            return None
        logger = find_mlflow_logger(trainer)
        if logger is None:
            if not self._warned_no_logger:
                rank_zero_warn(
                    f"{type(self).__name__}: the trainer has no MLFlowLogger, so nothing is logged to MLflow "
                    "(set trainer.logger to stress_lightning.tracking.StressMLFlowLogger)"
                )
                self._warned_no_logger = True
            return None
        return logger.experiment, logger.run_id


# Trainer stage -> (MLflow dataset context, corpus split) pairs it reads.
DATASET_CONTEXTS: dict[str, tuple[tuple[str, str], ...]] = {
    TrainerFn.FITTING: (("training", "train"), ("validation", "val")),
    TrainerFn.VALIDATING: (("validation", "val"),),
    TrainerFn.TESTING: (("testing", "test"),),
}


def _corpus_source(name: str, module: Any) -> DatasetSource:
    shards = getattr(module, "shards", None)
    if shards:
        # A run streamed from shards never reads the corpus folder (it may not exist on this machine): the shard set
        # is the data's location.
        if "://" in str(shards):
            scheme = str(shards).split("://", 1)[0]
            if scheme in {"s3", "gs"}:
                return get_dataset_source_from_json(json.dumps({"uri": str(shards)}), source_type=scheme)
            return CodeDatasetSource({"corpus": name, "shards": str(shards)})
        return get_dataset_source_from_json(json.dumps({"uri": str(Path(shards).resolve())}), source_type="local")
    root = getattr(module, "root", None)
    if root is None:
        # A datamodule that does not say where its corpus lives: name it, no location.
        return CodeDatasetSource({"corpus": name})
    # The local folder the corpus was read from (or generated into); nothing is copied or loaded.
    return get_dataset_source_from_json(json.dumps({"uri": str(Path(root).resolve())}), source_type="local")


def _served_splits(module: Any) -> set[str] | None:
    # After datamodule.setup, `datasets` holds the splits that yielded samples; None: unknown, assume every split.
    datasets = getattr(module, "datasets", None)
    return set(datasets) if isinstance(datasets, Mapping) and datasets else None


def corpus_dataset_inputs(datamodule: Any, stage: str) -> list[DatasetInput]:
    """The corpora a trainer stage reads, as MLflow dataset inputs (metadata only, nothing materialised).

    One input per (corpus, split) the stage reads: name `<corpus>/<split>` (the run's corpus name: `corpus_names`
    of a single-corpus datamodule, the keys of `fingerprints` of a multi-corpus one), digest the corpus fingerprint
    cut to MLflow's 36 characters (a prefix of the `data.fingerprint[.<corpus>]` tag; the full one is in the
    profile), input tag `mlflow.data.context` = training | validation | testing. The split is in the name because
    MLflow keeps one input per (name, digest) and run: a second context for the same dataset would be dropped.
    A corpus whose module reports no samples for a split (a corpus that only serves evaluation) gets no input for
    it. Empty when the datamodule has no fingerprint or the stage reads no corpus split."""
    contexts = DATASET_CONTEXTS.get(stage, ())
    if datamodule is None or not contexts:
        return []
    fingerprints = getattr(datamodule, "fingerprints", None)
    if fingerprints:
        modules = getattr(datamodule, "modules", None) or {}
        corpora = [(name, str(fp), modules.get(name)) for name, fp in fingerprints.items()]
    else:
        fingerprint = getattr(datamodule, "fingerprint", None)
        if fingerprint is None:
            return []
        names = list(getattr(datamodule, "corpus_names", None) or [getattr(datamodule, "corpus", None) or "corpus"])
        corpora = [(names[0], str(fingerprint), datamodule)]
    inputs = []
    for name, fingerprint, module in corpora:
        source = _corpus_source(name, module)
        served = _served_splits(module)
        for context, split in contexts:
            if served is not None and split not in served:
                continue
            meta = MetaDataset(source, name=f"{name}/{split}", digest=fingerprint[:MAX_DATASET_DIGEST_SIZE]).to_dict()
            profile = {"fingerprint": fingerprint, "corpus": getattr(module, "corpus", name), "split": split}
            dataset = Dataset(
                name=meta["name"],
                digest=meta["digest"],
                source_type=meta["source_type"],
                source=meta["source"],
                profile=json.dumps(profile),
            )
            inputs.append(DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    return inputs


class MLflowRunCallback(RunAwareCallback):
    """Run provenance tags and dataset inputs at fit/validate/test start; confusion matrices and HR plots after
    evaluation.

    Tags: `git.commit`, `git.dirty`, `data.fingerprint` (from `trainer.datamodule.fingerprint` when present) and,
    for a multi-corpus run, `data.fingerprint.<corpus>` (from `trainer.datamodule.fingerprints`).
    Dataset inputs (the UI's dataset column): each corpus split the stage reads, `<corpus>/<split>` with the corpus
    fingerprint as digest and context training / validation (fit), validation (validate), testing (test); see
    `corpus_dataset_inputs`. Inputs the run already has are not logged again.
    Plots (PNG artifacts): `plots/{stage}_expression_confusion.png`, `plots/{stage}_stress_confusion.png`,
    `plots/{stage}_hr_bland_altman.png`, `plots/{stage}_hr_trace.png` for stage `test` after testing and `val`
    after `validate` or at the end of `fit` (the last validation epoch).
    """

    def __init__(self, git_cwd: str | None = None) -> None:
        super().__init__()
        self.git_cwd = git_cwd

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage not in (TrainerFn.FITTING, TrainerFn.VALIDATING, TrainerFn.TESTING):
            return
        run = self._run(trainer)
        if run is None:
            return
        client, run_id = run
        datamodule = getattr(trainer, "datamodule", None)
        fingerprint = getattr(datamodule, "fingerprint", None) if datamodule is not None else None
        tags = provenance_tags(self.git_cwd, None if fingerprint is None else str(fingerprint))
        # A multi-corpus run also tags each corpus' own fingerprint (`data.fingerprint.<corpus>`).
        for name, value in (getattr(datamodule, "fingerprints", None) or {}).items():
            tags[f"data.fingerprint.{name}"] = str(value)
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        self._log_dataset_inputs(client, run_id, datamodule, stage)

    @staticmethod
    def _log_dataset_inputs(client: MlflowClient, run_id: str, datamodule: Any, stage: str) -> None:
        # Through the logger's client and run id (the logger owns the run, there is no fluent active run).
        inputs = corpus_dataset_inputs(datamodule, stage)
        if not inputs:
            return
        # `validate` after `fit`, or a resumed run, reads datasets the run already has: skip those.
        logged = {(i.dataset.name, i.dataset.digest) for i in client.get_run(run_id).inputs.dataset_inputs}
        new = [i for i in inputs if (i.dataset.name, i.dataset.digest) not in logged]
        if new:
            client.log_inputs(run_id, datasets=new)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        # The checkpoint names its run, so `fit --ckpt_path` continues that run (tracking.resume), wherever the
        # checkpoint folder is. Read from the logger's attributes: no store round trip per checkpoint.
        logger = find_mlflow_logger(trainer)
        if logger is not None and getattr(logger, "_run_id", None):
            checkpoint[CHECKPOINT_RUN_KEY] = {
                "run_id": logger._run_id,
                "experiment_id": str(getattr(logger, "_experiment_id", "") or ""),
                "tracking_uri": display_uri(str(getattr(logger, "_tracking_uri", "") or "")),
            }

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_eval_plots(trainer, pl_module, "val")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Inside `fit` the last epoch's plots are logged by on_fit_end; here only a standalone `validate`.
        if trainer.state.fn == TrainerFn.VALIDATING and not trainer.sanity_checking:
            self._log_eval_plots(trainer, pl_module, "val")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_eval_plots(trainer, pl_module, "test")

    def _log_eval_plots(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        run = self._run(trainer)
        if run is None:
            return
        client, run_id = run
        outputs = getattr(pl_module, "last_eval_outputs", {}).get(stage)
        if outputs is None:
            rank_zero_info(f"MLflowRunCallback: no {stage} outputs on the module (last_eval_outputs); no plots")
            return
        for name, figure in eval_figures(outputs, pl_module.expression_names, pl_module.stress_names, stage).items():
            client.log_figure(run_id, figure, f"{PLOTS_DIR}/{stage}_{name}.png")


def eval_figures(
    outputs: Mapping[str, np.ndarray],
    expression_names: list[str],
    stress_names: list[str],
    stage: str,
) -> dict[str, Figure]:
    """Figures for one evaluation stage, keyed `expression_confusion`, `stress_confusion`, `hr_bland_altman`,
    `hr_trace`; a task with no labelled samples gets no figure."""
    # The Bland-Altman plot belongs to the signals library (shared with the benchmarks).
    from stress_lightning.signals.metrics import bland_altman_plot

    required = ("expression_pred", "expression_true", "stress_pred", "stress_true", "hr_pred_bpm", "hr_true_bpm")
    missing = [k for k in required if k not in outputs]
    if missing:
        raise KeyError(f"last_eval_outputs[{stage!r}] lacks {missing} (has {sorted(outputs)})")
    figures: dict[str, Figure] = {}
    for task, names in (("expression", expression_names), ("stress", stress_names)):
        true, pred = outputs[f"{task}_true"], outputs[f"{task}_pred"]
        if len(true):
            cm = confusion_counts(true, pred, len(names))
            figures[f"{task}_confusion"] = confusion_matrix_figure(cm, names, f"{stage} {task} confusion")
    hr_pred, hr_true = outputs["hr_pred_bpm"], outputs["hr_true_bpm"]
    if len(hr_true):
        figures["hr_bland_altman"] = bland_altman_plot(
            hr_pred, hr_true, title=f"{stage} heart rate: rPPG vs ECG", units="bpm"
        )
        figures["hr_trace"] = hr_trace_figure(hr_pred, hr_true, title=f"{stage} heart rate")
    return figures


class RegistryCallback(RunAwareCallback):
    """After test: log the pyfunc model, register it, alias it `challenger`, promote to `champion` if earned.

    Put it after ExportCallback in `trainer.callbacks`: promotion requires the run tags in `require_tags`
    (by default `export.onnx.status=ok`, set by ExportCallback).
    """

    runs_model = True

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL_NAME,
        artifact_name: str = "model",
        metric: str = DEFAULT_METRIC,
        champion_alias: str = CHAMPION,
        challenger_alias: str = CHALLENGER,
        require_tags: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.model_name = model_name
        self.artifact_name = artifact_name
        self.metric = metric
        self.champion_alias = champion_alias
        self.challenger_alias = challenger_alias
        self.require_tags = dict(DEFAULT_GATE_TAGS if require_tags is None else require_tags)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        run = self._run(trainer)
        if run is None:
            return
        client, run_id = run
        from stress_lightning.inference.spec import spec_from_module

        frames, roi = pl_module.example_input(batch_size=1)
        example = {"frames": frames.cpu().numpy(), "roi": roi.cpu().numpy()}
        names = {"expression": list(pl_module.expression_names), "stress": list(pl_module.stress_names)}
        run_tags = client.get_run(run_id).data.tags
        with tempfile.TemporaryDirectory(prefix="stress_registry_") as tmp:
            # The ONNX graphs the export callback checked travel with the model: consumers then run ONNX Runtime.
            onnx_files = _exported_onnx(client, run_id, run_tags, Path(tmp))
            info = log_pyfunc_model(
                pl_module.net,
                names,
                example,
                name=self.artifact_name,
                run_id=run_id,
                tracking_uri=client.tracking_uri,
                spec=spec_from_module(pl_module),
                onnx_files=onnx_files,
            )

        registry = ModelRegistry(client=client)
        # The version says what was exported and verified (TensorRT: built, failed, or skipped and why).
        export_tags = {k: v for k, v in run_tags.items() if k.startswith("export.")}
        version = registry.register(
            run_id,
            self.artifact_name,
            name=self.model_name,
            model_id=info.model_id,
            tags=export_tags,
            challenger_alias=self.challenger_alias,
        )
        decision = registry.promote_if_better(
            version,
            name=self.model_name,
            metric=self.metric,
            alias=self.champion_alias,
            require_tags=self.require_tags,
        )
        client.set_tag(run_id, "registry.model", self.model_name)
        client.set_tag(run_id, "registry.version", version)
        client.set_tag(run_id, "registry.decision", decision.reason)
        rank_zero_info(
            f"Registered {self.model_name} v{version} ({self.challenger_alias}); "
            f"{self.champion_alias}: {'yes' if decision.promoted else 'no'} ({decision.reason})"
        )

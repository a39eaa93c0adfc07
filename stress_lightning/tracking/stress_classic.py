"""The paper's alternative stress heads, fitted after a test and logged beside the network they read.

`ClassicStressCallback` runs the trained network over the training and test clips, builds the classic stress
features (`models.stress_classic.stress_features`: expression probabilities, HR, RMSSD, LF/HF), fits each
scikit-learn classifier of `STRESS_CLASSIFIERS` on the training clips and scores it on the test clips with the
module's own stress metrics. Each classifier becomes a child run of the fit run (nested under it in the MLflow UI)
holding its settings, metrics, confusion matrix and the fitted estimator as an MLflow model; the fit run gets
`test/stress_classic/<method>/stress_f1` so a run table compares the heads side by side.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import CombinedLoader, move_data_to_device, rank_zero_info, rank_zero_warn
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from stress_lightning.models.module import NET_BATCH_INPUTS, task_metrics
from stress_lightning.models.registry import STRESS_CLASSIFIERS
from stress_lightning.models.stress_classic import FEATURE_OUTPUTS, feature_names, stress_features
from stress_lightning.tracking.callbacks import PLOTS_DIR, RunAwareCallback
from stress_lightning.tracking.params import truncate_param_value
from stress_lightning.tracking.plots import confusion_counts, confusion_matrix_figure
from stress_lightning.tracking.store import use_tracking_uri

DEFAULT_METHODS: Final[tuple[str, ...]] = ("random_forest", "svm")
CLASSIFIER_TAG: Final[str] = "stress_lightning.stress_classifier"
SOURCE_RUN_TAG: Final[str] = "stress_lightning.source_run_id"
MODEL_ARTIFACT: Final[str] = "model"
# The fit run's tags a child run repeats, so its figures trace to the same commit and data.
_PROVENANCE_PREFIXES: Final[tuple[str, ...]] = ("git.", "data.fingerprint")
_INPUT_EXAMPLE_ROWS: Final[int] = 5


def parent_metric_name(method: str, metric: str = "stress_f1") -> str:
    """The fit run's metric holding a classifier's test figure: `test/stress_classic/<method>/<metric>`."""
    return f"test/stress_classic/{method}/{metric}"


def effective_settings(method: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The factory's keyword defaults overlaid with `settings`: what the classifier was built with."""
    signature = inspect.signature(STRESS_CLASSIFIERS.get(method))
    defaults = {name: p.default for name, p in signature.parameters.items() if p.default is not p.empty}
    return {**defaults, **settings}


def _loaders(loader: Any) -> list[Any]:
    # A multi-corpus training loader (CombinedLoader of one loader per corpus): each corpus' loader in turn.
    return list(loader.flattened) if isinstance(loader, CombinedLoader) else [loader]


def _batches(loader: Any, max_batches: int | None) -> Iterator[dict[str, Any]]:
    for each in _loaders(loader):
        for index, batch in enumerate(each):
            if max_batches is not None and index >= max_batches:
                break
            yield batch


def collect_stress_features(
    trainer: Trainer, pl_module: LightningModule, loader: Any, max_batches: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The network (eval mode, no gradients, on the module's device) over `loader`: (features [N, F] float64,
    stress class indices [N] int64) of the samples with a stress label. Batches without video (physiology-only
    corpora) are skipped: the classic features come from what the network sees in a clip."""
    features: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    precision = trainer.precision_plugin
    was_training = pl_module.training
    pl_module.eval()
    try:
        with torch.no_grad():
            for batch in _batches(loader, max_batches):
                if "frames" not in batch:
                    continue
                mask = batch["stress_mask"].bool().cpu()
                if not mask.any():
                    continue
                batch = precision.convert_input(move_data_to_device(batch, pl_module.device))
                with precision.forward_context():
                    out = pl_module.net(
                        batch["frames"], batch["roi"], **{k: batch[k] for k in NET_BATCH_INPUTS if k in batch}
                    )
                features.append(stress_features({k: out[k].detach().cpu()[mask] for k in FEATURE_OUTPUTS}))
                labels.append(batch["stress"].cpu()[mask].numpy().astype(np.int64))
    finally:
        pl_module.train(was_training)
    width = len(feature_names(pl_module.expression_names))
    if not features:
        return np.empty((0, width)), np.empty(0, dtype=np.int64)
    return np.concatenate(features), np.concatenate(labels)


def stress_metrics(pred: np.ndarray, true: np.ndarray, num_expressions: int, num_stress: int) -> dict[str, float]:
    """`test/stress_f1`, `test/stress_precision`, `test/stress_recall`, `test/stress_specificity`: the module's
    own metric collection (same torchmetrics classes, macro averages) on class indices."""
    collection = task_metrics(num_expressions, num_stress)["stress"]
    collection.update(torch.as_tensor(pred, dtype=torch.long), torch.as_tensor(true, dtype=torch.long))
    return {f"test/{name}": float(value) for name, value in collection.compute().items()}


class ClassicStressCallback(RunAwareCallback):
    """After `trainer.test`: fit the classic stress classifiers on the network's outputs and log each as a child run.

    Args:
        methods: `STRESS_CLASSIFIERS` names (`stress-lightning models` lists them).
        settings: keyword settings per method, e.g. `{random_forest: {n_estimators: 500, max_depth: 8}}`.
        max_batches: read at most this many batches of each loader (each corpus' training loader in a mixed run);
            None reads the whole training and test splits.

    Child run per method, in the fit run's experiment: run name `<fit run name>-<method>`, tags `mlflow.parentRunId`
    (the UI nests it under the fit run), `stress_lightning.stress_classifier` = method,
    `stress_lightning.source_run_id` = the fit run, and the fit run's `git.*` / `data.fingerprint*` tags; params
    `method`, `estimator`, `settings.<name>` (the factory's defaults overlaid with `settings`), `features`,
    `stress_levels`, `train_samples`, `test_samples`; metrics `test/stress_f1`, `test/stress_precision`,
    `test/stress_recall`, `test/stress_specificity`; `plots/test_stress_confusion.png`; and the fitted estimator as
    the MLflow model `model` (sklearn flavour: a DataFrame with the feature columns in, stress level names out).
    The fit run gets `test/stress_classic/<method>/stress_f1`.

    The training features come from the training loader as the run trains on it (its augmentation included). Rank 0
    only; under several processes the test loader of rank 0 serves only its share of the test split, which the
    child runs then score (a warning says so).
    """

    runs_model = True

    def __init__(
        self,
        methods: Sequence[str] = DEFAULT_METHODS,
        settings: dict[str, dict[str, Any]] | None = None,
        max_batches: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(methods, str):
            methods = [methods]
        methods = list(methods)
        if not methods:
            raise ValueError("ClassicStressCallback: methods is empty; known: " + ", ".join(STRESS_CLASSIFIERS.names()))
        if len(set(methods)) != len(methods):
            raise ValueError(f"ClassicStressCallback: methods {methods} name a classifier twice")
        for method in methods:
            STRESS_CLASSIFIERS.get(method)  # UnknownNameError listing the registered names
        settings = {name: dict(values or {}) for name, values in (settings or {}).items()}
        stray = sorted(set(settings) - set(methods))
        if stray:
            raise ValueError(f"ClassicStressCallback: settings for {stray}, which are not in methods {methods}")
        for method in methods:
            # A misspelt setting fails here, when the config is read, not after a whole fit.
            STRESS_CLASSIFIERS.build(method, **settings.get(method, {}))
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"ClassicStressCallback: max_batches must be >= 1 or None, got {max_batches}")
        self.methods = methods
        self.settings = settings
        self.max_batches = max_batches

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        run = self._run(trainer)
        if run is None:
            return
        client, run_id = run
        name = type(self).__name__
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None:
            rank_zero_warn(f"{name}: the trainer has no datamodule (test ran on bare dataloaders); nothing fitted")
            return
        if trainer.world_size > 1:
            rank_zero_warn(
                f"{name}: {trainer.world_size} processes; the classifiers are scored on rank 0's share of the test "
                "split (run `stress-lightning test` on one device for the whole split)"
            )
        train_x, train_y = collect_stress_features(trainer, pl_module, datamodule.train_dataloader(), self.max_batches)
        test_x, test_y = collect_stress_features(trainer, pl_module, datamodule.test_dataloader(), self.max_batches)
        if len(np.unique(train_y)) < 2 or not len(test_y):
            rank_zero_warn(
                f"{name}: {len(train_y)} stress-labelled training clips in {len(np.unique(train_y))} class(es) and "
                f"{len(test_y)} test clips; a classifier needs two classes to fit and one clip to score: nothing fitted"
            )
            return
        parent = client.get_run(run_id)
        for method in self.methods:
            f1 = self._fit_and_log(client, parent, method, pl_module, (train_x, train_y), (test_x, test_y))
            client.log_batch(
                run_id, metrics=[Metric(parent_metric_name(method), f1, _now_ms(), int(trainer.global_step))]
            )
            network = trainer.callback_metrics.get("test/stress_f1")
            rank_zero_info(
                f"{name}: {method} test/stress_f1 {f1:.3f}"
                + (f" (network {float(network):.3f})" if network is not None else "")
            )

    def _fit_and_log(
        self,
        client: MlflowClient,
        parent: Any,
        method: str,
        pl_module: LightningModule,
        train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray],
    ) -> float:
        """Fit `method`, log its child run; returns its test macro-F1."""
        import pandas as pd

        stress_names = list(pl_module.stress_names)
        columns = feature_names(pl_module.expression_names)
        settings = self.settings.get(method, {})
        estimator = STRESS_CLASSIFIERS.build(method, **settings)
        # Named columns and level names: the logged model takes a table and answers with stress levels.
        train_x = pd.DataFrame(train[0], columns=columns)
        test_x = pd.DataFrame(test[0], columns=columns)
        estimator.fit(train_x, np.asarray(stress_names, dtype=object)[train[1]])
        predicted = estimator.predict(test_x)
        pred = np.asarray([stress_names.index(level) for level in predicted], dtype=np.int64)
        metrics = stress_metrics(pred, test[1], len(pl_module.expression_names), len(stress_names))

        tags = {
            MLFLOW_PARENT_RUN_ID: parent.info.run_id,
            CLASSIFIER_TAG: method,
            SOURCE_RUN_TAG: parent.info.run_id,
            **{k: v for k, v in parent.data.tags.items() if k.startswith(_PROVENANCE_PREFIXES)},
        }
        run_name = f"{parent.data.tags.get(MLFLOW_RUN_NAME) or parent.info.run_id[:8]}-{method}"
        child = client.create_run(parent.info.experiment_id, tags=tags, run_name=run_name).info.run_id
        try:
            params = {
                "method": method,
                "estimator": type(estimator).__name__,
                "features": ",".join(columns),
                "stress_levels": ",".join(stress_names),
                "train_samples": str(len(train[1])),
                "test_samples": str(len(test[1])),
                **{f"settings.{k}": str(v) for k, v in effective_settings(method, settings).items()},
            }
            now = _now_ms()
            client.log_batch(
                child,
                metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                params=[Param(k, truncate_param_value(v)) for k, v in params.items()],
            )
            figure = confusion_matrix_figure(
                confusion_counts(test[1], pred, len(stress_names)), stress_names, f"test stress confusion ({method})"
            )
            client.log_figure(child, figure, f"{PLOTS_DIR}/test_stress_confusion.png")
            _log_sklearn_model(client, child, parent.info.experiment_id, method, estimator, train_x)
        except BaseException:
            client.set_terminated(child, "FAILED")
            raise
        client.set_terminated(child, "FINISHED")
        return metrics["test/stress_f1"]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _log_sklearn_model(
    client: MlflowClient, run_id: str, experiment_id: str, method: str, estimator: Any, train_x: Any
) -> None:
    """The fitted estimator as the run's MLflow model `model`, with its signature and a few training rows.

    MLflow saves it with skops, which loads only types it trusts: a classifier's factory names the further types
    its estimator holds in its attribute `skops_trusted_types`."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    example = train_x.head(_INPUT_EXAMPLE_ROWS)
    signature = infer_signature(example, estimator.predict(example))
    with use_tracking_uri(client.tracking_uri):
        # Created in the run's experiment: without an active fluent run MLflow would file it under the default one.
        model_id = client.create_logged_model(experiment_id=experiment_id, name=MODEL_ARTIFACT, source_run_id=run_id)
        mlflow.sklearn.log_model(
            estimator,
            name=MODEL_ARTIFACT,
            signature=signature,
            input_example=example,
            # Given, so MLflow does not start a process to infer them from the saved model.
            pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
            skops_trusted_types=list(getattr(STRESS_CLASSIFIERS.get(method), "skops_trusted_types", ())),
            run_id=run_id,
            model_id=model_id.model_id,
        )


__all__ = [
    "DEFAULT_METHODS",
    "ClassicStressCallback",
    "collect_stress_features",
    "effective_settings",
    "parent_metric_name",
    "stress_metrics",
]

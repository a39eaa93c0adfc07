"""Corpus fingerprints as MLflow dataset inputs: what the UI's dataset column shows a run was trained and tested on."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from mlflow import MlflowClient
from mlflow.entities import DatasetInput

from stress_lightning.data.corpora import build_corpus
from stress_lightning.data.datamodules import ClipDataModule
from stress_lightning.data.mixed import MixedDataModule
from stress_lightning.tracking.callbacks import MLflowRunCallback, corpus_dataset_inputs
from stress_lightning.tracking.store import StressMLFlowLogger

TINY = {"num_subjects": 4, "duration_s": 6.0, "width": 64, "height": 64, "seed": 3}
CLIP = {"clip_seconds": 4.0, "face_size": 32, "progress": False, "workers": 1}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inputs") / "corpus"
    build_corpus("synthetic", generator=TINY).prepare(root, progress=False, workers=1)
    return root


def _clip_module(root: Path, cache: Path) -> ClipDataModule:
    return ClipDataModule(
        corpus="synthetic",
        root=str(root),
        cache_dir=str(cache),
        corpus_options={"generator": TINY},
        batch_size=2,
        **CLIP,
    )


class _Scalar(LightningModule):
    """One weight and a loss from the batch: enough for the trainer to run each stage over the real datamodule."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return (self.w - batch["roi"].mean()) ** 2

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", (self.w - batch["roi"].mean()) ** 2)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("test/loss", (self.w - batch["roi"].mean()) ** 2)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _inputs(client: MlflowClient, run_id: str) -> dict[str, tuple[str, str, dict, dict]]:
    """name -> (digest, context, source, profile) of the run's dataset inputs; fails on a name logged twice."""
    found: dict[str, tuple[str, str, dict, dict]] = {}
    for item in client.get_run(run_id).inputs.dataset_inputs:
        ds = item.dataset
        assert ds.name not in found, f"{ds.name} logged twice"
        context = {t.key: t.value for t in item.tags}["mlflow.data.context"]
        found[ds.name] = (ds.digest, context, {"type": ds.source_type, **json.loads(ds.source)}, json.loads(ds.profile))
    return found


def test_fit_validate_test_log_each_split_once(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'store'}/mlflow.db"
    logger = StressMLFlowLogger(experiment_name="inputs", tracking_uri=uri, run_name="inputs")
    # Count what the callback sends: the store would swallow a repeated input, the callback should not send it.
    sent: list[list[str]] = []
    log_inputs = logger.experiment.log_inputs
    monkeypatch.setattr(
        logger.experiment,
        "log_inputs",
        lambda run_id, datasets=None, **kw: (
            sent.append([d.dataset.name for d in datasets]) or log_inputs(run_id, datasets=datasets, **kw)
        ),
    )
    trainer = Trainer(
        logger=logger,
        callbacks=[MLflowRunCallback()],
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        limit_test_batches=1,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    datamodule = _clip_module(corpus, tmp_path / "cache")
    module = _Scalar()
    client = MlflowClient(uri)

    trainer.fit(module, datamodule=datamodule)
    fingerprint = client.get_run(logger.run_id).data.tags["data.fingerprint"]
    assert fingerprint == datamodule.fingerprint and len(fingerprint) > 36
    source = {"type": "local", "uri": str(corpus.resolve())}
    profile = {"fingerprint": fingerprint, "corpus": "synthetic"}
    after_fit = {
        "synthetic/train": (fingerprint[:36], "training", source, {**profile, "split": "train"}),
        "synthetic/val": (fingerprint[:36], "validation", source, {**profile, "split": "val"}),
    }
    assert _inputs(client, logger.run_id) == after_fit
    assert sent == [["synthetic/train", "synthetic/val"]]

    # The validation split again: already an input of the run, not logged a second time.
    trainer.validate(module, datamodule=datamodule)
    assert _inputs(client, logger.run_id) == after_fit
    assert len(sent) == 1

    trainer.test(module, datamodule=datamodule)
    after_test = {
        **after_fit,
        "synthetic/test": (fingerprint[:36], "testing", source, {**profile, "split": "test"}),
    }
    assert _inputs(client, logger.run_id) == after_test
    assert sent[1:] == [["synthetic/test"]]


def _summary(inputs: list[DatasetInput]) -> list[tuple[str, str, str, str]]:
    return [
        (
            i.dataset.name,
            i.dataset.digest,
            i.dataset.source_type,
            {t.key: t.value for t in i.tags}["mlflow.data.context"],
        )
        for i in inputs
    ]


def test_multi_corpus_inputs_follow_each_corpus_splits(corpus: Path, tmp_path: Path) -> None:
    # Corpus "eval_only" serves validation and test only: a fit reads no training data from it.
    datamodule = MixedDataModule(
        corpora={
            "main": {"corpus": "synthetic", "root": str(corpus), "corpus_options": {"generator": TINY}},
            "eval_only": {
                "corpus": "synthetic",
                "root": str(corpus),
                "corpus_options": {"generator": TINY},
                "splits": ["val", "test"],
            },
        },
        cache_dir=str(tmp_path / "cache"),
        **CLIP,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    digest = {name: fp[:36] for name, fp in datamodule.fingerprints.items()}
    assert _summary(corpus_dataset_inputs(datamodule, "fit")) == [
        ("main/train", digest["main"], "local", "training"),
        ("main/val", digest["main"], "local", "validation"),
        ("eval_only/val", digest["eval_only"], "local", "validation"),
    ]
    assert _summary(corpus_dataset_inputs(datamodule, "test")) == [
        ("main/test", digest["main"], "local", "testing"),
        ("eval_only/test", digest["eval_only"], "local", "testing"),
    ]


def test_fingerprints_alone_give_every_split_of_the_stage() -> None:
    # A datamodule that only states fingerprints: no location (a `code` source naming the corpus), no split info.
    fake = SimpleNamespace(fingerprints={"lab": "a" * 64, "field": "b" * 10})
    inputs = corpus_dataset_inputs(fake, "fit")
    assert _summary(inputs) == [
        ("lab/train", "a" * 36, "code", "training"),
        ("lab/val", "a" * 36, "code", "validation"),
        ("field/train", "b" * 10, "code", "training"),
        ("field/val", "b" * 10, "code", "validation"),
    ]
    assert json.loads(inputs[0].dataset.source) == {"tags": {"corpus": "lab"}}
    assert json.loads(inputs[0].dataset.profile)["fingerprint"] == "a" * 64
    assert _summary(corpus_dataset_inputs(fake, "validate")) == [
        ("lab/val", "a" * 36, "code", "validation"),
        ("field/val", "b" * 10, "code", "validation"),
    ]
    # Nothing to say: no datamodule, no fingerprint, or a stage that reads no labelled split.
    assert corpus_dataset_inputs(None, "fit") == []
    assert corpus_dataset_inputs(SimpleNamespace(), "fit") == []
    assert corpus_dataset_inputs(fake, "predict") == []

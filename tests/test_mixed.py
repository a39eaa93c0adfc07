"""Several corpora in one run: batches that never mix corpora, the shared arguments, per-corpus metrics, losses
pooled over the corpora of a step, and one real `fit` over synthetic video, photos and SWELL-KW physiology."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml

import stress_lightning.data.corpora.swell_kw  # noqa: F401  (registers)
from stress_lightning.data.datamodules import ClipDataModule
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.mixed import SHARED_ARGUMENTS, CorpusBatchSampler, MixedDataModule, Tagged
from stress_lightning.models.module import DEFAULT_LOSS_WEIGHTS, MultiTaskStressModule

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
PHOTOS = SHARED / "faces" / "muxspace"
SWELL = SHARED / "stress" / "swell_kw"
SMALL_NET = {"spatial_backbone": "conv4", "temporal_backbone": "c3d_small", "rppg_backbone": "rppg_cnn"}


def write_swell_csv(root: Path, subjects: int, seed: int) -> Path:
    """A small SWELL-KW feature file in its layout: per participant and block, 3 rest minutes, a 4-minute gap,
    then 6 task minutes (N, T, I); time pressure raises the heart rate."""
    rng = np.random.default_rng(seed)
    lines = ["PP,C,Condition,timestamp,HR,RMSSD,SCL,,,,,"]
    for s in range(1, subjects + 1):
        day = datetime(2012, 9, s)
        for block, condition in enumerate("NTI", start=1):
            start = day + timedelta(hours=12 + block)
            shift = {"N": 0, "T": 8, "I": 4}[condition]
            minutes = [("R", start + timedelta(minutes=m), -2) for m in range(3)]
            minutes += [(condition, start + timedelta(minutes=7 + m), shift) for m in range(6)]
            for label, time, d in minutes:
                hr = round(60 + 2 * s + d + rng.normal(0, 1.5))
                rmssd = round(0.05 - d / 1000 + rng.normal(0, 0.003), 6)
                scl = round(100 + 10 * s + d + rng.normal(0, 2), 6)
                note = "999 is NaN" if len(lines) == 1 else ""
                lines.append(f"PP{s},{block},{label},{time:%Y%m%dT%H%M%S}000,{hr},{rmssd},{scl},,,,,{note}")
    root.mkdir(parents=True, exist_ok=True)
    path = root / "physiology_features.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def swell_roots(tmp_path: Path) -> dict[str, Path]:
    roots = {"swa": tmp_path / "swa", "swb": tmp_path / "swb"}
    write_swell_csv(roots["swa"], subjects=6, seed=0)
    write_swell_csv(roots["swb"], subjects=3, seed=1)
    return roots


def physiology_mixed(roots: dict[str, Path], tmp_path: Path, **kwargs) -> MixedDataModule:
    options = {
        "swa": {"val_subjects": ["PP5"], "test_subjects": ["PP6"]},
        "swb": {"val_subjects": ["PP2"], "test_subjects": ["PP3"]},
    }
    corpora = {
        name: {"corpus": "swell_kw", "root": str(root), "corpus_options": options[name], "batch_size": 4}
        for name, root in roots.items()
    }
    return MixedDataModule(corpora, cache_dir=str(tmp_path / "cache"), progress=False, **kwargs)


def small_module(corpora: list[str] | None, **kwargs) -> MultiTaskStressModule:
    return MultiTaskStressModule(**{"net": SMALL_NET, "roi_frames": 50, "corpora": corpora, **kwargs})


# -- batching ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("sizes", "batch_sizes"), [([5, 3, 7], [2, 4, 3]), ([1, 0, 9], [4, 2, 4]), ([8], [8])])
def test_corpus_batch_sampler_never_crosses_corpora(sizes: list[int], batch_sizes: list[int]) -> None:
    sampler = CorpusBatchSampler(sizes, batch_sizes)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    bounds = np.cumsum([0, *sizes])
    corpus_of = np.repeat(np.arange(len(sizes)), sizes)
    seen = [i for batch in batches for i in batch]
    assert sorted(seen) == list(range(bounds[-1])) and len(seen) == len(set(seen))  # every index once
    assert seen == sorted(seen)  # corpus after corpus, in order
    for batch in batches:
        (corpus,) = set(corpus_of[batch].tolist())
        assert 1 <= len(batch) <= batch_sizes[corpus]


def test_tagged_dataset_adds_corpus_index() -> None:
    base = [{"x": torch.tensor(i)} for i in range(3)]
    tagged = Tagged(base, 2)
    assert len(tagged) == 3 and tagged[1]["corpus_index"].item() == 2 and tagged[1]["x"].item() == 1
    assert "corpus_index" not in base[1]  # the corpus' own samples are not changed


# -- arguments --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shared", SHARED_ARGUMENTS)
def test_shared_argument_per_corpus_is_refused(shared: str, tmp_path: Path) -> None:
    corpora = {"ok": {"corpus": "swell_kw", "root": str(tmp_path)}, "bad": {"corpus": "swell_kw", shared: 1}}
    with pytest.raises(ValueError, match=rf"data\.corpora\.bad: \['{shared}'\]"):
        MixedDataModule(corpora)


@pytest.mark.parametrize("name", ["", "a/b", "swell.kw", "swell kw"])
def test_bad_corpus_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="corpus name"):
        MixedDataModule({name: {"corpus": "swell_kw"}})


def test_no_corpus_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one corpus"):
        MixedDataModule({})


def test_module_refuses_bad_corpus_lists() -> None:
    for corpora in (["a", "a"], ["a/b"], [""]):
        with pytest.raises(ValueError, match="model.corpora"):
            small_module(corpora)


def test_names_fingerprints_and_shared_geometry(swell_roots: dict[str, Path], tmp_path: Path) -> None:
    mixed = physiology_mixed(swell_roots, tmp_path, fps=10.0, clip_seconds=4.0, face_size=32)
    assert mixed.corpus_names == ["swa", "swb"]
    assert (mixed.fps, mixed.roi_frames, mixed.face_size) == (10.0, 40, 32)
    for module in mixed.modules.values():
        assert (module.fps, module.roi_frames, module.face_size, module.progress) == (10.0, 40, 32, False)
    fingerprints = mixed.fingerprints
    assert list(fingerprints) == ["swa", "swb"] and fingerprints["swa"] != fingerprints["swb"]
    single = ClipDataModule(
        corpus="swell_kw",
        root=str(swell_roots["swa"]),
        corpus_options={"val_subjects": ["PP5"], "test_subjects": ["PP6"]},
        progress=False,
    )
    assert fingerprints["swa"] == single.fingerprint
    expected = hashlib.sha256(json.dumps(fingerprints, sort_keys=True).encode()).hexdigest()
    assert mixed.fingerprint == expected
    # Another content for one corpus changes that corpus' fingerprint and the run's, not the other corpus'.
    write_swell_csv(swell_roots["swb"], subjects=3, seed=2)
    changed = physiology_mixed(swell_roots, tmp_path)
    assert changed.fingerprints["swa"] == fingerprints["swa"]
    assert changed.fingerprints["swb"] != fingerprints["swb"] and changed.fingerprint != mixed.fingerprint


def test_loaders_of_a_physiology_mixed_run(swell_roots: dict[str, Path], tmp_path: Path) -> None:
    mixed = physiology_mixed(swell_roots, tmp_path)
    mixed.prepare_data()
    mixed.setup("fit")
    sizes = {name: len(m.datasets["val"]) for name, m in mixed.modules.items()}
    indices = []
    for batch in mixed.val_dataloader():
        (index,) = set(batch["corpus_index"].tolist())
        indices += [index] * len(batch["stress"])
        assert batch["stress_mask"].all() and "frames" not in batch
    assert indices == [0] * sizes["swa"] + [1] * sizes["swb"]
    batch, _, _ = next(iter(mixed.train_dataloader()))  # CombinedLoader: (batch, batch index, loader index)
    assert set(batch) == {"swa", "swb"} and batch["swa"]["personal"].shape == (4, 6)
    # Predictions are written per clip of one corpus: a mixed run says so instead of mixing clip indices.
    with pytest.raises(CorpusError, match="predict runs on one corpus"):
        mixed.predict_dataloader()


# -- the module -------------------------------------------------------------------------------------------------
def _physiology_batch(n: int, corpus_index: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = {
        "personal": torch.randn(n, 6, generator=g),
        "personal_mask": torch.ones(n, 6, dtype=torch.bool),
        "stress": torch.randint(0, 3, (n,), generator=g),
        "stress_mask": torch.ones(n, dtype=torch.bool),
        "expression": torch.zeros(n, dtype=torch.int64),
        "expression_mask": torch.zeros(n, dtype=torch.bool),
        "hr_bpm": torch.zeros(n),
        "hr_mask": torch.zeros(n, dtype=torch.bool),
    }
    if corpus_index is not None:
        batch["corpus_index"] = torch.full((n,), corpus_index, dtype=torch.int64)
    return batch


def test_corpus_batches_dict_and_tagged() -> None:
    module = small_module(["swa", "swb"])
    a, b = _physiology_batch(3), _physiology_batch(2, seed=1)
    pairs = module._corpus_batches({"swa": a, "swb": b})
    assert [name for name, _ in pairs] == ["swa", "swb"] and pairs[0][1] is a and pairs[1][1] is b
    tagged = _physiology_batch(4, corpus_index=1)
    assert module._corpus_batches(tagged) == [("swb", tagged)]
    plain = _physiology_batch(4)
    assert module._corpus_batches(plain) == [(None, plain)]
    # A single-corpus module has no names to give.
    assert small_module(None)._corpus_batches(tagged) == [(None, tagged)]


def test_corpus_batches_skip_exhausted_corpus_of_max_size_mode() -> None:
    module = small_module(["swa", "swb"])
    a = _physiology_batch(3)
    assert module._corpus_batches({"swa": a, "swb": None}) == [("swa", a)]


def test_max_size_mode_trains_past_the_shorter_corpus(swell_roots: dict[str, Path], tmp_path: Path) -> None:
    mixed = physiology_mixed(swell_roots, tmp_path, train_mode="max_size")
    module = small_module(["swa", "swb"], roi_frames=mixed.roi_frames)
    trainer = _trainer(max_epochs=1)
    trainer.fit(module, datamodule=mixed)
    assert trainer.global_step > len(mixed.modules["swb"].train_dataloader())


def test_metric_names_per_corpus_only_with_two_corpora() -> None:
    two = set(small_module(["swa", "swb"]).metrics)
    one = set(small_module(["swa"]).metrics)
    none = set(small_module(None).metrics)
    assert (
        one
        == none
        == {f"{stage}_{task}" for stage in ("train", "val", "test") for task in ("expression", "hr", "stress")}
    )
    assert two == none | {
        f"{stage}_{c}_{task}"
        for stage in ("train", "val", "test")
        for c in ("swa", "swb")
        for task in ("expression", "hr", "stress")
    }
    prefixes = {c.prefix for c in small_module(["swa", "swb"]).metrics.values()}
    assert {"val/", "val/swa/", "test/swb/"} <= prefixes


def _trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def test_fit_and_validate_log_pooled_and_per_corpus_metrics(swell_roots: dict[str, Path], tmp_path: Path) -> None:
    pl.seed_everything(0)
    mixed = physiology_mixed(swell_roots, tmp_path)
    module = small_module(mixed.corpus_names, roi_frames=mixed.roi_frames)
    trainer = _trainer(max_epochs=1, limit_train_batches=3)
    trainer.fit(module, datamodule=mixed)
    logged = set(trainer.callback_metrics)
    for stage in ("train", "val"):
        assert {f"{stage}/stress_f1", f"{stage}/swa/stress_f1", f"{stage}/swb/stress_f1"} <= logged, logged
    assert "val/loss" in logged and not any("expression" in k and "loss" not in k for k in logged)
    trainer.test(module, datamodule=mixed)
    assert {"test/stress_f1", "test/swa/stress_f1", "test/swb/stress_f1"} <= set(trainer.callback_metrics)
    outputs = module.last_eval_outputs["test"]
    n_test = sum(len(m.datasets["test"]) for m in mixed.modules.values())
    assert len(outputs["stress_true"]) == n_test and len(outputs["expression_true"]) == 0
    # One corpus: pooled names only.
    single = ClipDataModule(
        corpus="swell_kw",
        root=str(swell_roots["swa"]),
        corpus_options={"val_subjects": ["PP5"], "test_subjects": ["PP6"]},
        cache_dir=str(tmp_path / "cache"),
        batch_size=4,
        progress=False,
    )
    one = small_module(single.corpus_names, roi_frames=single.roi_frames)
    trainer = _trainer(max_epochs=1, limit_train_batches=2)
    trainer.fit(one, datamodule=single)
    assert "val/stress_f1" in trainer.callback_metrics
    assert not any(k.startswith(("val/swell_kw/", "train/swell_kw/")) for k in trainer.callback_metrics)


def test_pooled_losses_are_the_masked_mean_over_all_samples() -> None:
    module = small_module(["a", "b"], loss_weights={"hrv": 0.5})
    t, f = True, False
    video = {
        "stress": (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([t, f, t])),
        "expression": (torch.tensor([0.5, 1.5, 2.5]), torch.tensor([t, t, f])),
        "hr": (torch.tensor([4.0, 6.0, 8.0]), torch.tensor([f, f, f])),
        "hrv": (torch.tensor([1.0, 1.0, 4.0]), torch.tensor([f, t, t])),
    }
    physiology = {"stress": (torch.tensor([10.0, 20.0, 30.0], requires_grad=True), torch.tensor([t, t, t]))}
    losses = module._pooled_losses([video, physiology])
    # Pooled over the 5 labelled samples (not the mean of the two corpora's means, 11.0).
    assert losses["stress"].item() == pytest.approx((1 + 3 + 10 + 20 + 30) / 5)
    assert losses["expression"].item() == pytest.approx(1.0)
    assert losses["hr"].item() == 0.0  # nobody has it: zero, not NaN
    assert losses["hrv"].item() == pytest.approx(2.5)
    weights = {**DEFAULT_LOSS_WEIGHTS, "hrv": 0.5}
    assert losses["total"].item() == pytest.approx(sum(weights[k] * losses[k].item() for k in DEFAULT_LOSS_WEIGHTS))
    # A step with physiology only: the video tasks are zeros still connected to the graph.
    alone = module._pooled_losses([physiology])
    assert alone["expression"].item() == 0.0 and alone["expression"].requires_grad
    alone["total"].backward()
    # Through the real network: the per-sample losses of a physiology batch have the stress task only.
    batch = _physiology_batch(4)
    parts = module._sample_losses(module._run(batch), batch)
    assert set(parts) == {"stress"} and parts["stress"][0].shape == (4,)


# -- the real run ------------------------------------------------------------------------------------------------
PHOTO_CLASSES = ("anger", "disgust", "happiness", "sadness", "surprise")


def _copy_photos(target: Path) -> None:
    """3 photos per class for 5 classes in train/ and val/ (each photo a different person where possible)."""
    for split in ("train", "val"):
        for label in PHOTO_CLASSES:
            folder = target / split / label
            folder.mkdir(parents=True)
            photos, people = [], set()
            for photo in sorted((PHOTOS / split / label).iterdir()):
                person = photo.stem.rsplit("_", 1)[0]
                if person not in people:
                    photos.append(photo)
                    people.add(person)
                if len(photos) == 3:
                    break
            assert len(photos) == 3, f"{PHOTOS / split / label} has fewer than 3 people"
            for photo in photos:
                shutil.copy(photo, folder / photo.name)


@pytest.mark.shared_data
def test_mixed_fit_logs_pooled_and_per_corpus_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for needed in (PHOTOS / "train", PHOTOS / "val", SWELL / "physiology_features.csv"):
        if not needed.exists():
            pytest.skip(f"shared data absent: {needed} (../shared/data)")
    _copy_photos(tmp_path / "faces")
    (tmp_path / "swell_kw").mkdir()
    shutil.copy(SWELL / "physiology_features.csv", tmp_path / "swell_kw" / "physiology_features.csv")
    tiny = yaml.safe_load((REPO / "conf" / "mixed_tiny.yaml").read_text())
    corpora = tiny["data"]["init_args"]["corpora"]
    corpora["synthetic"]["root"] = str(tmp_path / "synthetic")
    corpora["faces"]["root"] = str(tmp_path / "faces")
    corpora["swell_kw"]["root"] = str(tmp_path / "swell_kw")
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    override = {
        "trainer": {
            "default_root_dir": str(tmp_path / "out"),
            "logger": {
                "class_path": "stress_lightning.tracking.store.StressMLFlowLogger",
                "init_args": {"experiment_name": "stress-lightning-mixed", "tracking_uri": tracking_uri},
            },
        },
        "data": {"init_args": {"cache_dir": str(tmp_path / "cache"), "corpora": corpora}},
    }
    override_path = tmp_path / "override.yaml"
    # Corpus order matters: evaluation walks the corpora in order and the tiny run limits its batches.
    override_path.write_text(yaml.safe_dump(override, sort_keys=False))
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)

    from stress_lightning.cli import main

    main(["fit", "--config", "conf/mixed.yaml", "--config", "conf/mixed_tiny.yaml", "--config", str(override_path)])

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("stress-lightning-mixed")
    (run,) = client.search_runs([experiment.experiment_id])
    metrics = run.data.metrics
    expected = {
        "val/loss",
        "val/stress_f1",
        "test/stress_f1",
        "test/expression_acc",
        "test/swell_kw/stress_f1",
        "test/synthetic/stress_f1",
        "test/synthetic/hr_mae_bpm",
        "test/faces/expression_acc",
        "val/synthetic/hr_mae_bpm",
        "val/faces/expression_acc",
    }
    assert expected <= set(metrics), sorted(expected - set(metrics))
    assert not any(k.startswith(("test/swell_kw/expression", "test/faces/hr_", "test/faces/stress")) for k in metrics)
    tags = run.data.tags
    for name in ("synthetic", "faces", "swell_kw"):
        assert len(tags.get(f"data.fingerprint.{name}", "")) == 64, name
    assert len(tags.get("data.fingerprint", "")) == 64
    assert (tmp_path / "synthetic").is_dir() and any((tmp_path / "cache").iterdir())

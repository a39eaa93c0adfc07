"""The clip DataModule on a tiny generated corpus: shapes, masks, splits, cache reuse and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from stress_lightning.data.corpora import build_corpus
from stress_lightning.data.datamodules import ClipDataModule
from stress_lightning.data.errors import CorpusError

TINY = {"num_subjects": 4, "duration_s": 6.0, "width": 64, "height": 64, "seed": 3}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dm") / "corpus"
    build_corpus("synthetic", generator=TINY).prepare(root, progress=False, workers=1)
    return root


def _module(root: Path, cache: Path, **kwargs) -> ClipDataModule:
    return ClipDataModule(
        corpus="synthetic",
        root=str(root),
        cache_dir=str(cache),
        corpus_options={"generator": TINY},
        clip_seconds=4.0,
        face_size=32,
        batch_size=4,
        progress=False,
        **{"workers": 1, **kwargs},
    )


def test_batches_have_the_sample_contract(corpus: Path, tmp_path: Path) -> None:
    dm = _module(corpus, tmp_path / "cache")
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape == (4, 8, 3, 32, 32) and batch["frames"].dtype == torch.float32
    assert batch["roi"].shape == (4, 100, 3, 8, 8)
    assert 0.0 <= float(batch["frames"].min()) and float(batch["frames"].max()) <= 1.0
    for key in ("expression_mask", "hr_mask", "hrv_mask", "stress_mask", "roi_mask", "still"):
        assert batch[key].dtype == torch.bool
    assert batch["stress_mask"].all() and batch["hr_mask"].all() and batch["roi_mask"].all()
    assert not batch["still"].any()
    # A missing label is zero with its mask off, never a sentinel.
    assert (batch["expression"][~batch["expression_mask"]] == 0).all()
    assert ((batch["hr_bpm"] > 40) & (batch["hr_bpm"] < 180)).all()


def test_the_taxonomy_is_configuration(corpus: Path, tmp_path: Path) -> None:
    """A run with other class names: labels the run does not list are dropped and counted, heads follow."""
    dm = _module(corpus, tmp_path / "cache", expression_classes=["happy", "neutral"], stress_levels=["low", "high"])
    dm.setup("fit")
    labels = dm.datasets["train"].labels
    assert set(np.unique(labels.expression[labels.expression_mask])) <= {0, 1}
    assert set(np.unique(labels.stress[labels.stress_mask])) <= {0, 1}
    # normal-stress sessions are not in this run's levels: masked, not mislabelled
    assert not labels.stress_mask.all()


def test_splits_are_subject_disjoint(corpus: Path, tmp_path: Path) -> None:
    dm = _module(corpus, tmp_path / "cache")
    dm.setup("fit")
    subjects = {s: {it.subject_id for it in dm.datasets[s].items} for s in ("train", "val", "test")}
    assert not subjects["train"] & subjects["val"] and not subjects["train"] & subjects["test"]
    assert not subjects["val"] & subjects["test"]


def test_heart_rate_labels_follow_the_ecg(corpus: Path, tmp_path: Path) -> None:
    """Clip HR labels are the mean rate of the ECG R-R intervals inside the clip's own time window."""
    from stress_lightning.signals.ecg import detect_r_peaks

    dm = _module(corpus, tmp_path / "cache")
    dm.setup("fit")
    ds = dm.datasets["train"]
    labels = ds.labels
    checked = 0
    for i in range(0, len(labels), 3):
        item = ds.items[int(labels.item[i])]
        ecg = pd.read_csv(item.cardiac.path)["ecg_mv"].to_numpy()
        t = detect_r_peaks(ecg, item.cardiac.fs_hz) / item.cardiac.fs_hz
        t0 = labels.start[i] / dm.fps
        inside = t[(t >= t0) & (t <= t0 + 4.0)]
        rr_s = np.diff(inside)
        assert labels.hr_bpm[i] == pytest.approx(60.0 / rr_s.mean(), abs=0.01)
        checked += 1
    assert checked >= 3


def test_cache_is_reused(corpus: Path, tmp_path: Path) -> None:
    dm = _module(corpus, tmp_path / "cache")
    dm.prepare_data()
    files = sorted((tmp_path / "cache").rglob("roi.npy"))
    assert len(files) == 12
    stamps = [f.stat().st_mtime_ns for f in files]
    again = _module(corpus, tmp_path / "cache")
    again.prepare_data()
    again.setup("fit")
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert (tmp_path / "cache").iterdir().__next__().name.startswith("synthetic_25fps_face32_roi8_")


def _copy(corpus: Path, tmp_path: Path) -> Path:
    target = tmp_path / "corpus"
    shutil.copytree(corpus, target)
    return target


def test_corrupt_video_is_named_and_finished_sessions_are_kept(corpus: Path, tmp_path: Path) -> None:
    root = _copy(corpus, tmp_path)
    items = build_corpus("synthetic", generator=TINY).read(root)
    bad = items[len(items) // 2].media.path
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    dm = _module(root, tmp_path / "cache", workers=2)
    with pytest.raises(CorpusError, match=str(bad.relative_to(root))):
        dm.prepare_data()
    # Every other session is cached (the pool finishes them); nothing half-written is left.
    assert len(list((tmp_path / "cache").rglob("roi.npy"))) == len(items) - 1
    assert not list((tmp_path / "cache").rglob("*.tmp*"))


def test_skip_mode_reports_the_bad_video_and_trains_on_the_rest(corpus: Path, tmp_path: Path) -> None:
    root = _copy(corpus, tmp_path)
    items = build_corpus("synthetic", generator=TINY).read(root)
    bad = next(it for it in items if it.split == "train").media.path
    bad.write_bytes(bad.read_bytes()[:2000])
    dm = _module(root, tmp_path / "cache", on_error="skip")
    dm.prepare_data()
    dm.setup("fit")
    assert any(str(bad) in p.path for p in dm.problems)
    assert len({it.item_id for it in dm.datasets["train"].items}) == sum(it.split == "train" for it in items) - 1
    # A second run does not retry the bad item.
    again = _module(root, tmp_path / "cache", on_error="skip")
    again.setup("fit")
    assert len(again.datasets["train"].labels) == len(dm.datasets["train"].labels)


def test_ecg_shorter_than_video_is_named(corpus: Path, tmp_path: Path) -> None:
    root = _copy(corpus, tmp_path)
    ecg_path = sorted(root.rglob("ecg.csv"))[0]
    table = pd.read_csv(ecg_path)
    table.iloc[: len(table) // 2].to_csv(ecg_path, index=False)
    dm = _module(root, tmp_path / "cache")
    with pytest.raises(CorpusError, match=rf"{ecg_path.name}: ground truth covers .* shorter than the video"):
        dm.setup("fit")

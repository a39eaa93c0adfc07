"""The clip DataModule on a tiny generated corpus: shapes, masks, splits, cache reuse and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from stress_lightning.data.corpora import read_corpus
from stress_lightning.data.datamodules import SyntheticDataModule
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.synthetic import SyntheticConfig, generate_corpus

TINY = SyntheticConfig(num_subjects=4, duration_s=6.0, width=64, height=64, seed=3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dm") / "corpus"
    generate_corpus(root, TINY, progress=False, workers=1)
    return root


def _module(root: Path, cache: Path, **kwargs) -> SyntheticDataModule:
    return SyntheticDataModule(
        root=str(root),
        cache_dir=str(cache),
        generator=TINY,
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
    for key in ("expression_mask", "hr_mask", "hrv_mask", "stress_mask"):
        assert batch[key].dtype == torch.bool
    assert batch["stress_mask"].all() and batch["hr_mask"].all()
    # A missing label is zero with its mask off, never a sentinel.
    assert (batch["expression"][~batch["expression_mask"]] == 0).all()
    assert ((batch["hr_bpm"] > 40) & (batch["hr_bpm"] < 180)).all()


def test_splits_are_subject_disjoint(corpus: Path, tmp_path: Path) -> None:
    dm = _module(corpus, tmp_path / "cache")
    dm.setup("fit")
    subjects = {s: {r.subject_id for r in dm.datasets[s].records} for s in ("train", "val", "test")}
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
        record = ds.records[int(labels.session[i])]
        ecg = pd.read_csv(record.ecg_path)["ecg_mv"].to_numpy()
        t = detect_r_peaks(ecg, record.ecg_fs_hz) / record.ecg_fs_hz
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
    assert files[0].parent.parent.parent.name.startswith("synthetic_face32_roi8_")


def _copy(corpus: Path, tmp_path: Path) -> Path:
    target = tmp_path / "corpus"
    shutil.copytree(corpus, target)
    return target


def test_corrupt_video_is_named_and_finished_sessions_are_kept(corpus: Path, tmp_path: Path) -> None:
    root = _copy(corpus, tmp_path)
    records = read_corpus("synthetic", root)
    bad = records[len(records) // 2].video_path
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    dm = _module(root, tmp_path / "cache", workers=2)
    with pytest.raises(CorpusError, match=str(bad.relative_to(root))):
        dm.prepare_data()
    # Every other session is cached (the pool finishes them); nothing half-written is left.
    assert len(list((tmp_path / "cache").rglob("roi.npy"))) == len(records) - 1
    assert not list((tmp_path / "cache").rglob("*.tmp*"))


def test_ecg_shorter_than_video_is_named(corpus: Path, tmp_path: Path) -> None:
    root = _copy(corpus, tmp_path)
    ecg_path = sorted(root.rglob("ecg.csv"))[0]
    table = pd.read_csv(ecg_path)
    table.iloc[: len(table) // 2].to_csv(ecg_path, index=False)
    dm = _module(root, tmp_path / "cache")
    with pytest.raises(CorpusError, match=rf"{ecg_path.name}: ECG lasts .* but its video lasts"):
        dm.setup("fit")

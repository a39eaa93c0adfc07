"""LightningDataModules: a generic clip DataModule over any registered corpus, and the synthetic default."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from stress_lightning.data.cache import ClipCache, Preprocessing
from stress_lightning.data.clips import ClipLabels, ClipSpec, sample_clips
from stress_lightning.data.corpora.base import SPLITS, SessionRecord, read_corpus
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.labels import cardiac_truth, expression_timeline
from stress_lightning.data.sample import EXPRESSION_NAMES, STRESS_NAMES, Sample, make_sample
from stress_lightning.data.synthetic import SyntheticConfig, generate_corpus


def train_face_transform() -> v2.Transform:
    """Augmentation for the face window; v2 draws one set of parameters for all Tf frames of a clip."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=8, translate=(0.06, 0.06), scale=(0.9, 1.1)),
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.2),
        ]
    )


class ClipDataset(Dataset):
    def __init__(
        self,
        records: list[SessionRecord],
        cache: ClipCache,
        spec: ClipSpec,
        labels: ClipLabels,
        transform: v2.Transform | None = None,
    ) -> None:
        self.records = records
        self.cache = cache
        self.spec = spec
        self.labels = labels
        self.transform = transform
        self.offsets = spec.face_offsets()
        self._sessions: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def _session(self, i: int):
        if i not in self._sessions:
            self._sessions[i] = self.cache.load(self.records[i])
        return self._sessions[i]

    def __getitem__(self, index: int) -> Sample:
        lab = self.labels
        session = self._session(int(lab.session[index]))
        start = int(lab.start[index])
        centre = start + self.spec.roi_frames // 2
        # Copies out of the read-only memory map.
        roi = torch.from_numpy(np.array(session.roi[start : start + self.spec.roi_frames]))
        faces = session.faces[centre + self.offsets]  # fancy indexing copies: [Tf, S, S, 3] uint8
        frames = torch.from_numpy(faces).permute(0, 3, 1, 2)
        if self.transform is not None:
            frames = self.transform(frames)

        def known(values: np.ndarray, mask: np.ndarray) -> float | int | None:
            return values[index].item() if mask[index] else None

        sample = make_sample(
            frames.float().div_(255.0),
            roi,
            self.spec.fps,
            expression=known(lab.expression, lab.expression_mask),
            hr_bpm=known(lab.hr_bpm, lab.hr_mask),
            rmssd_ms=known(lab.rmssd_ms, lab.hrv_mask),
            lf_hf_ratio=known(lab.lf_hf_ratio, lab.hrv_mask),
            stress=known(lab.stress, lab.stress_mask),
        )
        sample["clip_index"] = torch.tensor(index, dtype=torch.int64)
        return sample


class ClipDataModule(pl.LightningDataModule):
    """Clips from any registered corpus, with subject-disjoint splits taken from the corpus.

    Args:
        corpus: registered reader name (see `stress_lightning.data.corpora`).
        root: corpus folder in its official layout.
        cache_dir: where decoded face crops and ROI grids are kept.
        fps: frame rate every session must have (the rPPG stream is built for one rate).
        clip_seconds: ROI window (rPPG and heart rate) per clip.
        train_stride_s / eval_stride_s: spacing of clip starts for training and for val/test/predict.
        face_frames / face_span_s: face crops per clip and the time they span around the clip centre.
        face_size / roi_size: face crop side and ROI grid side in pixels.
        augment: random flip/affine/colour jitter on training face crops.
        workers: processes that decode sessions into the cache (and, for the synthetic corpus, render them).
    """

    expression_names: tuple[str, ...] = EXPRESSION_NAMES
    stress_names: tuple[str, ...] = STRESS_NAMES

    def __init__(
        self,
        corpus: str = "synthetic",
        root: str = "data/synthetic",
        cache_dir: str = "data_cache",
        fps: float = 25.0,
        clip_seconds: float = 8.0,
        train_stride_s: float = 1.0,
        eval_stride_s: float = 2.0,
        face_frames: int = 8,
        face_span_s: float = 1.4,
        face_size: int = 64,
        roi_size: int = 8,
        batch_size: int = 16,
        num_workers: int = 0,
        augment: bool = True,
        progress: bool = True,
        workers: int = 2,
    ) -> None:
        super().__init__()
        self.workers = workers
        self.corpus = corpus
        self.root = Path(root)
        self.cache_dir = Path(cache_dir)
        self.fps = float(fps)
        self.spec = ClipSpec(fps=self.fps, clip_seconds=clip_seconds, face_frames=face_frames, face_span_s=face_span_s)
        # Clip geometry the model is built for (linked into the model by the CLI).
        self.roi_frames = self.spec.roi_frames
        self.face_frames = face_frames
        self.face_size = face_size
        self.roi_size = roi_size
        self.preprocessing = Preprocessing(face_size=face_size, roi_size=roi_size)
        self.train_stride_s = train_stride_s
        self.eval_stride_s = eval_stride_s
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.progress = progress
        self.datasets: dict[str, ClipDataset] = {}
        self._records: list[SessionRecord] | None = None

    # -- corpus -------------------------------------------------------------------------------------------
    def records(self) -> list[SessionRecord]:
        if self._records is None:
            records = read_corpus(self.corpus, self.root)
            for r in records:
                if abs(r.fps - self.fps) > 1e-6:
                    raise CorpusError(r.video_path, f"runs at {r.fps} fps but the data module expects {self.fps}")
            self._records = records
        return self._records

    @functools.cached_property
    def fingerprint(self) -> str:
        """Hash of the corpus content: the one the corpus states in corpus.json, else of its file names and sizes."""
        records = self.records()  # reads (or, for a generated corpus, first writes) the corpus
        manifest = self.root / "corpus.json"
        if manifest.is_file() and "fingerprint" in (meta := json.loads(manifest.read_text())):
            corpus_part = str(meta["fingerprint"])
        else:
            files = sorted(
                (str(p.relative_to(self.root)), p.stat().st_size)
                for r in records
                for p in (r.video_path, r.ecg_path, r.expressions_path, r.face_boxes_path)
                if p is not None and p.exists()
            )
            corpus_part = hashlib.sha256(json.dumps(files).encode()).hexdigest()
        return corpus_part

    def cache(self) -> ClipCache:
        return ClipCache(self.cache_dir, self.corpus, self.fingerprint, self.preprocessing)

    # -- Lightning hooks ----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.cache().build(self.records(), progress=self.progress, workers=self.workers)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        records = self.records()
        cache = self.cache()
        missing = [r.session_id for r in records if not cache.is_cached(r)]
        if missing:
            # prepare_data runs only on one process; a direct setup() call (or another rank) builds here.
            cache.build(records, progress=self.progress, workers=self.workers)
        cardiac = [cardiac_truth(r) for r in records]
        expressions = [expression_timeline(r.expressions_path) if r.expressions_path else None for r in records]
        for split in SPLITS:
            idx = [i for i, r in enumerate(records) if r.split == split]
            if not idx:
                raise CorpusError(self.root, f"has no sessions in the {split!r} split")
            split_records = [records[i] for i in idx]
            stride = self.train_stride_s if split == "train" else self.eval_stride_s
            labels = sample_clips(
                split_records, self.spec, stride, [cardiac[i] for i in idx], [expressions[i] for i in idx]
            )
            if len(labels) == 0:
                raise CorpusError(self.root, f"{split!r} split yields no clips of {self.spec.clip_seconds} s")
            transform = train_face_transform() if (split == "train" and self.augment) else None
            self.datasets[split] = ClipDataset(split_records, cache, self.spec, labels, transform)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(self.datasets[split]) > self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class SyntheticDataModule(ClipDataModule):
    """The embedded default: generates the synthetic corpus on first use (cached), then reads it like any corpus.

    Args:
        root: where the corpus is written (reused when its config matches).
        generator: the generator's settings (subjects, duration, fps, frame size, seed, codec, pulse source).
        Other arguments as in `ClipDataModule`; the frame rate comes from the generator.
    """

    def __init__(
        self,
        root: str = "data/synthetic",
        generator: SyntheticConfig | None = None,
        cache_dir: str = "data_cache",
        clip_seconds: float = 8.0,
        train_stride_s: float = 1.0,
        eval_stride_s: float = 2.0,
        face_frames: int = 8,
        face_span_s: float = 1.4,
        face_size: int = 64,
        roi_size: int = 8,
        batch_size: int = 16,
        num_workers: int = 0,
        augment: bool = True,
        progress: bool = True,
        workers: int = 2,
    ) -> None:
        self.generator = generator if generator is not None else SyntheticConfig()
        super().__init__(
            corpus="synthetic",
            root=root,
            cache_dir=cache_dir,
            fps=self.generator.fps,
            clip_seconds=clip_seconds,
            train_stride_s=train_stride_s,
            eval_stride_s=eval_stride_s,
            face_frames=face_frames,
            face_span_s=face_span_s,
            face_size=face_size,
            roi_size=roi_size,
            batch_size=batch_size,
            num_workers=num_workers,
            augment=augment,
            progress=progress,
            workers=workers,
        )

    def records(self) -> list[SessionRecord]:
        if self._records is None:
            generate_corpus(self.root, self.generator, progress=self.progress, workers=self.workers)
        return super().records()

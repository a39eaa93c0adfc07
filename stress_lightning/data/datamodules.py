"""The LightningDataModule over any registered corpus: videos and still images, any cardiac ground truth, the
run's own taxonomy.

`ClipDataModule` knows no corpus layout: it builds the corpus reader by name (`stress_lightning.data.corpora`),
lets it prepare itself (the synthetic corpus generates itself there), reads its items, caches faces and ROIs
(`cache.py`), samples clips (`clips.py`) and labels them (`labels.py`, `taxonomy.py`).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler

from stress_lightning.data.cache import ClipCache, Preprocessing
from stress_lightning.data.clips import (
    ClipLabels,
    ClipSpec,
    SamplingStats,
    class_counts,
    clip_window,
    sample_clips,
    stress_over,
)
from stress_lightning.data.corpora.base import Corpus, build_corpus, cardiac_coverage_problems
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import SPLITS, Item, PhysiologySeries, Problem
from stress_lightning.data.labels import CardiacTruth, GroundTruthWarning, cardiac_truth
from stress_lightning.data.personal import (
    PERSONAL_FEATURES,
    Context,
    Scale,
    personal_features,
    subject_baselines,
)
from stress_lightning.data.sample import Sample, make_physiology_sample, make_sample
from stress_lightning.data.sampling import EpochLoader, EpochSampler
from stress_lightning.data.sidecars import ItemSidecars, load_sidecars, sample_pulse, sample_track
from stress_lightning.data.taxonomy import (
    BASIC_EXPRESSIONS,
    STRESS_LEVELS,
    LabelMap,
    canonical_stress,
    check_classes,
)
from stress_lightning.data.transforms import ExpressionMix, face_train_transform, roi_train_transform


class ClipDataset(Dataset):
    """Samples from cached items: a video clip (face window + ROI window) or a still image (repeated face).

    Every sample also carries the item's sidecar streams at the clip's times (`body`, `landmarks`, `ppg`, each with
    its mask; `data.sidecars`), loaded once per item in each process that reads them (as the cached video is) and
    under `on_error`: "fail" raises `CorpusError` naming a bad file, "skip" masks that stream of the item, appends
    the problem to `problems` (the data module's own list when it reads in this process) and warns.
    `reader` is the corpus, whose cardiac loader reads the pulse waveforms; without it clips carry no `ppg`.
    """

    def __init__(
        self,
        items: list[Item],
        cache: ClipCache,
        spec: ClipSpec,
        labels: ClipLabels,
        roi_size: int,
        face_transform=None,
        roi_augment: bool | str = False,
        reader: Corpus | None = None,
        on_error: Literal["fail", "skip"] = "fail",
        problems: list[Problem] | None = None,
    ) -> None:
        self.items = items
        self.cache = cache
        self.spec = spec
        self.labels = labels
        self.roi_size = roi_size
        self.face_transform = face_transform
        self.roi_augment = roi_augment
        self.reader = reader
        self.on_error = on_error
        self.problems = problems if problems is not None else []
        self.offsets = spec.face_offsets()
        self._videos: dict[int, Any] = {}
        self._sidecars: dict[int, ItemSidecars] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        # Sent to other processes (shard writers): memory maps and sidecars are opened again there, not pickled whole.
        return {**self.__dict__, "_videos": {}, "_sidecars": {}}

    def _video(self, i: int):
        if i not in self._videos:
            self._videos[i] = self.cache.load_video(self.items[i])
        return self._videos[i]

    def _item_sidecars(self, i: int) -> ItemSidecars:
        if i not in self._sidecars:
            duration_s = len(self._video(i).valid) / self.spec.fps
            self._sidecars[i] = load_sidecars(self.items[i], self.reader, duration_s, self.on_error, self.problems)
        return self._sidecars[i]

    def clip_sidecars(self, index: int) -> dict[str, torch.Tensor | None]:
        """Sample `index`'s sidecar streams: `body` [Tf, 25, 3] and `landmarks` [Tf, 12, 2] at the face window's frame
        times, `ppg` [Tr] over the ROI window; None where not available (a still image, no sidecar, not covered).
        What `__getitem__` puts in the sample (and what a shard writer stores)."""
        i, start = int(self.labels.item[index]), int(self.labels.start[index])
        if start < 0:
            return {"body": None, "landmarks": None, "ppg": None}
        sidecars = self._item_sidecars(i)
        fps = self.spec.fps
        face_times = (start + self.spec.roi_frames // 2 + self.offsets) / fps
        roi_times = (start + np.arange(self.spec.roi_frames)) / fps
        values = {
            "body": sample_track(sidecars.body, face_times, body=True),
            "landmarks": sample_track(sidecars.landmarks, face_times),
            "ppg": sample_pulse(sidecars.ppg, roi_times),
        }
        return {k: (torch.from_numpy(v) if v is not None else None) for k, v in values.items()}

    def __getitem__(self, index: int) -> Sample:
        lab = self.labels
        i = int(lab.item[index])
        start = int(lab.start[index])
        still = start < 0
        sidecars: dict[str, torch.Tensor | None] = {}
        if still:
            face = torch.from_numpy(self.cache.load_still(self.items[i])).permute(2, 0, 1)
            frames = face.unsqueeze(0).expand(self.spec.face_frames, -1, -1, -1).contiguous()
            roi = torch.zeros(self.spec.roi_frames, 3, self.roi_size, self.roi_size)
        else:
            video = self._video(i)
            faces, roi = clip_window(video.faces, video.roi, start, self.spec.roi_frames, self.offsets)
            # Copies out of the read-only memory map.
            roi = torch.from_numpy(np.array(roi))
            frames = torch.from_numpy(faces).permute(0, 3, 1, 2)
            if self.roi_augment:
                preset = self.roi_augment if isinstance(self.roi_augment, str) else "gain"
                roi = roi_train_transform(roi, preset=preset, fps=self.spec.fps)
            sidecars = self.clip_sidecars(index)
        if self.face_transform is not None:
            frames = self.face_transform(frames)

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
            still=still,
            **sidecars,
        )
        sample["clip_index"] = torch.tensor(index, dtype=torch.int64)
        return sample

    def clip_attributes(self) -> list[dict[str, str]]:
        """Each sample's item attributes (gender, skin tone, ...), by sample index (= `clip_index`)."""
        return [dict(self.items[i].attributes) for i in self.labels.item.tolist()]


class PhysiologyDataset(Dataset):
    """One sample per labelled window of physiology-only records (SWELL-KW minutes): the person-relative
    features up to that window (`data.personal`) and the window's stress label."""

    def __init__(
        self,
        items: list[Item],
        series: list[PhysiologySeries],
        stress_labels: LabelMap,
        history_s: float | None = None,
        scale: Scale = "rank",
        context: Context = "causal",
    ) -> None:
        baselines = subject_baselines(series, [it.subject_id for it in items])
        self.items = items
        features, masks, stress, item_index = [], [], [], []
        for n, (item, record) in enumerate(zip(items, series, strict=True)):
            values, mask = personal_features(record, baselines[item.subject_id], history_s, scale, context)
            for k, t in enumerate(record.times_s):
                label = stress_over(item.stress, float(t), float(t) + record.window_s, stress_labels)
                if label is None or not mask[k].any():
                    continue
                features.append(values[k])
                masks.append(mask[k])
                stress.append(label)
                item_index.append(n)
        width = len(PERSONAL_FEATURES)
        self.personal = torch.as_tensor(np.asarray(features, dtype=np.float32).reshape(-1, width))
        self.personal_mask = torch.as_tensor(np.asarray(masks, dtype=bool).reshape(-1, width))
        self.stress = np.asarray(stress, dtype=np.int64)
        self.item_index = np.asarray(item_index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.stress)

    def clip_attributes(self) -> list[dict[str, str]]:
        """Each window's record attributes, by sample index."""
        return [dict(self.items[i].attributes) for i in self.item_index.tolist()]

    def __getitem__(self, index: int) -> Sample:
        return make_physiology_sample(self.personal[index], self.personal_mask[index], stress=int(self.stress[index]))


class ClipDataModule(pl.LightningDataModule):
    """Clips and images from any registered corpus, with the splits the corpus defines (subject-disjoint).

    Args:
        corpus: registry name (`stress-lightning data corpora` lists them).
        root: the corpus folder in its official layout (for `synthetic`: where it is generated).
        corpus_options: the reader's own options (e.g. `{generator: {...}}` for synthetic, `{layout: csv}`).
        on_error: "fail" stops at the first bad file (named in the error); "skip" leaves bad items out and
            reports every problem at the end.
        expression_classes / stress_levels: the run's taxonomy; the model's heads follow it.
        label_map / stress_label_map: the run's overrides of the corpus label maps (`{calm: neutral}`).
        cache_dir: where decoded faces and ROIs are kept.
        fps: clip rate; every video is resampled to it by timestamps.
        clip_seconds: ROI window (rPPG and heart rate) per clip.
        train_stride_s / eval_stride_s: spacing of clip starts for training and for val/test/predict.
        face_frames / face_span_s: face crops per clip and the time they span around the clip centre.
        face_size / roi_size: face crop side and ROI grid side in pixels.
        hrv_window_s: HRV is computed over this window around each clip (clamped to the recording).
        personal_history_s: physiology-only records (SWELL-KW): average the person-relative features over this
            many seconds before each window; None averages from the start of the recording (`data.personal`).
        personal_scale: "rank" (each value's rank among the person's own) or "robust_z".
        personal_context: "causal" (levels from the windows so far, as a live stream sees them) or "recording"
            (each recording's mean: offline scoring of recorded sessions).
        detector, detect_every, no_face: face pipeline for items without face boxes (see `Preprocessing`).
        augment: face-window augmentation on training samples ("default" preset; `augment_preset` to change).
        roi_augment: the rPPG ROI's training augmentation, "off", "gain" (one gain per colour channel per clip)
            or "camera" (that, plus webcam effects that keep the pulse: sensor noise, exposure and white-balance
            drift, quantisation, frame-time jitter; `data.transforms.roi_camera_transform`); None: "gain" when
            `augment`, else "off".
        mix: CutMix/MixUp on the training batches' face windows for the expression task.
        balanced_sampling: draw training samples with weights inverse to their expression class frequency.
        workers: processes that decode items into the cache (and, for the synthetic corpus, render them).
        splits: the splits to decode and serve (default all); `evaluate` decodes only the one it scores. The
            cache key still covers the whole corpus, so the cache is the one training uses.
        prepare_data_per_node: Lightning's flag: True (default) builds the cache once per machine (local rank 0),
            for nodes with their own disks; False builds it once in all (global rank 0), for a cache folder on
            storage every node shares.
        shards: a folder or object-store URL (`s3://...`) of clips written by `stress-lightning data shards`
            (`data.shards`); when set, the splits are streamed from it instead of the corpus and the local cache.
        shard_storage_options: passed to the object-store client (e.g. `{endpoint_url: ...}` for MinIO).
    """

    def __init__(
        self,
        corpus: str = "synthetic",
        root: str = "data/synthetic",
        corpus_options: dict[str, Any] | None = None,
        on_error: Literal["fail", "skip"] = "fail",
        expression_classes: list[str] | None = None,
        stress_levels: list[str] | None = None,
        label_map: dict[str, str | None] | None = None,
        stress_label_map: dict[str, str | None] | None = None,
        cache_dir: str = "data_cache",
        fps: float = 25.0,
        clip_seconds: float = 8.0,
        train_stride_s: float = 1.0,
        eval_stride_s: float = 2.0,
        face_frames: int = 8,
        face_span_s: float = 1.4,
        face_size: int = 64,
        roi_size: int = 8,
        hrv_window_s: float = 60.0,
        personal_history_s: float | None = None,
        personal_scale: Scale = "rank",
        personal_context: Context = "causal",
        detector: Literal["mediapipe", "haar"] = "mediapipe",
        detect_every: int = 10,
        no_face: Literal["whole_image", "skip", "fail"] = "whole_image",
        batch_size: int = 16,
        num_workers: int = 0,
        augment: bool = True,
        augment_preset: Literal["default", "light"] = "default",
        roi_augment: Literal["off", "gain", "camera"] | None = None,
        mix: bool = False,
        balanced_sampling: bool = False,
        progress: bool = True,
        workers: int = 2,
        splits: list[str] | None = None,
        prepare_data_per_node: bool = True,
        shards: str | None = None,
        shard_storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.prepare_data_per_node = bool(prepare_data_per_node)
        self.shards = shards
        self.shard_storage_options = dict(shard_storage_options or {})
        self._shard_train_loader: Any = None  # the ShardLoader whose position checkpoints keep
        self._shard_resume: dict[str, Any] | None = None  # that position, from a checkpoint, until the loader exists
        self._train_sampler: EpochSampler | None = None  # the cache path's training order (resumable mid-epoch)
        self._train_resume: dict[str, Any] | None = None
        unknown = sorted(set(splits or []) - set(SPLITS))
        if unknown:
            raise ValueError(f"splits: unknown split(s) {unknown}; known: {list(SPLITS)}")
        self.splits = list(splits or SPLITS)
        self.corpus = corpus
        self.root = Path(root)
        self.corpus_options = dict(corpus_options or {})
        self.on_error = on_error
        # The run's taxonomy (linked into the model by the CLI, recorded with the registered model).
        self.expression_classes = list(check_classes(expression_classes or BASIC_EXPRESSIONS, "expression_classes"))
        self.stress_levels = list(check_classes(stress_levels or STRESS_LEVELS, "stress_levels"))
        self.label_map = dict(label_map or {})
        self.stress_label_map = dict(stress_label_map or {})
        self.cache_dir = Path(cache_dir)
        self.fps = float(fps)
        self.spec = ClipSpec(fps=self.fps, clip_seconds=clip_seconds, face_frames=face_frames, face_span_s=face_span_s)
        # Clip geometry the model is built for (linked into the model by the CLI).
        self.roi_frames = self.spec.roi_frames
        self.face_frames = face_frames
        self.face_size = face_size
        self.roi_size = roi_size
        self.hrv_window_s = hrv_window_s
        self.personal_history_s = personal_history_s
        self.personal_scale = personal_scale
        self.personal_context = personal_context
        self.preprocessing = Preprocessing(
            fps=self.fps,
            face_size=face_size,
            roi_size=roi_size,
            detector=detector,
            detect_every=detect_every,
            no_face=no_face,
        )
        self.train_stride_s = train_stride_s
        self.eval_stride_s = eval_stride_s
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.augment_preset = augment_preset
        if roi_augment not in (None, "off", "gain", "camera"):
            raise ValueError(f"data.roi_augment must be off, gain, camera or null, got {roi_augment!r}")
        self.roi_augment = roi_augment if roi_augment is not None else ("gain" if augment else "off")
        self.mix = ExpressionMix(len(self.expression_classes)) if mix else None
        self.balanced_sampling = balanced_sampling
        self.progress = progress
        self.workers = workers
        self.datasets: dict[str, ClipDataset | PhysiologyDataset] = {}
        self.stats: dict[str, SamplingStats] = {}
        self.problems: list[Problem] = []
        self._items: list[Item] | None = None

    @property
    def face_pipeline(self) -> dict[str, Any]:
        """How faces were found and framed (linked into the model and stored with it, so inference on raw video
        repeats it): the face window's span, crop margin, detector and detection interval."""
        pre = self.preprocessing
        return {
            "face_span_s": self.spec.face_span_s,
            "face_margin": pre.face_margin,
            "detector": pre.detector,
            "detect_every": pre.detect_every,
        }

    # -- corpus -------------------------------------------------------------------------------------------
    @functools.cached_property
    def reader(self) -> Corpus:
        return build_corpus(self.corpus, on_error=self.on_error, **self.corpus_options)

    def items(self) -> list[Item]:
        """The corpus' items (preparing the corpus first where it prepares itself)."""
        if self._items is None:
            self._items = [it for it in self.all_items() if it.split in self.splits]
        return self._items

    @functools.cache  # noqa: B019  (one data module, one corpus read)
    def all_items(self) -> list[Item]:
        self.reader.prepare(self.root, progress=self.progress, workers=self.workers)
        items = self.reader.read_checked(self.root)
        self.problems.extend(self.reader.problems)
        return items

    @property
    def corpus_names(self) -> list[str]:
        """One corpus (linked into the model; `MixedDataModule` has several)."""
        return [self.corpus]

    @functools.cached_property
    def fingerprint(self) -> str:
        """Hash of the corpus content (the reader's own, e.g. the synthetic corpus' hash of every written file); with
        `shards`, the one their manifest records (the corpus is not read)."""
        if self.shards:
            return str(self.shard_manifest["fingerprint"])
        return self.reader.fingerprint(self.root, self.all_items())

    @functools.cached_property
    def shard_manifest(self) -> dict[str, Any]:
        """The manifest of the shard set `shards` (`data.shards.read_manifest`)."""
        from stress_lightning.data.shards import read_manifest

        return read_manifest(self.shards, self.shard_storage_options)

    def cache(self) -> ClipCache:
        return ClipCache(self.cache_dir, self.corpus, self.fingerprint, self.preprocessing)

    def expression_labels(self) -> LabelMap:
        return LabelMap(self.expression_classes, self.reader.expression_map, self.label_map)

    def stress_labels(self) -> LabelMap:
        return LabelMap(self.stress_levels, self.reader.stress_map, self.stress_label_map, synonyms=canonical_stress)

    # -- Lightning hooks ----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.shards:
            return  # streamed from the shard set: no corpus to read, no cache to build
        self._build_cache()

    def _build_cache(self) -> None:
        # Under DDP Lightning calls prepare_data on one process per machine (prepare_data_per_node, the default) or
        # one in all (False), then holds the others at a barrier; their setup then finds the cache complete. Other
        # processes that build the same folder at the same time (separate jobs) wait on the cache's build lock.
        media = [it for it in self.items() if not it.is_physiology]
        cache = self.cache()
        report = cache.build(self.reader, media, progress=self.progress, workers=self.workers)
        self.problems.extend(report.problems)
        if self.progress and (report.built or report.skipped):
            print(f"[data] {self.corpus}: cached {report.built} item(s) ({report.skipped} left out) in {cache.root}")

    @property
    def physiology_only(self) -> bool:
        """The corpus is physiology records only (SWELL-KW): no cache, no clips, only stress samples."""
        items = self.items()
        kinds = {it.is_physiology for it in items}
        if len(kinds) > 1:
            raise CorpusError(self.root, f"corpus {self.corpus!r} mixes physiology-only records with video/images")
        return bool(items) and items[0].is_physiology

    def _setup_physiology(self, stage: str | None) -> None:
        items = self.items()
        stress_map = self.stress_labels()
        series = [self.reader.load_physiology(it) for it in items]
        for split in SPLITS:
            idx = [i for i, it in enumerate(items) if it.split == split]
            if not idx:
                continue
            dataset = PhysiologyDataset(
                [items[i] for i in idx],
                [series[i] for i in idx],
                stress_map,
                self.personal_history_s,
                self.personal_scale,
                self.personal_context,
            )
            self.stats[split] = SamplingStats(clips=len(dataset))
            if len(dataset):
                self.datasets[split] = dataset
        if "train" not in self.datasets and stage in (None, "fit"):
            raise CorpusError(self.root, "the train split yields no labelled physiology windows")
        if self.progress:
            for split, dataset in self.datasets.items():
                counts = Counter(self.stress_levels[k] for k in dataset.stress.tolist())
                print(f"[data] {self.corpus} {split}: {len(dataset)} physiology windows; stress {dict(counts)}")

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.shards:
            self._setup_shards(stage)
            return
        if self.physiology_only:
            self._setup_physiology(stage)
            return
        items = self.items()
        cache = self.cache()
        if any(not cache.is_cached(it) for it in items):
            # prepare_data runs only on one process; a direct setup() call (or another rank) builds here.
            self._build_cache()
        failed = cache.failed_items()
        index = cache.still_index(refresh=True)
        usable = [it for it in items if it.item_id not in failed and (not it.is_still or it.item_id in index)]
        valid = [None if it.is_still else cache.load_video(it).valid for it in usable]
        cardiac = [self._cardiac(it, v) for it, v in zip(usable, valid, strict=True)]
        expression_map, stress_map = self.expression_labels(), self.stress_labels()
        for split in SPLITS:
            idx = [i for i, it in enumerate(usable) if it.split == split]
            split_items = [usable[i] for i in idx]
            stride = self.train_stride_s if split == "train" else self.eval_stride_s
            labels, stats = sample_clips(
                split_items,
                self.spec,
                stride,
                [cardiac[i] for i in idx],
                [valid[i] for i in idx],
                expression_map,
                stress_map,
            )
            self.stats[split] = stats
            if len(labels) == 0:
                continue
            train = split == "train"
            transform = face_train_transform(self.augment_preset) if (train and self.augment) else None
            self.datasets[split] = ClipDataset(
                split_items,
                cache,
                self.spec,
                labels,
                self.roi_size,
                transform,
                roi_augment=self.roi_augment if train and self.roi_augment != "off" else False,
                reader=self.reader,
                on_error=self.on_error,
                problems=self.problems,
            )
        if "train" not in self.datasets and stage in (None, "fit"):
            raise CorpusError(self.root, f"the train split yields no samples ({self._describe('train')})")
        self._print_summary(expression_map)

    def _cardiac(self, item: Item, valid: np.ndarray | None) -> CardiacTruth | None:
        if item.cardiac is None or valid is None:
            return None
        try:
            signal = self.reader.load_cardiac(item)
            if signal is None:
                return None
            coverage = cardiac_coverage_problems(
                signal,
                len(valid) / self.fps,
                item.cardiac.path,
                item.files()[0],
                ends_with_video=getattr(self.reader, "cardiac_ends_with_video", False),
            )
            if coverage:
                if self.on_error == "fail":
                    raise CorpusError(coverage[0].path, coverage[0].reason)
                self.problems.append(coverage[0])
            # Gaps in the ground truth (NaN runs, flat stretches) are warned about by the labeller: listed with the
            # run's other data problems, by file.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", GroundTruthWarning)
                truth = cardiac_truth(signal, self.hrv_window_s)
            for warning in caught:
                if issubclass(warning.category, GroundTruthWarning):
                    self.problems.append(Problem(str(item.cardiac.path), str(warning.message)))
                else:
                    warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
            return truth
        except CorpusError as exc:
            if self.on_error == "fail":
                raise
            self.problems.append(Problem(str(exc.path), f"{exc.problem} (cardiac labels of this item left out)"))
            return None

    def _describe(self, split: str) -> str:
        s = self.stats.get(split)
        if s is None:
            return "no items"
        return (
            f"{s.clips} clips, {s.stills} images; left out: {s.dropped_no_face} clips without a face, "
            f"{s.dropped_unlabelled} unlabelled images, {len(s.too_short)} items shorter than a clip "
            f"of {self.spec.clip_seconds:g} s (data.init_args.clip_seconds)"
        )

    def _print_summary(self, expression_map: LabelMap) -> None:
        if not self.progress:
            return
        for split in SPLITS:
            counts = (
                class_counts(self.datasets[split].labels, tuple(self.expression_classes))
                if (split in self.datasets)
                else Counter()
            )
            print(f"[data] {self.corpus} {split}: {self._describe(split)}; expression {dict(counts)}")
        if expression_map.unmapped:
            print(f"[data] labels left out (not in the run's classes): {dict(expression_map.unmapped)}")
        if self.problems:
            print(f"[data] {len(self.problems)} problem(s) found; first: {self.problems[:5]}")

    def _dataset(self, split: str) -> ClipDataset | PhysiologyDataset:
        if split not in self.datasets:
            self.setup()
        if split not in self.datasets:
            raise CorpusError(self.root, f"corpus {self.corpus!r} has no samples in the {split!r} split")
        return self.datasets[split]

    def clip_attributes(self, split: str, corpus_index: int | None = None) -> list[dict[str, str]]:
        """The group attributes (gender, skin tone, age, ... as the corpus writes them) of every sample of `split`,
        one dict per sample index (the `clip_index` its samples carry), for per-group metrics.

        `corpus_index` exists so one call fits this module and `MixedDataModule`; here it may only be None or 0.
        A split streamed from shards has no attributes (the records do not keep them): one empty dict per sample.
        """
        if corpus_index not in (None, 0):
            raise ValueError(f"clip_attributes: a single-corpus data module has corpus 0 only, got {corpus_index}")
        if self.shards:
            if not self.datasets:
                self.setup()
            entry = self.shard_manifest["splits"].get(split)
            if split not in self.datasets or entry is None:
                raise CorpusError(self.root, f"corpus {self.corpus!r} has no samples in the {split!r} split")
            return [{} for _ in range(int(entry["samples"]))]
        return self._dataset(split).clip_attributes()  # type: ignore[union-attr]

    def _distributed_sampler_kwargs(self) -> dict[str, int] | None:
        """`{num_replicas, rank}` when the attached trainer runs several processes (DDP, FSDP), else None."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.world_size <= 1:
            return None
        return trainer.distributed_sampler_kwargs

    def _eval_sampler(self, dataset: Dataset, split: str) -> Sampler | None:
        """Under several processes, every evaluation sample on exactly one of them.

        Lightning's default for val/test is a DistributedSampler that pads the ranks to equal length with repeated
        samples, which the metrics would then count twice. The unrepeated sampler leaves the ranks off by at most one
        sample, which evaluation allows (no collective runs per batch; torchmetrics and the logged means sync once at
        the epoch's end), and Lightning keeps a sampler that is already a DistributedSampler as it is.
        """
        kwargs = self._distributed_sampler_kwargs()
        if kwargs is None:
            return None
        if len(dataset) < kwargs["num_replicas"]:
            raise CorpusError(
                self.root,
                f"the {split!r} split has {len(dataset)} sample(s), fewer than the {kwargs['num_replicas']} processes "
                "that evaluate it (each needs at least one); evaluate it on fewer devices",
            )
        return UnrepeatedDistributedSampler(dataset, shuffle=False, **kwargs)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        from stress_lightning.tracking.lifecycle import ignore_stop_signals_in_worker

        if self.shards:
            return self._shard_loader(split, shuffle)
        dataset = self._dataset(split)
        sampler: Sampler | None = None
        generator = None
        distributed = self._distributed_sampler_kwargs()
        if shuffle and not distributed:
            # One process: the order is a function of (seed, epoch), so a fit resumed mid-epoch finishes the epoch
            # as the uninterrupted one would have (data.sampling). Under DDP Lightning's DistributedSampler (seeded
            # the same way, but not resumable mid-epoch) takes the place of the shuffle.
            weights = None
            if self.balanced_sampling and isinstance(dataset, ClipDataset):
                weights = balanced_weights(dataset.labels)
            sampler = EpochSampler(len(dataset), _run_seed(), weights)
            generator = sampler.loader_generator
            self._train_sampler = sampler
            resume, self._train_resume = self._train_resume, None
            if resume is not None and "batches" in resume:
                sampler.resume(int(resume["epoch"]), int(resume["batches"]) * self.batch_size)
        elif shuffle and self.balanced_sampling and isinstance(dataset, ClipDataset):
            sampler = WeightedRandomSampler(balanced_weights(dataset.labels), len(dataset), replacement=True)
        elif not shuffle:
            sampler = self._eval_sampler(dataset, split)
        # Under DDP Lightning gives each training process 1/world_size of the samples: whether the last partial batch
        # is dropped depends on that share (a share smaller than one batch would otherwise train on nothing).
        replicas = (distributed or {}).get("num_replicas", 1)
        share = -(-len(dataset) // replicas)
        loader_class = EpochLoader if isinstance(sampler, EpochSampler) else DataLoader
        return loader_class(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and share > self.batch_size,
            generator=generator,
            worker_init_fn=ignore_stop_signals_in_worker if self.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        if self.mix is not None and trainer is not None and trainer.training:
            batch = self.mix(batch)
        return batch

    # -- shards (`data.shards`): the splits streamed from a shard set instead of the corpus and the cache --------
    def _setup_shards(self, stage: str | None) -> None:
        from stress_lightning.data.shards import (
            MANIFEST,
            ShardedClipDataset,
            ShardError,
            check_manifest,
            geometry_of,
            join,
        )

        manifest = self.shard_manifest
        check_manifest(
            manifest,
            self.shards,
            self.expression_classes,
            self.stress_levels,
            geometry_of(self),
            {key: getattr(self.preprocessing, key) for key in ("detector", "detect_every", "face_margin", "no_face")},
        )
        where = join(self.shards, MANIFEST)
        if self.balanced_sampling:
            raise ShardError(
                where,
                "balanced_sampling needs a sampler over the whole split, a streamed split has none: set "
                "data.init_args.balanced_sampling false or train from the cache",
            )
        trainer = getattr(self, "trainer", None)
        world = trainer.world_size if trainer is not None else 1
        # Every rank must shuffle alike for litdata to hand each its own part: the run's seed, not a per-rank one.
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        for split in SPLITS:
            entry = manifest["splits"].get(split)
            if split not in self.splits or entry is None:
                continue
            self.stats[split] = SamplingStats(clips=int(entry["clips"]), stills=int(entry["stills"]))
            samples = int(entry["samples"])
            if samples == 0:
                continue
            train = split == "train"
            if not train and samples < world:
                raise ShardError(
                    where,
                    f"the {split!r} split has {samples} sample(s), fewer than the {world} processes that "
                    "evaluate it (each needs at least one); evaluate it on fewer devices",
                )
            # Training: whole batches, equal on every rank (None lets litdata decide: True under DDP). Evaluation:
            # every sample exactly once, the ranks may differ by a few (no collective runs per evaluation batch).
            drop_last = (True if samples > self.batch_size * world else None) if train else False
            transform = face_train_transform(self.augment_preset) if (train and self.augment) else None
            self.datasets[split] = ShardedClipDataset(
                self.shards,
                split,
                shuffle=train,
                seed=seed,
                drop_last=drop_last,
                face_transform=transform,
                roi_augment=self.roi_augment if train and self.roi_augment != "off" else False,
                storage_options=self.shard_storage_options,
                manifest=manifest,
            )
        if "train" not in self.datasets and stage in (None, "fit"):
            raise ShardError(where, "has no train samples (write them with `data shards --splits train ...`)")
        if self.progress:
            for split in SPLITS:
                entry = manifest["splits"].get(split)
                if split in self.datasets and entry is not None:
                    print(
                        f"[data] {self.corpus} {split}: {entry['samples']} samples ({entry['clips']} clips, "
                        f"{entry['stills']} images) from shards {self.shards}; expression {entry['expression']}"
                    )

    def _shard_loader(self, split: str, shuffle: bool) -> DataLoader:
        from stress_lightning.data.shards import MANIFEST, ShardError, join, shard_loader

        if not self.datasets:
            self.setup()
        dataset = self.datasets.get(split)
        if dataset is None:
            raise ShardError(join(self.shards, MANIFEST), f"has no samples in the {split!r} split")
        batch_size = self.batch_size
        trainer = getattr(self, "trainer", None)
        world = trainer.world_size if trainer is not None else 1
        if not (split == "train" and shuffle) and world > 1:
            # litdata deals an evaluation stream to the ranks in whole batches, the remainder to the last rank: with
            # fewer batches than ranks a rank would get none (and Lightning stops). Smaller batches then.
            samples = int(self.shard_manifest["splits"][split]["samples"])
            batch_size = max(1, min(batch_size, samples // world))
        loader = shard_loader(dataset, batch_size, self.num_workers)
        if split == "train" and shuffle:
            self._shard_train_loader = loader
            resume, self._shard_resume = self._shard_resume, None
            if resume is not None and "loader" in resume:
                loader.resume(resume["loader"])  # the interrupted epoch goes on where it stopped
            elif resume is not None:
                loader.current_epoch = int(resume["epoch"])  # the next epoch shuffles as the uninterrupted run did
        return loader

    def state_dict(self) -> dict[str, Any]:
        """Where the training order stands, for a fit resumed mid-epoch to finish the epoch (not start it again):
        the epoch and the batches the trainer consumed (Lightning fetches one ahead, so a loader's own count would
        be one too far). Shards: the stream's position (see `ShardLoader`); the cache: the `EpochSampler`'s."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress
        batches = int(progress.current.processed)
        finished = progress.is_last_batch or batches >= trainer.num_training_batches
        loader = self._shard_train_loader
        if loader is not None:
            state: dict[str, Any] = {"epoch": int(loader.current_epoch)}
            if 0 < batches and not finished:
                state["loader"] = loader.state_after(batches)
            return {"shards_train": state}
        sampler = self._train_sampler
        if sampler is None:
            return {}
        state = {"epoch": int(sampler.epoch), "seed": sampler.seed}
        if 0 < batches and not finished:
            state["batches"] = batches
        return {"train_sampler": state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Called before the loaders exist (Lightning restores the datamodule first): kept until train_dataloader().
        self._shard_resume = state_dict.get("shards_train")
        resume = state_dict.get("train_sampler")
        if resume is not None and int(resume.get("seed", _run_seed())) != _run_seed():
            print(
                f"[data] the checkpoint's training order was seeded with {resume['seed']}, this run with "
                f"{_run_seed()}: the interrupted epoch is not continued where it stopped"
            )
            resume = None
        self._train_resume = resume


def _run_seed() -> int:
    """The run's seed (`seed_everything`, which LightningCLI always sets), else torch's initial seed."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else int(torch.initial_seed() % 2**63)


def balanced_weights(labels: ClipLabels) -> torch.Tensor:
    """Per-sample weights inverse to the expression class frequency (unlabelled samples get the mean weight)."""
    weights = np.ones(len(labels), dtype=np.float64)
    mask = labels.expression_mask
    if mask.any():
        classes, counts = np.unique(labels.expression[mask], return_counts=True)
        per_class = dict(zip(classes.tolist(), (1.0 / counts).tolist(), strict=True))
        weights[mask] = [per_class[c] for c in labels.expression[mask].tolist()]
        weights[~mask] = weights[mask].mean()
    return torch.as_tensor(weights / weights.sum())

"""Several corpora in one run: expression from a face corpus, rPPG from one with cardiac truth, stress from a
stress corpus, at once.

`MixedDataModule` holds one `ClipDataModule` per corpus, all with the run's taxonomy and clip geometry (the model
is built once for them). Training steps draw one batch from every corpus (Lightning's `CombinedLoader`), so each
step trains every task; a sample carries only its own labels and the module masks the rest. Evaluation goes
through the corpora one after the other in a single loader whose batches never mix corpora and carry
`corpus_index`, so the module logs pooled metrics under `{stage}/...` and per-corpus ones under
`{stage}/{corpus}/...`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import BatchSampler, ConcatDataset, DataLoader, Dataset, DistributedSampler, Sampler

from stress_lightning.data.datamodules import ClipDataModule
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import Problem
from stress_lightning.data.sample import Sample
from stress_lightning.data.taxonomy import BASIC_EXPRESSIONS, STRESS_LEVELS, check_classes

# ClipDataModule arguments the mixed module sets for every corpus (the model is built for one geometry and one
# taxonomy); a corpus entry that sets one of them is an error.
SHARED_ARGUMENTS: tuple[str, ...] = (
    "expression_classes",
    "stress_levels",
    "cache_dir",
    "fps",
    "clip_seconds",
    "face_frames",
    "face_span_s",
    "face_size",
    "roi_size",
    "progress",
    "workers",
    "prepare_data_per_node",
)


class Tagged(Dataset):
    """A corpus' dataset whose samples carry the corpus' index in the run."""

    def __init__(self, dataset: Dataset, index: int) -> None:
        self.dataset = dataset
        self.index = torch.tensor(index, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Sample:
        sample = dict(self.dataset[i])
        sample["corpus_index"] = self.index
        return sample


class CorpusBatchSampler(BatchSampler):
    """Batches over a `ConcatDataset` that never cross a corpus boundary, corpus after corpus, in order.

    `sampler` only tells which process this is. Under DDP Lightning re-creates every `BatchSampler` with a
    DistributedSampler as its `sampler` argument; this process then takes every `num_replicas`-th batch from its
    `rank` on, so each sample is evaluated on exactly one process and none is repeated to even out the processes
    (they may differ by a batch, which evaluation allows). Any other sampler (None, Lightning's SequentialSampler):
    every batch, in order.
    """

    def __init__(self, sizes: Sequence[int], batch_sizes: Sequence[int], sampler: Sampler | None = None) -> None:
        self.sizes = list(sizes)
        self.batch_sizes = list(batch_sizes)
        super().__init__(range(sum(self.sizes)) if sampler is None else sampler, max(self.batch_sizes), False)
        self.rank, self.num_replicas = 0, 1
        if isinstance(sampler, DistributedSampler):
            self.rank, self.num_replicas = int(sampler.rank), int(sampler.num_replicas)
        total = sum(-(-size // batch) for size, batch in zip(self.sizes, self.batch_sizes, strict=True))
        if total < self.num_replicas:
            # A process without a batch would not log the epoch's losses the others synchronise, and they would hang.
            raise ValueError(
                f"the mixed run's evaluation has {total} batch(es) for {self.num_replicas} processes; each needs at "
                "least one: evaluate on fewer devices or with smaller batches"
            )
        self._batches = range(self.rank, total, self.num_replicas)

    def _all_batches(self) -> Iterator[list[int]]:
        offset = 0
        for size, batch in zip(self.sizes, self.batch_sizes, strict=True):
            for start in range(0, size, batch):
                yield list(range(offset + start, offset + min(start + batch, size)))
            offset += size

    def __iter__(self) -> Iterator[list[int]]:
        for k, batch in enumerate(self._all_batches()):
            if k % self.num_replicas == self.rank:
                yield batch

    def __len__(self) -> int:
        return len(self._batches)


class MixedDataModule(pl.LightningDataModule):
    """Several corpora, one run.

    Args:
        corpora: corpus name in the run (used in metric names: letters, digits, `_-`) -> the `ClipDataModule`
            arguments of that corpus (`corpus`, `root`, `corpus_options`, `batch_size`, `augment`, ...), except
            the shared ones below.
        expression_classes, stress_levels: the run's taxonomy, for every corpus (each maps its labels to it).
        cache_dir, fps, clip_seconds, face_frames, face_span_s, face_size, roi_size: shared geometry and cache.
        train_mode: how the training `CombinedLoader` walks corpora of different lengths: `max_size_cycle` (an
            epoch is the longest corpus, shorter ones restart), `min_size` (the shortest) or `max_size` (the
            longest; exhausted corpora drop out of the step).
        progress, workers, prepare_data_per_node: as in `ClipDataModule` (the corpora share the cache folder, so
            Lightning's flag is set once, for them all).
    """

    def __init__(
        self,
        corpora: dict[str, dict[str, Any]],
        expression_classes: list[str] | None = None,
        stress_levels: list[str] | None = None,
        cache_dir: str = "data_cache",
        fps: float = 25.0,
        clip_seconds: float = 8.0,
        face_frames: int = 8,
        face_span_s: float = 1.4,
        face_size: int = 64,
        roi_size: int = 8,
        train_mode: Literal["max_size_cycle", "min_size", "max_size"] = "max_size_cycle",
        progress: bool = True,
        workers: int = 2,
        prepare_data_per_node: bool = True,
    ) -> None:
        super().__init__()
        # Lightning reads this flag from the data module it is given, this one: the corpora's own are the same.
        self.prepare_data_per_node = bool(prepare_data_per_node)
        if not corpora:
            raise ValueError("data.corpora: name at least one corpus")
        self.expression_classes = list(check_classes(expression_classes or BASIC_EXPRESSIONS, "expression_classes"))
        self.stress_levels = list(check_classes(stress_levels or STRESS_LEVELS, "stress_levels"))
        shared = {
            "expression_classes": self.expression_classes,
            "stress_levels": self.stress_levels,
            "cache_dir": cache_dir,
            "fps": fps,
            "clip_seconds": clip_seconds,
            "face_frames": face_frames,
            "face_span_s": face_span_s,
            "face_size": face_size,
            "roi_size": roi_size,
            "progress": progress,
            "workers": workers,
            "prepare_data_per_node": self.prepare_data_per_node,
        }
        self.modules: dict[str, ClipDataModule] = {}
        for name, arguments in corpora.items():
            if not name or not all(c.isalnum() or c in "_-" for c in name):
                raise ValueError(f"data.corpora: corpus name {name!r} must be letters, digits, '_' or '-'")
            if (arguments or {}).get("shards"):
                # The multi-corpus evaluation loader indexes each corpus' dataset directly; streamed shards have no
                # random access. Shards serve single-corpus runs (docs/SHARDS.md).
                raise ValueError(f"data.corpora.{name}: shards are not supported in a multi-corpus run; read the cache")
            clash = sorted(set(arguments or {}) & set(SHARED_ARGUMENTS))
            if clash:
                raise ValueError(
                    f"data.corpora.{name}: {clash} are set once for all corpora (data.{clash[0]}), not per corpus"
                )
            self.modules[name] = ClipDataModule(**{**(arguments or {}), **shared})
        self.train_mode = train_mode
        first = next(iter(self.modules.values()))
        # Geometry the model is built for (linked into the model by the CLI), the same for every corpus.
        self.fps = first.fps
        self.roi_frames = first.roi_frames
        self.face_frames = first.face_frames
        self.face_size = first.face_size
        self.roi_size = first.roi_size

    @property
    def face_pipeline(self) -> dict[str, Any]:
        """The face pipeline stored with the model: the first corpus' (the face window is shared; detector settings
        may differ per corpus, and inference on raw video repeats the first one's)."""
        return next(iter(self.modules.values())).face_pipeline

    @property
    def corpus_names(self) -> list[str]:
        """The corpora's names in the run, in order (linked into the model for per-corpus metrics)."""
        return list(self.modules)

    @property
    def fingerprint(self) -> str:
        """One hash over every corpus' fingerprint (each is also in `fingerprints`)."""
        payload = json.dumps(self.fingerprints, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def fingerprints(self) -> dict[str, str]:
        return {name: module.fingerprint for name, module in self.modules.items()}

    @property
    def problems(self) -> list[Problem]:
        return [p for module in self.modules.values() for p in module.problems]

    def clip_attributes(self, split: str, corpus_index: int | None = None) -> list[dict[str, str]]:
        """The group attributes of every sample of one corpus' `split`, one dict per sample index: evaluation
        samples carry `corpus_index` (the corpus' place in `corpus_names`) and `clip_index` (the sample's index in
        that corpus' dataset), so `clip_attributes(split, corpus_index)[clip_index]` is a sample's. A corpus without
        that split gives []. `corpus_index` may be left out only in a run of one corpus."""
        modules = list(self.modules.values())
        if corpus_index is None:
            if len(modules) != 1:
                raise ValueError(
                    f"clip_attributes: this run has {len(modules)} corpora {self.corpus_names}; name one by "
                    "corpus_index (its place in corpus_names)"
                )
            corpus_index = 0
        if not 0 <= corpus_index < len(modules):
            raise ValueError(f"clip_attributes: corpus_index {corpus_index} not in 0..{len(modules) - 1}")
        module = modules[corpus_index]
        if not module.datasets:
            module.setup("validate")
        if split not in module.datasets:
            return []
        return module.clip_attributes(split)

    # -- Lightning hooks ----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        for module in self.modules.values():
            module.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        for name, module in self.modules.items():
            try:
                # A corpus may serve only evaluation; whether the run has training data is checked over all.
                module.setup(stage if stage != "fit" else "validate")
            except CorpusError as exc:
                raise CorpusError(exc.path, f"{exc.problem} (corpus {name!r} of the mixed run)") from exc
        if stage in (None, "fit") and not any("train" in m.datasets for m in self.modules.values()):
            raise CorpusError(next(iter(self.modules.values())).root, "no corpus of the mixed run has training samples")

    def train_dataloader(self) -> CombinedLoader:
        loaders = {name: m.train_dataloader() for name, m in self.modules.items() if "train" in m.datasets}
        return CombinedLoader(loaders, mode=self.train_mode)

    def _eval_loader(self, split: str) -> DataLoader:
        parts, sizes, batch_sizes = [], [], []
        for index, module in enumerate(self.modules.values()):
            if split in module.datasets:
                dataset = module.datasets[split]
                parts.append(Tagged(dataset, index))
                sizes.append(len(dataset))
                batch_sizes.append(module.batch_size)
        if not parts:
            raise CorpusError(
                next(iter(self.modules.values())).root, f"no corpus of the mixed run has a {split!r} split"
            )
        first = next(iter(self.modules.values()))
        return DataLoader(
            ConcatDataset(parts),
            batch_sampler=CorpusBatchSampler(sizes, batch_sizes),
            num_workers=first.num_workers,
            persistent_workers=first.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        # Predictions are written per clip of one corpus (PredictionCSVWriter); a mixed run has no single one.
        raise CorpusError(
            next(iter(self.modules.values())).root,
            "predict runs on one corpus: give the checkpoint with that corpus' config, e.g. "
            "`stress-lightning predict --config conf/synthetic.yaml --ckpt_path ...`",
        )

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        if trainer is None or not trainer.training:
            return batch
        # CutMix/MixUp of each corpus that asks for it, on its own part of the step.
        return {
            name: self.modules[name].mix(sub) if (sub is not None and self.modules[name].mix is not None) else sub
            for name, sub in batch.items()
        }

"""Clips as litdata shards: written once from the local cache, streamed from local disk or object storage.

A shard set is a folder (or an `s3://`, `gs://`, `r2://` prefix it was uploaded to):

    shards.json            the manifest (`MANIFEST`): format version, corpus and fingerprint, taxonomy, clip
                           geometry, sampling settings, per split the sample count, class counts and merged parts
    train/ val/ test/      one litdata dataset per split (`index.json` + `chunk-*.bin`)

Each sample is stored as the cache holds it, before any augmentation: the face window as uint8 [Tf, S, S, 3] (a
still image: its one face [1, S, S, 3]), the ROI window as float32 [Tr, 3, R, R] (a still: [0, 3, R, R]), every
label with its mask, and its identity (`clip_index` within the split, `item_id`, `subject_id`, first frame).
`ShardedClipDataset` turns a record into the same `Sample` `ClipDataset` serves and applies the training
augmentation when reading, so a run on shards and a run on the cache see the same samples.

Writing runs in `workers` processes (`litdata.optimize`); a large corpus can be written by several machines, each
one part (`part=(i, n)`: the i-th of n contiguous ranges of every split's write order), and the parts joined with
`merge_parts` (`litdata.merge_datasets`). Writing and merging work on a local or shared folder; upload the
finished set to object storage with any S3 client and train from its URL.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import re
import shutil
import tempfile
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

# litdata asks PyPI for a newer release of itself on every optimize() and dataset (a 30 s timeout offline): a
# training run has no business on the network for that.
os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
import litdata  # noqa: E402
from litdata import StreamingDataLoader, StreamingDataset  # noqa: E402

from stress_lightning.data.cache import ClipCache, Preprocessing
from stress_lightning.data.clips import ClipLabels, ClipSpec, clip_window
from stress_lightning.data.items import SPLITS, Item
from stress_lightning.data.sample import Sample, make_sample
from stress_lightning.data.transforms import roi_train_transform

if TYPE_CHECKING:
    from stress_lightning.data.datamodules import ClipDataModule

MANIFEST = "shards.json"
FORMAT = "stress-lightning-shards"
# 2: records carry the sidecar streams (body keypoints, landmarks, pulse waveform) with their masks.
FORMAT_VERSION = 2
SIDECAR_STREAMS = ("body", "landmarks", "ppg")
PARTS_DIR = "parts"
REMOTE_SCHEMES = ("s3", "gs", "r2")
# What the run's config must agree on with the shard set (the model's heads and input shapes follow them).
GEOMETRY_KEYS = ("fps", "roi_frames", "face_frames", "face_span_s", "face_size", "roi_size")
# Settings that must be equal in every part of one shard set.
HEADER_KEYS = (
    "format",
    "version",
    "corpus",
    "fingerprint",
    "taxonomy",
    "geometry",
    "labels",
    "sampling",
    "preprocessing",
)
PART_NAME = re.compile(r"part-(\d+)-of-(\d+)\.json")
# The training split is written in this seeded random order (evaluation splits in clip order): litdata shuffles the
# order of the chunks and the samples inside a chunk, so a chunk of consecutive clips of one session would fill whole
# batches with one person. The same permutation on every machine, so that parts tile it.
WRITE_ORDER_SEED = 0
# Cached videos a writer keeps memory-mapped at once.
OPEN_VIDEOS = 32


class ShardError(ValueError):
    """A shard set (or one of its parts) is missing, malformed or does not fit the run; names where and what."""

    def __init__(self, location: str | Path, problem: str) -> None:
        self.location = str(location)
        self.problem = problem
        super().__init__(f"{self.location}: {problem}")

    def __reduce__(self):
        return (type(self), (self.location, self.problem))


# -- locations --------------------------------------------------------------------------------------------------
def is_remote(url: str | Path) -> bool:
    """An object-store URL (`s3://`, `gs://`, `r2://`) rather than a folder."""
    return str(url).split("://", 1)[0] in REMOTE_SCHEMES and "://" in str(url)


def join(url: str | Path, *parts: str) -> str:
    """`url/part/...` for folders and object-store prefixes alike."""
    return "/".join([str(url).rstrip("/"), *parts])


def _fs_provider(url: str, storage_options: Mapping[str, Any] | None):
    # litdata's own object-store clients (boto3 for s3/r2, google-cloud-storage for gs), configured like its reader.
    from litdata.streaming.fs_provider import GCPFsProvider, R2FsProvider, S3FsProvider

    providers = {"s3": S3FsProvider, "gs": GCPFsProvider, "r2": R2FsProvider}
    return providers[str(url).split("://", 1)[0]](storage_options=dict(storage_options or {}))


def allow_plain_http(storage_options: Mapping[str, Any] | None) -> None:
    """Let litdata fetch chunks from an `http://` S3 endpoint (a local MinIO, as the compose file runs one).

    litdata 0.2 downloads S3 chunks with obstore, whose HTTP client refuses plain http unless told to, and offers no
    option for it: the endpoint's scheme is the user's choice, so `allow_http` is added to the client options litdata
    hands obstore. Process-wide, and only for an http endpoint."""
    if not str((storage_options or {}).get("endpoint_url", "")).startswith("http://"):
        return
    from litdata.streaming import downloader

    options = getattr(downloader, "_OBSTORE_CLIENT_OPTIONS", None)
    if isinstance(options, dict):
        options["allow_http"] = True


def _read_text(url: str, storage_options: Mapping[str, Any] | None) -> str | None:
    """The file's text, or None when it does not exist."""
    if not is_remote(url):
        path = Path(url)
        return path.read_text(encoding="utf-8") if path.is_file() else None
    fs = _fs_provider(url, storage_options)
    if not fs.exists(url):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "manifest.json")
        fs.download_file(url, local)
        return Path(local).read_text(encoding="utf-8")


def _local_dir(output_dir: str | Path, option: str) -> Path:
    if is_remote(output_dir):
        raise ShardError(
            output_dir,
            f"{option} must be a local or shared folder: write and merge the shards there, then upload the set "
            "(e.g. `aws s3 sync DIR s3://bucket/prefix`) and train from its URL (docs/SHARDS.md)",
        )
    return Path(output_dir)


def _write_json(path: Path, obj: Mapping[str, Any]) -> None:
    # Written beside and renamed: a reader never sees half a manifest.
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# -- the manifest -----------------------------------------------------------------------------------------------
def geometry_of(datamodule: ClipDataModule) -> dict[str, float | int]:
    """The clip geometry a datamodule serves (what the model's input shapes follow)."""
    return {
        "fps": float(datamodule.fps),
        "roi_frames": int(datamodule.roi_frames),
        "face_frames": int(datamodule.face_frames),
        "face_span_s": float(datamodule.spec.face_span_s),
        "face_size": int(datamodule.face_size),
        "roi_size": int(datamodule.roi_size),
    }


def taxonomy_of(datamodule: ClipDataModule) -> dict[str, list[str]]:
    return {"expression_classes": list(datamodule.expression_classes), "stress_levels": list(datamodule.stress_levels)}


def _header(datamodule: ClipDataModule) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "corpus": datamodule.corpus,
        "fingerprint": str(datamodule.fingerprint),
        "corpus_root": str(datamodule.root),
        "taxonomy": taxonomy_of(datamodule),
        "geometry": geometry_of(datamodule),
        "labels": {"label_map": dict(datamodule.label_map), "stress_label_map": dict(datamodule.stress_label_map)},
        "sampling": {
            "clip_seconds": float(datamodule.spec.clip_seconds),
            "train_stride_s": float(datamodule.train_stride_s),
            "eval_stride_s": float(datamodule.eval_stride_s),
            "hrv_window_s": float(datamodule.hrv_window_s),
        },
        "preprocessing": asdict(datamodule.preprocessing),
    }


def read_manifest(url: str | Path, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of the shard set at `url` (a folder or object-store prefix), checked for its format."""
    where = join(url, MANIFEST)
    try:
        text = _read_text(where, storage_options)
    except OSError as exc:
        raise ShardError(where, f"cannot be read: {exc}") from exc
    if text is None:
        hint = "not a shard set written by `stress-lightning data shards`"
        if not is_remote(url) and any((Path(url) / PARTS_DIR).glob("part-*-of-*.json")):
            hint = f"its parts were never merged (run `stress-lightning data shards --merge --out {url}`)"
        raise ShardError(where, f"missing: {hint}")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ShardError(where, f"not valid JSON ({exc}); the shard set is damaged: write it again") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ShardError(where, f'not a stress-lightning shard manifest (no "format": {FORMAT!r})')
    if manifest.get("version") != FORMAT_VERSION:
        raise ShardError(
            where,
            f"shard format version {manifest.get('version')!r}; this package reads version {FORMAT_VERSION}: "
            "write the shards again with this version",
        )
    missing = [key for key in (*HEADER_KEYS, "splits") if key not in manifest]
    if missing:
        raise ShardError(where, f"lacks {missing}; the shard set is damaged: write it again")
    return manifest


def check_manifest(
    manifest: Mapping[str, Any],
    url: str | Path,
    expression_classes: Sequence[str],
    stress_levels: Sequence[str],
    geometry: Mapping[str, float | int],
    preprocessing: Mapping[str, Any] | None = None,
) -> None:
    """Fail, naming the option, when the shard set was written for another taxonomy or clip geometry than the run's
    (the model would be built for one and fed the other), or with another face pipeline (the model records the run's
    and inference would repeat that one)."""
    where = join(url, MANIFEST)
    written = manifest["taxonomy"]
    for key, run in (("expression_classes", list(expression_classes)), ("stress_levels", list(stress_levels))):
        if list(written.get(key, [])) != run:
            raise ShardError(
                where,
                f"written for {key} {written.get(key)}, the run has {run} (data.init_args.{key}): use the config the "
                "shards were written with, or write them again with this one",
            )
    for key in GEOMETRY_KEYS:
        have, want = manifest["geometry"].get(key), geometry[key]
        if have is None or not np.isclose(float(have), float(want)):
            raise ShardError(
                where,
                f"clip geometry differs: the shards have {key}={have}, the run has {key}={want} "
                f"(data.init_args; roi_frames follows clip_seconds and fps): use the config the shards were written "
                "with, or write them again with this one",
            )
    written_pre = manifest.get("preprocessing", {})
    for key, want in (preprocessing or {}).items():
        if key in written_pre and written_pre[key] != want:
            raise ShardError(
                where,
                f"faces were found with {key}={written_pre[key]!r}, the run has {key}={want!r} (data.init_args): the "
                "model would record a face pipeline its training data did not go through; use the config the shards "
                "were written with, or write them again with this one",
            )


# -- writing ----------------------------------------------------------------------------------------------------
class _ClipRecords:
    """Sample index -> the record stored in the shards (picklable: sent to litdata's worker processes, which open
    the cache themselves)."""

    def __init__(
        self,
        items: list[Item],
        labels: ClipLabels,
        spec: ClipSpec,
        roi_size: int,
        cache_args: tuple[Path, str, str, Preprocessing],
        sidecars: Callable[[int], Mapping[str, torch.Tensor | None]] | None = None,
    ) -> None:
        # `sidecars`: sample index -> its sidecar streams (`ClipDataset.clip_sidecars`), None where absent.
        self.sidecars = sidecars
        self.items = items
        self.labels = labels
        self.spec = spec
        self.roi_size = roi_size
        self.cache_args = cache_args
        self.offsets = spec.face_offsets()
        self._cache: ClipCache | None = None
        self._videos: OrderedDict[int, Any] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps would be pickled as whole arrays: each worker opens its own.
        return {**self.__dict__, "_cache": None, "_videos": OrderedDict()}

    @property
    def cache(self) -> ClipCache:
        if self._cache is None:
            self._cache = ClipCache(*self.cache_args)
        return self._cache

    def __call__(self, index: int) -> dict[str, Any]:
        lab = self.labels
        i = int(lab.item[index])
        item = self.items[i]
        start = int(lab.start[index])
        still = start < 0
        if still:
            frames = self.cache.load_still(item)[None]
            roi = np.zeros((0, 3, self.roi_size, self.roi_size), np.float32)
        else:
            if i not in self._videos:
                self._videos[i] = self.cache.load_video(item)
                if len(self._videos) > OPEN_VIDEOS:  # the training split comes in shuffled order: keep a few open
                    self._videos.popitem(last=False)
            self._videos.move_to_end(i)
            video = self._videos[i]
            frames, roi = clip_window(video.faces, video.roi, start, self.spec.roi_frames, self.offsets)
            frames, roi = np.ascontiguousarray(frames), np.array(roi)
        streams = self.sidecars(index) if (self.sidecars is not None and not still) else {}
        shapes = {
            "body": (self.spec.face_frames, 25, 3),
            "landmarks": (self.spec.face_frames, 12, 2),
            "ppg": (self.spec.roi_frames,),
        }
        # Fixed shapes whatever is present (zeros + mask False), as the sample has them.
        sidecar_fields: dict[str, Any] = {}
        for name, shape in shapes.items():
            value = streams.get(name)
            sidecar_fields[name] = np.zeros(shape, np.float32) if value is None else np.asarray(value, np.float32)
            sidecar_fields[f"{name}_mask"] = value is not None
        return {
            **sidecar_fields,
            "clip_index": int(index),
            # bytes, not str: litdata would store a str that names an existing file as that file's content.
            "item_id": item.item_id.encode("utf-8"),
            "subject_id": item.subject_id.encode("utf-8"),
            "start": start,
            "still": bool(still),
            "frames": frames,
            "roi": roi,
            "expression": int(lab.expression[index]),
            "expression_mask": bool(lab.expression_mask[index]),
            "hr_bpm": float(lab.hr_bpm[index]),
            "hr_mask": bool(lab.hr_mask[index]),
            "rmssd_ms": float(lab.rmssd_ms[index]),
            "lf_hf_ratio": float(lab.lf_hf_ratio[index]),
            "hrv_mask": bool(lab.hrv_mask[index]),
            "stress": int(lab.stress[index]),
            "stress_mask": bool(lab.stress_mask[index]),
        }


def parse_part(text: str) -> tuple[int, int]:
    """`"I/N"` -> (i, n) with 0 <= i < n; ValueError says what is wrong."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"{text!r}: expected I/N, e.g. 0/4 (part I of N, counted from 0)")
    i, n = int(match.group(1)), int(match.group(2))
    if n < 1 or i >= n:
        raise ValueError(f"{text!r}: N must be >= 1 and I one of 0..N-1 (parts are counted from 0)")
    return i, n


def _check_part(part: tuple[int, int]) -> None:
    i, n = part
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"part {i}/{n}: N must be >= 1 and I in 0..N-1 (parts are counted from 0)")


def part_range(total: int, part: tuple[int, int]) -> tuple[int, int]:
    """Positions [start, stop) in the write order of part i of n of a split of `total` samples (near-equal)."""
    i, n = part
    return i * total // n, (i + 1) * total // n


def _part_name(part: tuple[int, int]) -> str:
    return f"part-{part[0]}-of-{part[1]}"


def _has_dataset(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _split_summary(datamodule: ClipDataModule, split: str) -> dict[str, Any]:
    dataset = datamodule.datasets[split]
    labels = dataset.labels
    stats = datamodule.stats[split]
    expression = Counter(datamodule.expression_classes[k] for k in labels.expression[labels.expression_mask])
    stress = Counter(datamodule.stress_levels[k] for k in labels.stress[labels.stress_mask])
    return {
        "samples": len(labels),
        "clips": int(stats.clips),
        "stills": int(stats.stills),
        "subjects": sorted({dataset.items[i].subject_id for i in np.unique(labels.item).tolist()}),
        "expression": {name: expression[name] for name in datamodule.expression_classes},
        "stress": {name: stress[name] for name in datamodule.stress_levels},
    }


def write_shards(
    datamodule: ClipDataModule,
    output_dir: str | Path,
    splits: Sequence[str] = SPLITS,
    workers: int = 1,
    part: tuple[int, int] | None = None,
    chunk_bytes: str | int = "64MB",
    compression: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write each split's samples, as `ClipDataset` serves them without augmentation, as litdata shards under
    `output_dir/<split>/` with `workers` processes, and the manifest `output_dir/shards.json`.

    The training split is written in a seeded random order (`WRITE_ORDER_SEED`), the others in clip order. With
    `part=(i, n)` only the i-th of n contiguous ranges of every split's write order is written, into
    `output_dir/<split>/part-<i>-of-<n>/` with its manifest `output_dir/parts/part-<i>-of-<n>.json` (one machine
    each, on a shared folder or copied together later); `merge_parts` joins them. The corpus is read and its cache
    built first (`prepare_data`), as a training run would. Returns the samples written per split.
    """
    out = _local_dir(output_dir, "output_dir")
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or not splits:
        raise ValueError(f"splits: unknown or none {unknown or list(splits)}; known: {list(SPLITS)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if part is not None:
        _check_part(part)
    if compression is not None and compression not in available_compressions():
        available = available_compressions() or "none (install the zstd package)"
        raise ValueError(f"compression {compression!r} is not available here; available: {available}")
    if datamodule.shards:
        raise ValueError(
            f"the datamodule reads shards already (shards={datamodule.shards!r}); shards are written from the corpus: "
            "leave data.init_args.shards unset"
        )
    missing_splits = [s for s in splits if s not in datamodule.splits]
    if missing_splits:
        raise ValueError(f"splits {missing_splits} are not served by the datamodule (data.init_args.splits)")
    if datamodule.physiology_only:
        from stress_lightning.data.errors import CorpusError

        raise CorpusError(
            datamodule.root,
            f"corpus {datamodule.corpus!r} holds physiology records only (no video, no images): its samples are a "
            "few numbers per window, read from the corpus in seconds; it is not sharded",
        )
    datamodule.prepare_data()
    datamodule.setup("fit" if "train" in splits else "test")
    header = _header(datamodule)
    manifest_path = out / MANIFEST
    previous_splits: dict[str, Any] = {}
    if part is None and manifest_path.is_file():
        previous = read_manifest(out)
        if all(previous.get(key) == header.get(key) for key in HEADER_KEYS):
            previous_splits = previous["splits"]  # another run wrote other splits of this set: they stay
        elif not overwrite:
            raise ShardError(
                manifest_path, "was written from another corpus or config: choose another folder or pass --overwrite"
            )
    # Every target is checked before anything is written: a refused run leaves the folder as it was.
    targets = {}
    for split in splits:
        dataset = datamodule.datasets.get(split)
        if dataset is None or len(dataset) == 0:
            if progress:
                print(f"[shards] {split}: no samples, nothing written")
            continue
        target = out / split / _part_name(part) if part is not None else out / split
        if _has_dataset(target) and not overwrite:
            raise ShardError(target, "already holds shards: choose another output folder or pass --overwrite")
        targets[split] = target
    cache_args = (datamodule.cache_dir, datamodule.corpus, str(datamodule.fingerprint), datamodule.preprocessing)
    written: dict[str, int] = {}
    split_entries: dict[str, Any] = {}
    for split, target in targets.items():
        dataset = datamodule.datasets[split]
        total = len(dataset)
        start, stop = part_range(total, part) if part is not None else (0, total)
        if target.exists():
            shutil.rmtree(target)
        entry = _split_summary(datamodule, split)
        entry["range"] = [start, stop]
        shuffled = split == "train"
        entry["write_order"] = {"shuffled": shuffled, "seed": WRITE_ORDER_SEED if shuffled else None}
        order = np.random.default_rng(WRITE_ORDER_SEED).permutation(total) if shuffled else np.arange(total)
        written[split] = stop - start
        if stop > start:
            if progress:
                print(f"[shards] {split}: writing samples {start}..{stop - 1} of {total} with {workers} worker(s)")
            target.mkdir(parents=True, exist_ok=True)
            records = _ClipRecords(
                dataset.items, dataset.labels, datamodule.spec, datamodule.roi_size, cache_args, dataset.clip_sidecars
            )
            litdata.optimize(
                fn=records,
                inputs=order[start:stop].tolist(),
                output_dir=str(target),
                chunk_bytes=chunk_bytes,
                compression=compression,
                num_workers=min(workers, stop - start),
                # Each worker writes a static slice in order: a set written twice is laid out the same way.
                keep_data_ordered=True,
                # The workers only read the cache's arrays and write chunks: forking them costs ~0.1 s where a spawned
                # one re-imports torch and this package (~5 s, per split).
                start_method="fork" if "fork" in multiprocessing.get_all_start_methods() else None,
                # litdata's own output is an advert and a bar that moves only when a worker finishes.
                verbose=False,
            )
        split_entries[split] = entry
        if progress:
            print(f"[shards] {split}: {stop - start} samples -> {target}")
    storage = {"chunk_bytes": chunk_bytes, "compression": compression, "litdata": litdata.__version__}
    if part is None:
        for entry in split_entries.values():
            entry.pop("range")
            entry["parts"] = []
        out.mkdir(parents=True, exist_ok=True)
        _write_json(manifest_path, {**header, "storage": storage, "splits": {**previous_splits, **split_entries}})
    else:
        (out / PARTS_DIR).mkdir(parents=True, exist_ok=True)
        part_manifest = {**header, "storage": storage, "part": list(part), "splits": split_entries}
        _write_json(out / PARTS_DIR / f"{_part_name(part)}.json", part_manifest)
    return written


def available_compressions() -> list[str]:
    """The chunk compressions litdata offers here (zstd, zstd:1..22 with the zstd package installed)."""
    from litdata.streaming.compression import _COMPRESSORS

    return sorted(_COMPRESSORS)


def merge_parts(output_dir: str | Path, progress: bool = True) -> dict[str, int]:
    """Join the parts written with `write_shards(part=...)` into `output_dir/<split>/` (`litdata.merge_datasets`),
    write the manifest and remove the parts. Every part of 0..N-1 must be there; a missing one is named. Returns the
    samples per split."""
    out = _local_dir(output_dir, "output_dir")
    folder = out / PARTS_DIR
    found = sorted(folder.glob("part-*-of-*.json")) if folder.is_dir() else []
    if not found:
        raise ShardError(folder, "no parts to merge (part-I-of-N.json): write them with `data shards --part I/N`")
    parts: dict[tuple[int, int], dict[str, Any]] = {}
    for path in found:
        match = PART_NAME.fullmatch(path.name)
        if not match:
            continue
        try:
            parts[(int(match.group(1)), int(match.group(2)))] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ShardError(path, f"cannot be read ({exc}): write this part again") from exc
    counts = {n for _, n in parts}
    if len(counts) != 1:
        raise ShardError(folder, f"parts of different splittings ({sorted(counts)} parts): keep one N and write again")
    n = counts.pop()
    missing = [i for i in range(n) if (i, n) not in parts]
    if missing:
        names = ", ".join(str(folder / f"{_part_name((i, n))}.json") for i in missing)
        raise ShardError(
            names, f"missing part(s) {missing} of {n}: write them with `data shards --part I/{n}` and merge again"
        )
    first = parts[(0, n)]
    for key, manifest in parts.items():
        for field_name in HEADER_KEYS:
            if manifest.get(field_name) != first.get(field_name):
                raise ShardError(
                    folder / f"{_part_name(key)}.json",
                    f"{field_name!r} differs from part 0 of {n}: all parts must come from one corpus and config",
                )
        if manifest.get("storage", {}).get("compression") != first.get("storage", {}).get("compression"):
            raise ShardError(folder / f"{_part_name(key)}.json", "written with another compression than part 0")
    splits = [s for s in SPLITS if any(s in m["splits"] for m in parts.values())]
    entries: dict[str, Any] = {}
    for split in splits:
        target = out / split
        if (target / "index.json").is_file():
            raise ShardError(target, "already holds a merged split: remove it or write the set to another folder")
        sources: list[Path] = []
        records = []
        for i in range(n):
            entry = parts[(i, n)]["splits"].get(split)
            if entry is None:
                raise ShardError(folder / f"{_part_name((i, n))}.json", f"has no {split!r} split while others have")
            start, stop = entry["range"]
            source = target / _part_name((i, n))
            if stop > start:
                if not (source / "index.json").is_file():
                    raise ShardError(source, f"missing or incomplete (no index.json): write part {i}/{n} again")
                sources.append(source)
            records.append({"part": i, "of": n, "range": [start, stop], "samples": stop - start})
        _merge_split(sources, target)
        merged = {k: v for k, v in parts[(0, n)]["splits"][split].items() if k != "range"}
        merged["parts"] = records
        entries[split] = merged
        if progress:
            print(f"[shards] {split}: {merged['samples']} samples from {len(sources)} part(s) -> {target}")
    _write_json(out / MANIFEST, {**{k: v for k, v in first.items() if k not in ("part", "splits")}, "splits": entries})
    # The merged copies are in place and the manifest written: the parts are no longer needed.
    for split in splits:
        for i in range(n):
            shutil.rmtree(out / split / _part_name((i, n)), ignore_errors=True)
    shutil.rmtree(folder)
    return {split: entry["samples"] for split, entry in entries.items()}


def _merge_split(sources: list[Path], target: Path) -> None:
    if len(sources) == 1:
        # merge_datasets wants two or more inputs; one part is the split already.
        target.mkdir(parents=True, exist_ok=True)
        for path in sources[0].iterdir():
            os.replace(path, target / path.name)
        return
    litdata.merge_datasets([str(s) for s in sources], str(target))


# -- reading ----------------------------------------------------------------------------------------------------
class ShardedClipDataset(StreamingDataset):
    """One split of a shard set, streamed by litdata; yields the `Sample`s `ClipDataset` yields (augmentation, when
    asked, applied here at read time).

    Args:
        url: the shard set (folder or `s3://...` prefix holding `shards.json`).
        split: train, val or test.
        shuffle / seed: litdata's shuffle (chunk order, then samples within a window), a new order each epoch.
        drop_last: litdata's: equal sample counts on every rank and worker; None: True under DDP.
        face_transform / roi_augment: the training augmentation (`ClipDataset`'s).
        storage_options: the object-store client's options (e.g. `{"endpoint_url": ...}` for MinIO).
        manifest: the set's manifest when already read (else it is read here).
        streaming_options: further `litdata.StreamingDataset` arguments (cache_dir, max_cache_size, ...);
            `batch_decode` defaults to 0 here (per-item decoding), not litdata's "auto".
    """

    def __init__(
        self,
        url: str,
        split: str,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool | None = None,
        face_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        roi_augment: bool | str = False,
        storage_options: Mapping[str, Any] | None = None,
        manifest: Mapping[str, Any] | None = None,
        **streaming_options: Any,
    ) -> None:
        url = str(url)
        allow_plain_http(storage_options)
        manifest = dict(manifest) if manifest is not None else read_manifest(url, storage_options)
        if split not in manifest["splits"]:
            raise ShardError(join(url, MANIFEST), f"has no {split!r} split; it holds {sorted(manifest['splits'])}")
        # litdata's default decodes a window of neighbouring records per item ("auto"), which a shuffled read then
        # mostly throws away: 260 vs 2,734 samples/s on 50k clips (benchmarks/results/shards.md). Decode per item.
        streaming_options.setdefault("batch_decode", 0)
        super().__init__(
            join(url, split),
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            storage_options=dict(storage_options or {}),
            **streaming_options,
        )
        expected = int(manifest["splits"][split]["samples"])
        stored = sum(end - start for start, end in self.region_of_interest)
        if stored != expected:
            raise ShardError(
                join(url, split),
                f"holds {stored} samples, the manifest says {expected}: an incomplete copy or a damaged set",
            )
        self.manifest = manifest
        self.split_name = split
        geometry = manifest["geometry"]
        self.fps = float(geometry["fps"])
        self.face_frames = int(geometry["face_frames"])
        self.roi_frames = int(geometry["roi_frames"])
        self.roi_size = int(geometry["roi_size"])
        self.face_transform = face_transform
        self.roi_augment = roi_augment

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A loader worker started by spawn imports litdata afresh: the http allowance goes with the dataset.
        self.__dict__.update(state)
        allow_plain_http(self.storage_options)

    def __getitem__(self, index: Any) -> Any:
        record = super().__getitem__(index)
        if isinstance(record, list):
            return [self.decode(r) for r in record]
        return self.decode(record)

    def decode(self, record: Mapping[str, Any]) -> Sample:
        """A stored record -> the Sample `ClipDataset` serves (same tensors, same order of random draws)."""
        still = bool(record["still"])
        frames = torch.as_tensor(record["frames"]).permute(0, 3, 1, 2)
        if still:
            frames = frames.expand(self.face_frames, -1, -1, -1).contiguous()
            roi = torch.zeros(self.roi_frames, 3, self.roi_size, self.roi_size)
        else:
            roi = torch.as_tensor(record["roi"])
            if self.roi_augment:
                preset = self.roi_augment if isinstance(self.roi_augment, str) else "gain"
                roi = roi_train_transform(roi, preset=preset, fps=self.fps)
        if self.face_transform is not None:
            frames = self.face_transform(frames)

        def known(name: str, mask: str) -> Any:
            return record[name] if record[mask] else None

        hrv = record["hrv_mask"]
        sample = make_sample(
            frames.float().div_(255.0),
            roi,
            self.fps,
            expression=known("expression", "expression_mask"),
            hr_bpm=known("hr_bpm", "hr_mask"),
            rmssd_ms=record["rmssd_ms"] if hrv else None,
            lf_hf_ratio=record["lf_hf_ratio"] if hrv else None,
            stress=known("stress", "stress_mask"),
            still=still,
            **{name: torch.as_tensor(record[name]) if record[f"{name}_mask"] else None for name in SIDECAR_STREAMS},
        )
        sample["clip_index"] = torch.tensor(int(record["clip_index"]), dtype=torch.int64)
        return sample


class ShardLoader(StreamingDataLoader):
    """`litdata.StreamingDataLoader` that a trainer can put back in the middle of an epoch.

    Two things stand between litdata's resumable loader and Lightning's fit loop:
    - Lightning fetches one batch ahead of the training step, so the loader's own `state_dict()` taken at a
      checkpoint is a batch past what was trained, and resuming from it would skip that batch. `state_after(k)` is
      the state after exactly k batches of the current epoch; `resume(state)` applies it and makes a later
      `load_state_dict` (Lightning's fit loop restoring its ahead-by-one copy) a no-op.
    - litdata replays a restored position on every new iteration until one runs to the end of the data, but the
      trainer stops at its batch count without exhausting the loader, so every later epoch would replay the
      finished one's remainder (nothing). Here only the first iteration after a restore continues the epoch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resumed = False
        self._continue_epoch = False

    def state_after(self, batches: int) -> dict[str, Any]:
        """The loader state after `batches` batches of its current epoch (every rank consumes the same number)."""
        state = copy.deepcopy(self.state_dict())
        samples = int(batches) * int(self.batch_size or 1)
        dataset_state = state["dataset"]
        ahead = int(dataset_state["num_samples_yielded"]) - samples
        dataset_state["num_samples_yielded"] = samples
        if "sample_in_epoch" in dataset_state:  # counted over all ranks
            dataset_state["sample_in_epoch"] -= ahead * int(dataset_state.get("world_size", 1))
        state["num_samples_yielded"] = samples
        state["latest_worker_idx"] = (int(batches) - 1) % max(1, self.num_workers)
        return state

    def resume(self, state: Mapping[str, Any]) -> None:
        """Continue the epoch at `state` (from `state_after`) on the next iteration."""
        super().load_state_dict(dict(state))
        self._resumed = True
        self._continue_epoch = bool(self.restore)

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        if self._resumed:
            return
        super().load_state_dict(obj)
        self._continue_epoch = bool(self.restore)

    def __iter__(self) -> Any:
        if self._continue_epoch:
            self._continue_epoch = False
        else:
            self.restore = False  # a new epoch, whatever position an earlier restore left behind
        yield from super().__iter__()


def shard_loader(
    dataset: ShardedClipDataset,
    batch_size: int,
    num_workers: int,
    **kwargs: Any,
) -> ShardLoader:
    """A `StreamingDataLoader` over a sharded split. litdata splits the stream across DDP ranks and loader workers
    itself (no sampler: Lightning adds none to a loader over an IterableDataset)."""
    return ShardLoader(dataset, batch_size=batch_size, num_workers=num_workers, **kwargs)

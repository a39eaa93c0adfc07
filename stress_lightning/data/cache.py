"""Preprocessing cache: each item decoded once into face crops (and, for video, ROI grids), keyed by a config hash.

The folder name spells out the preprocessing (`<corpus>_25fps_face64_roi8_<hash>`) so a person can tell caches
apart; the hash covers the corpus fingerprint, the preprocessing settings and the cache format version, so a
change in any of them gets a new folder instead of stale arrays.

- **Video items** (`videos/<item_id>/`): frames are decoded as a stream, each gets a face (the corpus' own boxes,
  else detection + tracking) and is resampled *by timestamp* to the data module's clip rate: the ROI grid is
  linearly interpolated between the two frames around each target time (a pulse survives a change of rate), the
  face crop is the nearest frame's. Targets inside a gap longer than `MAX_GAP_S` (dropped frames) or without a
  face are marked invalid rather than invented. Arrays: `faces.npy` [N,S,S,3] uint8, `roi.npy` [N,3,R,R]
  float32, `valid.npy` [N] bool, `meta.json`.
- **Still items** (`stills/chunk_XXXXX.*`): face crops of up to `STILL_CHUNK` images per chunk file.

Everything is written to a temporary name and renamed into place, so a run that dies mid-way keeps every finished
session and chunk and never leaves one that reads as valid. One process builds a cache folder at a time: a builder
holds an OS file lock (`.build.lock` in the folder, released when its process ends, however it ends); a second one
(another rank, job or machine on shared storage) waits for it, then builds only what is still missing.

Bad input is reported by path (`CacheReport`); with `on_error="skip"` the item is left out and the run goes on,
with `"fail"` the first problem raises after the work in flight has been saved.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from stress_lightning.data.corpora.base import Corpus
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import Item, Problem, VideoFile
from stress_lightning.data.video import declared_duration, ends_early, probe_video
from stress_lightning.storage import OutputFolderError, check_output_folder, describe_write_error, write_error_of

CACHE_VERSION = 2
STILL_CHUNK = 1024
# Longer gaps between decoded frames are not interpolated over: the pulse cannot be recovered across them.
MAX_GAP_S = 0.25

CHUNK_NAME = re.compile(r"chunk_(\d+)\.json")
BUILD_LOCK = ".build.lock"

NoFacePolicy = Literal["whole_image", "skip", "fail"]


@dataclass(frozen=True)
class Preprocessing:
    """Settings that change what the cache holds (all are part of its key).

    Args:
        fps: clip rate every video is resampled to.
        face_size, roi_size, face_margin: face crop side, ROI grid side, margin around the face.
        detector: face detection for items without boxes: "mediapipe" (detection + landmark tracking) or "haar".
        detect_every: run the detector every N frames on video, tracking in between.
        no_face: a still image with no face found: use the whole image, skip it (reported) or fail.
    """

    fps: float = 25.0
    face_size: int = 64
    roi_size: int = 8
    face_margin: float = 0.1
    detector: str = "mediapipe"
    detect_every: int = 10
    no_face: NoFacePolicy = "whole_image"


@dataclass(frozen=True)
class CachedVideo:
    faces: np.ndarray  # [N, S, S, 3] uint8 (memory-mapped)
    roi: np.ndarray  # [N, 3, R, R] float32 (memory-mapped)
    valid: np.ndarray  # [N] bool: a face was found at that time and no long gap was bridged


@dataclass
class CacheReport:
    """What building the cache found: problems by path, and counts."""

    problems: list[Problem] = field(default_factory=list)
    built: int = 0
    skipped: int = 0

    def extend(self, other: CacheReport) -> None:
        self.problems.extend(other.problems)
        self.built += other.built
        self.skipped += other.skipped


def _safe_relpath(item_id: str) -> str:
    parts = [re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in item_id.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "_"


class ClipCache:
    def __init__(self, cache_dir: str | Path, corpus: str, corpus_fingerprint: str, preprocessing: Preprocessing):
        self.preprocessing = preprocessing
        key = json.dumps(
            {"corpus": corpus, "fingerprint": corpus_fingerprint, "pre": asdict(preprocessing), "v": CACHE_VERSION},
            sort_keys=True,
        )
        self.key = hashlib.sha256(key.encode()).hexdigest()
        fps = f"{preprocessing.fps:g}".replace(".", "p")
        name = f"{corpus}_{fps}fps_face{preprocessing.face_size}_roi{preprocessing.roi_size}_{self.key[:12]}"
        self.root = Path(cache_dir) / name
        # Free space a build wants before it starts (a full disk mid-build is reported too, by folder).
        self.min_free_mb = 50.0
        self._still_index: dict[str, tuple[int, int]] | None = None
        self._chunks: dict[int, np.ndarray] = {}

    # -- layout -------------------------------------------------------------------------------------------
    def video_dir(self, item: Item) -> Path:
        return self.root / "videos" / _safe_relpath(item.item_id)

    def is_cached(self, item: Item) -> bool:
        if item.is_still:
            # The index is read once and dropped after each build: refreshing it per item would read every chunk's
            # JSON once per image (hours on AffectNet).
            return item.item_id in self.still_index()
        return _complete(self.video_dir(item))

    def still_index(self, refresh: bool = False) -> dict[str, tuple[int, int]]:
        """item_id -> (chunk, row) over every finished chunk."""
        if self._still_index is None or refresh:
            index: dict[str, tuple[int, int]] = {}
            for chunk, meta in self._chunk_files():
                entry = _read_chunk(meta)
                if entry is None:
                    continue  # incomplete: its items count as not cached and are built again
                for row, item_id in enumerate(entry["items"]):
                    if item_id is not None:
                        index[item_id] = (chunk, row)
            self._still_index = index
        return self._still_index

    def _chunk_files(self) -> list[tuple[int, Path]]:
        """(number, path) of every finished still chunk; a `.tmp<pid>.json` left by a killed run is not one."""
        folder = self.root / "stills"
        if not folder.is_dir():
            return []
        found = ((CHUNK_NAME.fullmatch(p.name), p) for p in folder.iterdir())
        return sorted((int(m.group(1)), p) for m, p in found if m)

    def failed_items(self) -> set[str]:
        """Items a previous build reported and left out (so a rerun does not retry them forever)."""
        failed: set[str] = set()
        for path in self.root.glob("**/problems.json"):
            failed.update(p["item_id"] for p in json.loads(path.read_text()) if p.get("item_id"))
        return failed

    def problems(self) -> list[Problem]:
        found = []
        for path in sorted(self.root.glob("**/problems.json")):
            found.extend(Problem(p["path"], p["reason"]) for p in json.loads(path.read_text()))
        return found

    # -- building -----------------------------------------------------------------------------------------
    def _missing(self, corpus: Corpus, items: Sequence[Item]) -> tuple[list[Item], list[Item]]:
        """(videos, stills) of `items` not cached yet, leaving out those a previous build reported (on_error=skip)."""
        failed = self.failed_items() if corpus.on_error == "skip" else set()
        videos = [it for it in items if not it.is_still and not self.is_cached(it) and it.item_id not in failed]
        index = self.still_index(refresh=True)
        stills = [it for it in items if it.is_still and it.item_id not in index and it.item_id not in failed]
        return videos, stills

    @contextmanager
    def build_lock(self) -> Iterator[None]:
        """Hold the folder's build lock (waiting, with a message, while another process holds it).

        An OS lock (flock) on `<root>/.build.lock`: the kernel releases it when the holder dies, so a killed build
        never blocks the next one. On network file systems it needs working locks (NFSv4; Lustre mounted with
        `flock`).
        """
        check_output_folder(self.root, "the preprocessing cache")
        lock = FileLock(self.root / BUILD_LOCK)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f"[cache] {self.root}: another process is building this cache; waiting for it", file=sys.stderr)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def build(self, corpus: Corpus, items: Sequence[Item], progress: bool = True, workers: int = 1) -> CacheReport:
        """Cache every item not cached yet, in `workers` processes. Returns what was found (what this call built).

        With the corpus' on_error="fail" a bad item raises its CorpusError once the work in flight is saved. Several
        processes may call it for the same folder at once: one builds while the others wait (`build_lock`), and
        each then builds only what is still missing, so nothing is decoded twice and no chunk number is taken twice.
        """
        report = CacheReport()
        videos, stills = self._missing(corpus, items)
        if not videos and not stills:
            return report
        with self.build_lock():
            # What another builder finished while this one waited for the lock is not built again.
            videos, stills = self._missing(corpus, items)
            if not videos and not stills:
                return report
            return self._build(corpus, videos, stills, progress, workers)

    def _build(
        self, corpus: Corpus, videos: list[Item], stills: list[Item], progress: bool, workers: int
    ) -> CacheReport:
        check_output_folder(self.root, "the preprocessing cache", self.min_free_mb)
        self._remove_leftovers()
        try:
            return self._build_items(corpus, videos, stills, progress, workers)
        except (OSError, RuntimeError) as err:
            cause = write_error_of(err)
            if cause is None or isinstance(err, OutputFolderError):
                raise
            raise OutputFolderError(
                self.root,
                f"cannot write the preprocessing cache: {describe_write_error(cause)}; every item finished before is "
                "kept and the next run builds only the rest",
            ) from None

    def _remove_leftovers(self) -> None:
        """Temporaries of builders that died (killed mid-file) and entries whose files are incomplete. Only called
        under the build lock: no other builder of this folder is running."""
        removed = 0
        for path in list(self.root.glob("**/*.tmp[0-9]*")):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
        for meta in list(self.root.glob("videos/**/meta.json")):
            if not _complete(meta.parent):
                shutil.rmtree(meta.parent, ignore_errors=True)
                removed += 1
        for _chunk, meta in self._chunk_files():
            if _read_chunk(meta) is None:
                meta.unlink(missing_ok=True)
                meta.with_suffix(".npy").unlink(missing_ok=True)
                removed += 1
        if removed:
            print(
                f"[cache] {self.root}: removed {removed} unfinished or incomplete entries left by a build that "
                "stopped; they are built again",
                file=sys.stderr,
            )

    def _build_items(
        self, corpus: Corpus, videos: list[Item], stills: list[Item], progress: bool, workers: int
    ) -> CacheReport:
        report = CacheReport()
        (self.root / "preprocessing.json").write_text(json.dumps(asdict(self.preprocessing), indent=2))
        # After every chunk on disk, also those whose images all failed (they hold no index entry).
        next_chunk = 1 + max((c for c, _ in self._chunk_files()), default=-1)
        tasks = [(_build_video, (self, corpus, it)) for it in videos]
        tasks += [
            (_build_still_chunk, (self, corpus, stills[i : i + STILL_CHUNK], next_chunk + k))
            for k, i in enumerate(range(0, len(stills), STILL_CHUNK))
        ]
        bar = tqdm(total=len(videos) + len(stills), desc="caching", unit="item", disable=not progress)
        first_error: BaseException | None = None
        if workers <= 1 or len(tasks) == 1:
            for fn, args in tasks:
                try:
                    part = fn(*args)
                except CorpusError as exc:
                    first_error = first_error or exc
                    break
                report.extend(part)
                bar.update(part.built + part.skipped)
        else:
            # spawn, not fork: the parent usually has torch's thread pools running.
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = [pool.submit(fn, *args) for fn, args in tasks]
                for future in as_completed(futures):
                    if future.exception() is not None:
                        first_error = first_error or future.exception()
                        continue
                    part = future.result()
                    report.extend(part)
                    bar.update(part.built + part.skipped)
        bar.close()
        self._still_index = None
        if first_error is not None:
            raise first_error
        return report

    # -- loading ------------------------------------------------------------------------------------------
    def load_video(self, item: Item) -> CachedVideo:
        folder = self.video_dir(item)
        if not _complete(folder):
            raise FileNotFoundError(f"{folder}: item is not cached (or its files are incomplete); call build() first")
        return CachedVideo(
            np.load(folder / "faces.npy", mmap_mode="r"),
            np.load(folder / "roi.npy", mmap_mode="r"),
            np.load(folder / "valid.npy"),
        )

    def load_still(self, item: Item) -> np.ndarray:
        """[S, S, 3] uint8 face crop of a still item."""
        chunk, row = self.still_index()[item.item_id]
        if chunk not in self._chunks:
            self._chunks[chunk] = np.load(self.root / "stills" / f"chunk_{chunk:05d}.npy", mmap_mode="r")
        return np.array(self._chunks[chunk][row])


def _write_problems(folder: Path, problems: list[tuple[str, Problem]]) -> None:
    if problems:
        rows = [{"item_id": item_id, **p.as_dict()} for item_id, p in problems]
        (folder / "problems.json").write_text(json.dumps(rows, indent=1))


def _complete(folder: Path) -> bool:
    """A cached video folder whose meta.json is readable and whose arrays have the sizes it recorded (folders
    written before the sizes were recorded are trusted, as they were)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    sizes = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(sizes, dict):
        return isinstance(meta, dict)
    try:
        return all((folder / name).stat().st_size == size for name, size in sizes.items())
    except OSError:
        return False


def _read_chunk(meta: Path) -> dict | None:
    """A still chunk's index, or None when it or its array is unreadable or not the size it recorded."""
    try:
        entry = json.loads(meta.read_text())
        size = meta.with_suffix(".npy").stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("items"), list):
        return None
    if "npy_bytes" in entry and entry["npy_bytes"] != size:
        return None
    return entry


def _atomic_dir(final: Path) -> Path:
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _commit_dir(tmp: Path, final: Path) -> None:
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


class BlockArray:
    """An array that grows block by block, spilling full blocks to a scratch file, then becomes a .npy.

    Why not a list of per-frame arrays: thousands of small arrays kept between the ~1 MB frames that are decoded
    and freed fragment the heap, and the process' RSS grew to ~1.5 GB on a 10-minute 640x480 video
    (benchmarks/results/cache.md) although the crops themselves are 176 MB. With `spill` set, memory stays at one
    block whatever the length of the video (hour-long sessions exist).
    """

    def __init__(
        self, shape: tuple[int, ...], dtype: np.dtype | type, block: int = 1024, spill: Path | None = None
    ) -> None:
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.block = block
        self.current: np.ndarray | None = None
        self.kept: list[np.ndarray] = []  # full blocks held in memory (no spill file)
        self.spill = spill
        self._spill_file = None
        self.n = 0

    def append(self, value: np.ndarray) -> None:
        if self.current is None:
            self.current = np.empty((self.block, *self.shape), self.dtype)
        self.current[self.n % self.block] = value
        self.n += 1
        if self.n % self.block == 0:
            self._retire()

    def _retire(self) -> None:
        if self.spill is None:
            self.kept.append(self.current)
        else:
            if self._spill_file is None:
                self._spill_file = open(self.spill, "wb")  # noqa: SIM115  (closed in _close_spill)
            self._spill_file.write(self.current.tobytes())
        self.current = None

    def __len__(self) -> int:
        return self.n

    def _chunks(self):
        """The data in order, as arrays of at most one block."""
        full = self.n // self.block
        if self.spill is not None and self._spill_file is not None:
            self._spill_file.flush()
            per_block = self.block * int(np.prod(self.shape)) * self.dtype.itemsize
            with open(self.spill, "rb") as handle:
                for _ in range(full):
                    yield np.frombuffer(handle.read(per_block), self.dtype).reshape(self.block, *self.shape)
        else:
            yield from self.kept[:full]
        rest = self.n - full * self.block
        if rest:
            yield self.current[:rest]

    def array(self) -> np.ndarray:
        out = np.empty((self.n, *self.shape), self.dtype)
        self._copy_into(out)
        return out

    def save(self, path: Path) -> None:
        """Write a .npy block by block with plain file writes (a memory map's dirty pages would count in RSS)."""
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.n, *self.shape),
        }
        with open(path, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            for chunk in self._chunks():
                handle.write(np.ascontiguousarray(chunk).tobytes())
        self.close()

    def close(self) -> None:
        if self._spill_file is not None:
            self._spill_file.close()
            self._spill_file = None
            Path(self.spill).unlink(missing_ok=True)

    def _copy_into(self, out: np.ndarray) -> None:
        start = 0
        for chunk in self._chunks():
            out[start : start + len(chunk)] = chunk
            start += len(chunk)


class TimeGrid(ABC):
    """Frames at their own times in, samples at k / fps out: the ROI interpolated linearly between the two frames
    around each sample time, the face from the nearer one; a sample inside a gap longer than `MAX_GAP_S` or next
    to a frame without a face is marked invalid. Subclasses say where samples go (`_emit`): the cache's arrays,
    or the stream's ring buffers (`inference.engine`), so training and inference resample alike."""

    def __init__(self, fps: float) -> None:
        self.fps = float(fps)
        self.prev: tuple[float, np.ndarray, np.ndarray, bool] | None = None
        self.emitted = 0
        self.out_of_order = 0

    def push(self, t: float, face: np.ndarray, roi: np.ndarray, ok: bool) -> None:
        if self.prev is not None and t < self.prev[0]:
            self.out_of_order += 1  # a timestamp going back: the frame is dropped rather than reordered
            return
        if self.prev is not None and t == self.prev[0]:
            self.prev = (t, face, roi, ok)  # a duplicated frame: the later copy replaces it
            return
        while self.emitted / self.fps <= t:
            target = self.emitted / self.fps
            if self.prev is None or target == t:
                self._emit(face, roi, ok)
            else:
                t0, face0, roi0, ok0 = self.prev
                w = (target - t0) / (t - t0)
                bridged = (t - t0) <= MAX_GAP_S
                self._emit(face0 if w < 0.5 else face, (1 - w) * roi0 + w * roi, ok0 and ok and bridged)
            self.emitted += 1
        self.prev = (t, face, roi, ok)

    @abstractmethod
    def _emit(self, face: np.ndarray, roi: np.ndarray, ok: bool) -> None:
        """Take one resampled sample (the next k / fps)."""


class TimeResampler(TimeGrid):
    """`TimeGrid` into growing arrays (spilled to `spill_dir` block by block) for the cache."""

    def __init__(
        self, fps: float, face_shape: tuple[int, ...], roi_shape: tuple[int, ...], spill_dir: Path | None = None
    ) -> None:
        super().__init__(fps)
        spill = (lambda name: spill_dir / name) if spill_dir is not None else (lambda name: None)
        self.faces = BlockArray(face_shape, np.uint8, spill=spill("faces.spill"))
        self.roi = BlockArray(roi_shape, np.float32, spill=spill("roi.spill"))
        self.valid: list[bool] = []

    def _emit(self, face: np.ndarray, roi: np.ndarray, ok: bool) -> None:
        self.faces.append(face)
        self.roi.append(roi)
        self.valid.append(bool(ok))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.faces.array(), self.roi.array(), np.asarray(self.valid, dtype=bool)


def _build_video(cache: ClipCache, corpus: Corpus, item: Item) -> CacheReport:
    """Decode one video item into time-resampled face crops and ROI grids (temporary folder, then renamed)."""
    from stress_lightning.data import faces as fp

    pre = cache.preprocessing
    report = CacheReport()
    media_path = item.files()[0]
    tracker = None
    tmp: Path | None = None
    try:
        boxes = fp.read_face_boxes(item.face_boxes) if item.face_boxes is not None else None
        tracker = None if boxes is not None else fp.make_tracker(pre.detector, detect_every=pre.detect_every)
        final = cache.video_dir(item)
        tmp = _atomic_dir(final)
        resampler = TimeResampler(
            pre.fps, (pre.face_size, pre.face_size, 3), (3, pre.roi_size, pre.roi_size), spill_dir=tmp
        )
        blank_face = np.zeros((pre.face_size, pre.face_size, 3), np.uint8)
        blank_roi = np.zeros((3, pre.roi_size, pre.roi_size), np.float32)
        n = -1
        last_t = 0.0
        for n, (t, frame) in enumerate(corpus.frames(item)):
            if boxes is not None:
                if n >= len(boxes):
                    raise CorpusError(item.face_boxes, f"has boxes for {len(boxes)} frames but the video has more")
                face = fp.crop_face(frame, boxes[n], pre.face_size, pre.face_margin)
                roi = fp.roi_grid(frame, boxes[n], pre.roi_size)
                ok = True
            else:
                obs = tracker(frame, timestamp_s=t)
                ok = obs is not None
                if ok:
                    face, roi = fp.face_and_roi(frame, obs, pre.face_size, pre.roi_size, pre.face_margin)
                else:
                    face, roi = blank_face, blank_roi
            resampler.push(t, face, roi, ok)
            last_t = t
        if n < 0 or not resampler.valid:
            raise CorpusError(media_path, "contains no decodable frame")
        if boxes is not None and n + 1 < len(boxes):
            raise CorpusError(media_path, f"decoded {n + 1} frames but {item.face_boxes.name} has {len(boxes)} boxes")
        if isinstance(item.media, VideoFile):
            declared = declared_duration(probe_video(item.media.path))
            if ends_early(last_t, declared):
                raise CorpusError(
                    media_path, f"truncated: decoded {last_t:.2f} s of the {declared:.2f} s its header declares"
                )
        valid = np.asarray(resampler.valid, dtype=bool)
        if not valid.any():
            raise CorpusError(media_path, "no face found in any frame")
    except CorpusError as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if corpus.on_error == "fail":
            raise
        problem = Problem(str(exc.path), exc.problem)
        report.problems.append(problem)
        report.skipped += 1
        folder = cache.root / "failed" / _safe_relpath(item.item_id)
        folder.mkdir(parents=True, exist_ok=True)
        _write_problems(folder, [(item.item_id, problem)])
        return report
    except BaseException:
        # Any other failure (a full disk while spilling, an interrupt): no half-written folder stays behind.
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if tracker is not None:
            tracker.close()
    try:
        _write_video_entry(tmp, final, item, pre.fps, resampler, valid, n + 1)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.built += 1
    if valid.mean() < 0.9:
        # Not fatal: clips over those frames are left out (and counted); say where so a person can look.
        report.problems.append(
            Problem(str(media_path), f"no face in {100 * (1 - valid.mean()):.0f} % of the time; clips there left out")
        )
    return report


def _write_video_entry(
    tmp: Path, final: Path, item: Item, fps: float, resampler: TimeResampler, valid: np.ndarray, decoded: int
) -> None:
    resampler.faces.save(tmp / "faces.npy")
    resampler.roi.save(tmp / "roi.npy")
    np.save(tmp / "valid.npy", valid)
    meta = {
        # What verifies the folder on read (`_complete`): a file cut short is not taken for a cached item.
        "files": {name: (tmp / name).stat().st_size for name in ("faces.npy", "roi.npy", "valid.npy")},
        "item_id": item.item_id,
        "n": int(len(valid)),
        "fps": fps,
        "duration_s": round(len(valid) / fps, 4),
        "decoded_frames": decoded,
        "valid_fraction": round(float(valid.mean()), 4),
        "out_of_order_frames": resampler.out_of_order,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    _commit_dir(tmp, final)


def _build_still_chunk(cache: ClipCache, corpus: Corpus, items: Sequence[Item], chunk: int) -> CacheReport:
    """Face crops of a chunk of still items into `stills/chunk_XXXXX.npy` + `.json` (written atomically)."""
    from stress_lightning.data import faces as fp

    pre = cache.preprocessing
    report = CacheReport()
    detector = None
    crops = np.zeros((len(items), pre.face_size, pre.face_size, 3), np.uint8)
    ids: list[str | None] = []
    problems: list[tuple[str, Problem]] = []
    for i, item in enumerate(items):
        path = str(item.files()[0])
        try:
            image = corpus.load_image(item)
            box = item.media.face_box
            if box is not None:
                crops[i] = fp.crop_face(image, np.asarray(box, np.float32), pre.face_size, pre.face_margin)
            elif corpus.prealigned:
                crops[i] = fp.resize_whole(image, pre.face_size)
            else:
                detector = detector or fp.make_still_detector(pre.detector)
                obs = detector(image)
                if obs is not None:
                    crops[i] = fp.align_face(image, obs, pre.face_size, pre.face_margin)
                elif pre.no_face == "whole_image":
                    crops[i] = fp.resize_whole(image, pre.face_size)
                    problems.append((None, Problem(path, "no face found; the whole image is used")))
                else:
                    raise CorpusError(path, "no face found in the image")
        except CorpusError as exc:
            if corpus.on_error == "fail" and pre.no_face != "skip":
                raise
            problems.append((item.item_id, Problem(str(exc.path), exc.problem)))
            ids.append(None)
            report.skipped += 1
            continue
        ids.append(item.item_id)
        report.built += 1
    report.problems.extend(p for _, p in problems)
    folder = cache.root / "stills"
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"chunk_{chunk:05d}"
    # The .npy goes first and the .json (which the index reads) last: a chunk without its .json does not exist.
    tmp_npy = stem.with_name(stem.name + f".tmp{os.getpid()}.npy")
    tmp_json = stem.with_name(stem.name + f".tmp{os.getpid()}.json")
    try:
        np.save(tmp_npy, crops)
        os.replace(tmp_npy, stem.with_suffix(".npy"))
        if problems:
            rows = [{"item_id": item_id, **p.as_dict()} for item_id, p in problems]
            (folder / f"chunk_{chunk:05d}.problems").mkdir(exist_ok=True)
            (folder / f"chunk_{chunk:05d}.problems" / "problems.json").write_text(json.dumps(rows, indent=1))
        tmp_json.write_text(json.dumps({"items": ids, "npy_bytes": stem.with_suffix(".npy").stat().st_size}))
        os.replace(tmp_json, stem.with_suffix(".json"))
    except BaseException:
        tmp_npy.unlink(missing_ok=True)
        tmp_json.unlink(missing_ok=True)
        raise
    return report

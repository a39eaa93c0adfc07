"""Preprocessing cache: each session decoded once into face crops and ROI grids, keyed by a config hash.

The folder name spells out the preprocessing (`<corpus>_face64_roi8_<hash>`) so a person can tell caches apart, and
the hash covers the corpus fingerprint, the preprocessing settings and the cache format version, so a change in
any of them gets a new folder instead of stale arrays. Sessions are written to a temporary folder and renamed into
place, so an interrupted run keeps every finished session and leaves no half-written one.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from stress_lightning.data.corpora.base import SessionRecord
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.faces import HaarFaceDetector, crop_face, read_face_boxes, roi_grid
from stress_lightning.data.video import iter_frames

CACHE_VERSION = 1


@dataclass(frozen=True)
class Preprocessing:
    face_size: int = 64
    roi_size: int = 8
    face_margin: float = 0.1


@dataclass(frozen=True)
class CachedSession:
    faces: np.ndarray  # [N, S, S, 3] uint8 (memory-mapped)
    roi: np.ndarray  # [N, 3, R, R] float32 (memory-mapped)


class ClipCache:
    def __init__(self, cache_dir: str | Path, corpus: str, corpus_fingerprint: str, preprocessing: Preprocessing):
        self.preprocessing = preprocessing
        key = json.dumps(
            {
                "corpus": corpus,
                "fingerprint": corpus_fingerprint,
                "pre": asdict(preprocessing),
                "v": CACHE_VERSION,
            },
            sort_keys=True,
        )
        self.key = hashlib.sha256(key.encode()).hexdigest()
        name = f"{corpus}_face{preprocessing.face_size}_roi{preprocessing.roi_size}_{self.key[:12]}"
        self.root = Path(cache_dir) / name

    def session_dir(self, record: SessionRecord) -> Path:
        return self.root / record.subject_id / record.session_id

    def is_cached(self, record: SessionRecord) -> bool:
        return (self.session_dir(record) / "roi.npy").is_file()

    def build(self, records: list[SessionRecord], progress: bool = True, workers: int = 1) -> None:
        """Decode and cache every session not cached yet, in `workers` processes.

        A bad session raises its CorpusError after the others have finished, so their work is kept.
        """
        todo = [r for r in records if not self.is_cached(r)]
        if not todo:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "preprocessing.json").write_text(json.dumps(asdict(self.preprocessing), indent=2))
        bar = tqdm(total=len(todo), desc="caching clips", unit="session", disable=not progress)
        if workers <= 1:
            for record in todo:
                _build_session(self, record)
                bar.update()
            bar.close()
            return
        # spawn, not fork: the parent usually has torch's thread pools running.
        ctx = multiprocessing.get_context("spawn")
        first_error: BaseException | None = None
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(_build_session, self, record) for record in todo]
            for future in as_completed(futures):
                bar.update()
                if future.exception() is not None and first_error is None:
                    first_error = future.exception()
        bar.close()
        if first_error is not None:
            raise first_error

    def load(self, record: SessionRecord) -> CachedSession:
        folder = self.session_dir(record)
        if not self.is_cached(record):
            raise FileNotFoundError(f"{folder}: session is not cached; call build() first")
        return CachedSession(np.load(folder / "faces.npy", mmap_mode="r"), np.load(folder / "roi.npy", mmap_mode="r"))


def _build_session(cache: ClipCache, record: SessionRecord) -> None:
    """Decode one session into face crops and ROI grids; written to a temporary folder, then renamed."""
    pre = cache.preprocessing
    boxes = read_face_boxes(record.face_boxes_path, record.n_frames) if record.face_boxes_path else None
    detector = None if boxes is not None else HaarFaceDetector()
    faces = np.empty((record.n_frames, pre.face_size, pre.face_size, 3), dtype=np.uint8)
    roi = np.empty((record.n_frames, 3, pre.roi_size, pre.roi_size), dtype=np.float32)
    decoded = 0
    for n, frame in enumerate(iter_frames(record.video_path)):
        if n >= record.n_frames:
            raise CorpusError(record.video_path, f"has more frames than the {record.n_frames} its labels declare")
        box = boxes[n] if boxes is not None else detector(frame)
        if box is None:
            raise CorpusError(record.video_path, f"no face found up to frame {n}")
        faces[n] = crop_face(frame, box, pre.face_size, pre.face_margin)
        roi[n] = roi_grid(frame, box, pre.roi_size)
        decoded = n + 1
    if decoded != record.n_frames:
        raise CorpusError(record.video_path, f"decoded {decoded} frames but its labels declare {record.n_frames}")
    final = cache.session_dir(record)
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "faces.npy", faces)
    np.save(tmp / "roi.npy", roi)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)

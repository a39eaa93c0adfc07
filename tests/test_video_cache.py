"""Real video through the cache: the posed face video (30 fps, H.264) is tracked, aligned and resampled by time to
the clip rate; a blank stretch spliced in is reported and marked invalid, not invented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stress_lightning.data.cache import ClipCache, Preprocessing
from stress_lightning.data.corpora.base import Corpus
from stress_lightning.data.items import Item, VideoFile
from stress_lightning.data.video import iter_timed_frames

VIDEO = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "posed" / "single_face.mp4"
pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not VIDEO.is_file(), reason=f"{VIDEO} is absent (the shared real-data folder)"),
]


class OneVideo(Corpus):
    name = "one_video"

    def __init__(self, path: Path) -> None:
        super().__init__(on_error="fail")
        self.path = path

    def read(self, root: Path) -> list[Item]:
        return [Item("clip/one", "S1", "train", VideoFile(self.path))]


def _with_blank_stretch(frames: list[tuple[float, np.ndarray]]):
    """The posed video played twice in a row with 1 s of grey frames in the middle (no face there)."""
    looped = frames + [(frames[-1][0] + (k + 1) / 30, frames[k][1]) for k in range(len(frames))]
    for t, rgb in looped:
        yield t, (rgb if not 2.5 <= t < 3.5 else np.full_like(rgb, 128))


def test_real_video_is_tracked_and_resampled_by_time(tmp_path: Path) -> None:
    corpus = OneVideo(VIDEO)
    items = corpus.read(tmp_path)
    cache = ClipCache(tmp_path / "cache", "one_video", "x", Preprocessing(fps=25.0, face_size=32))
    report = cache.build(corpus, items, progress=False)
    assert report.built == 1 and not report.problems
    video = cache.load_video(items[0])
    duration = max(t for t, _ in iter_timed_frames(VIDEO))
    assert len(video.valid) == int(duration * 25) + 1  # 30 fps in, 25 fps out, by timestamps
    assert video.valid.all()
    assert video.faces.shape[1:] == (32, 32, 3) and video.roi.shape[1:] == (3, 8, 8)
    assert 0.1 < float(video.roi.mean()) < 0.9  # skin, not the blank border


def test_stretch_without_a_face_is_marked_and_reported(tmp_path: Path, write_timed_video) -> None:
    path = tmp_path / "gap.avi"
    write_timed_video(path, _with_blank_stretch(list(iter_timed_frames(VIDEO))))
    corpus = OneVideo(path)
    items = corpus.read(tmp_path)
    cache = ClipCache(tmp_path / "cache", "one_video", "y", Preprocessing(fps=25.0, face_size=32))
    report = cache.build(corpus, items, progress=False)
    video = cache.load_video(items[0])
    t = np.arange(len(video.valid)) / 25.0
    # the tracker holds a lost face for up to detect_every frames (0.33 s here) before it gives up
    assert not video.valid[(t > 2.9) & (t < 3.4)].any()
    assert video.valid[t < 2.0].all()
    assert any(str(path) == p.path and "no face" in p.reason for p in report.problems)

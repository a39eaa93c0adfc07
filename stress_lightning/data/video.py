"""Decoding behind one interface: a video file or an image sequence as a stream of (time, RGB frame).

Frames are never all in memory. Times come from the container's timestamps (or the sequence's own), relative
to the first frame, so a dropped or duplicated frame shows up as a gap or a repeat in time rather than as an
index shift.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from stress_lightning.data.errors import CorpusError, VideoDecodeError
from stress_lightning.data.items import FrameFiles, VideoFile


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Yield RGB frames (H, W, 3) uint8 one by one; a corrupt or truncated file raises VideoDecodeError."""
    for _, frame in iter_timed_frames(path):
        yield frame


def iter_timed_frames(path: str | Path) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (t_s, RGB frame) with t_s from the stream's timestamps, 0 at the first frame."""
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(path, "video file is missing")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise VideoDecodeError(path, f"cannot open video ({exc})") from exc
    with container:
        if not container.streams.video:
            raise VideoDecodeError(path, "contains no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate) if stream.average_rate else None
        t0: float | None = None
        n = 0
        try:
            for frame in container.decode(stream):
                t = frame.time
                if t is None:  # no timestamps (raw streams): fall back to the nominal rate
                    if rate is None:
                        raise VideoDecodeError(path, "has neither frame timestamps nor a frame rate")
                    t = n / rate
                if t0 is None:
                    t0 = t
                n += 1
                yield float(t - t0), _to_rgb(frame)
        except av.FFmpegError as exc:
            raise VideoDecodeError(path, f"decoding failed after {n} frames ({exc})") from exc
        if n == 0:
            raise VideoDecodeError(path, "contains no decodable frame")


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    # Lossless RGB video (FFV1 bgr0, as the synthetic corpus writes) is read straight from the plane: PyAV's own
    # conversion goes through swscale and doubles the decoding time of a session.
    if frame.format.name in ("bgr0", "bgra"):
        plane = frame.planes[0]
        packed = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
        return packed[:, : frame.width * 4].reshape(frame.height, frame.width, 4)[..., 2::-1].copy()
    return frame.to_ndarray(format="rgb24")


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    duration_s: float
    n_frames: int  # as the container states it (0 when unknown)
    width: int
    height: int


def probe_video(path: str | Path) -> VideoInfo:
    """Frame rate, duration and size from the container's header, without decoding the frames."""
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(path, "video file is missing")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "contains no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate) if stream.average_rate else 0.0
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = stream.frames / rate if rate and stream.frames else 0.0
            n = int(stream.frames or (round(duration * rate) if rate else 0))
            return VideoInfo(rate, duration, n, stream.codec_context.width, stream.codec_context.height)
    except av.FFmpegError as exc:
        raise VideoDecodeError(path, f"cannot open video ({exc})") from exc


def video_fps(path: str | Path) -> float:
    rate = probe_video(path).fps
    if not rate:
        raise VideoDecodeError(Path(path), "has no frame rate")
    return rate


def read_image(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 (grey images get three equal channels); unreadable files raise CorpusError."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(path, "image file is missing")
    # imdecode(fromfile) rather than imread: it reads paths with any characters and tells empty from unreadable.
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise CorpusError(path, "image file is empty")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise CorpusError(path, "cannot be decoded as an image (corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def iter_media_frames(media: VideoFile | FrameFiles) -> Iterator[tuple[float, np.ndarray]]:
    """(t_s, RGB frame) for a video file or an image sequence."""
    if isinstance(media, VideoFile):
        yield from iter_timed_frames(media.path)
        return
    times = media.timestamps_s
    t0 = times[0] if times else 0.0
    for i, path in enumerate(media.paths):
        t = (times[i] - t0) if times is not None else i / float(media.fps)
        yield float(t), read_image(path)

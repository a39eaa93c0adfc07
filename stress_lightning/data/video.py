"""Video decoding as a stream of frames (PyAV), never the whole file in memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from stress_lightning.data.errors import VideoDecodeError


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Yield RGB frames (H, W, 3) uint8 one by one; a corrupt or truncated file raises VideoDecodeError."""
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
        try:
            for frame in container.decode(stream):
                yield _to_rgb(frame)
        except av.FFmpegError as exc:
            raise VideoDecodeError(path, f"decoding failed ({exc})") from exc


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    # Lossless RGB video (FFV1 bgr0, as the synthetic corpus writes) is read straight from the plane: PyAV's own
    # conversion goes through swscale and doubles the decoding time of a session.
    if frame.format.name in ("bgr0", "bgra"):
        plane = frame.planes[0]
        packed = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
        return packed[:, : frame.width * 4].reshape(frame.height, frame.width, 4)[..., 2::-1].copy()
    return frame.to_ndarray(format="rgb24")


def video_fps(path: str | Path) -> float:
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
    except (av.FFmpegError, IndexError) as exc:
        raise VideoDecodeError(path, f"cannot read the frame rate ({exc})") from exc
    if rate is None:
        raise VideoDecodeError(path, "has no frame rate")
    return float(rate)

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
                yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            raise VideoDecodeError(path, f"decoding failed ({exc})") from exc


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

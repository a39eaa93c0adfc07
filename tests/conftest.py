"""Fixtures shared by the test files: writing a small video with chosen frame timestamps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest


def _write_timed_video(path: Path, frames: Iterable[tuple[float, np.ndarray]]) -> None:
    """MPEG-4 video whose frames carry the given times (s) as millisecond timestamps: drops and gaps are real."""
    frames = iter(frames)
    t0, first = next(frames)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 1000)
        for t, rgb in [(t0, first), *frames]:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = round(t * 1000)
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture
def write_timed_video() -> Callable[[Path, Iterable[tuple[float, np.ndarray]]], None]:
    return _write_timed_video

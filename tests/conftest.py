"""Fixtures shared by the test files: writing small videos the way real corpora ship them (codec, container,
frame rate, per-frame timestamps with drops and gaps)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FACE_VIDEO = SHARED_DATA / "faces" / "posed" / "single_face.mp4"

# Codec per container as the corpora ship them: UBFC's XVID AVI (MPEG-4 Part 2), RAVDESS' H.264 MP4,
# CREMA-D's Sorenson FLV, MAHNOB-HCI's AVI.
DEFAULT_CODECS = {".avi": "mpeg4", ".mp4": "libx264", ".flv": "flv", ".mkv": "libx264", ".mov": "libx264"}


def write_video(
    path: Path,
    frames: Iterable[tuple[float, np.ndarray]],
    codec: str | None = None,
    rate: float = 30,
    tag: str | None = None,
) -> None:
    """Write (t_s, RGB frame) pairs as a compressed video whose frames carry those times.

    The container keeps what it can: MP4/MKV/MOV keep millisecond timestamps (drops and gaps are real), FLV keeps
    milliseconds, AVI stores frames at the nominal `rate` (a dropped frame there is a missing index, as in
    real AVI captures). `tag` sets the FourCC (e.g. "XVID" for UBFC's AVIs).
    """
    frames = iter(frames)
    t0, first = next(frames)
    codec = codec or DEFAULT_CODECS.get(path.suffix.lower(), "mpeg4")
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(rate).limit_denominator(1001))
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        if tag:
            stream.codec_tag = tag
        avi = path.suffix.lower() == ".avi"
        time_base = Fraction(1, 1) / Fraction(rate).limit_denominator(1001) if avi else Fraction(1, 1000)
        if not avi:
            stream.time_base = time_base
        for t, rgb in [(t0, first), *frames]:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = round(Fraction(t).limit_denominator(10**6) / time_base)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _write_timed_video(path: Path, frames: Iterable[tuple[float, np.ndarray]]) -> None:
    """MPEG-4 video whose frames carry the given times (s) as millisecond timestamps: drops and gaps are real."""
    write_video(path.with_suffix(path.suffix), frames, codec="mpeg4")


@pytest.fixture
def write_timed_video() -> Callable[[Path, Iterable[tuple[float, np.ndarray]]], None]:
    return _write_timed_video


@pytest.fixture
def video_writer() -> Callable[..., None]:
    """`write_video(path, frames, codec=None, rate=30, tag=None)`; codec from the extension by default."""
    return write_video


@pytest.fixture
def face_video() -> Path:
    """The real face video of ../shared/data (skips the test where the shared data is absent)."""
    if not FACE_VIDEO.is_file():
        pytest.skip(f"shared data absent: {FACE_VIDEO} (see ../shared/data/README.md)")
    return FACE_VIDEO


# -- an MLflow store per test ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store: creating the schema takes seconds (alembic migrations), so it is done once."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store_uri(tmp_path: Path, template_db: Path) -> str:
    """A fresh MLflow SQLite store of the test's own (a copy of the empty template)."""
    shutil.copy(template_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


# The bad-input table (docs/BAD_INPUTS.md): the fixture and the hooks that write and check it.
from bad_inputs import (  # noqa: E402, F401
    bad_input,
    pytest_collection_modifyitems,
    pytest_deselected,
    pytest_runtest_logreport,
    pytest_sessionfinish,
)

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


def _open(path: Path) -> av.container.InputContainer:
    """The container, with a missing, empty or unopenable file refused in words (not FFmpeg's errno)."""
    if not path.is_file():
        raise VideoDecodeError(path, "video file is missing")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "video file is empty (0 bytes)")
    try:
        return av.open(str(path))
    except av.FFmpegError as exc:
        raise VideoDecodeError(
            path, f"cannot open video ({_reason(exc)}): the file is cut short, corrupt or not a video"
        ) from exc


NO_DECODER = "its video codec is one this FFmpeg build (PyAV's) cannot decode: re-encode it, e.g. to H.264"


def _reason(exc: av.FFmpegError) -> str:
    # FFmpeg's own words without the errno and the repeated path ("[Errno 1094995529] ...: '/path'").
    return exc.strerror or str(exc)


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    """The first video stream, refused when there is none (an audio file) or FFmpeg cannot decode its codec."""
    if not container.streams.video:
        others = [f"{s.type} ({s.codec_context.name})" for s in container.streams if s.codec_context is not None]
        found = f"only {', '.join(others)}" if others else "no stream at all"
        raise VideoDecodeError(path, f"contains no video stream ({found})")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        # The container names a codec this FFmpeg build has no decoder for (an unknown FourCC, a proprietary codec).
        raise VideoDecodeError(path, NO_DECODER)
    return stream


def iter_timed_frames(path: str | Path) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (t_s, RGB frame) with t_s from the stream's timestamps, 0 at the first frame."""
    path = Path(path)
    container = _open(path)
    with container:
        stream = _video_stream(container, path)
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
        except av.DecoderNotFoundError as exc:
            raise VideoDecodeError(path, NO_DECODER) from exc
        except av.FFmpegError as exc:
            raise VideoDecodeError(path, f"decoding failed after {n} frames ({_reason(exc)}): corrupt data") from exc
        if n == 0:
            raise VideoDecodeError(path, "contains no decodable frame (zero frames)")


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
    try:
        with _open(path) as container:
            stream = _video_stream(container, path)
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
        raise VideoDecodeError(path, f"cannot read the video's header ({_reason(exc)})") from exc


# A video whose frames stop this long (or a tenth of its length, whichever is more) before the end its header
# declares is truncated: the slack absorbs a last frame's duration and rounding of rates and durations.
TRUNCATION_TOLERANCE_S = 1.0
# How far before the declared end the tail check seeks: a keyframe interval of a few seconds fits in it.
TAIL_SEEK_S = 3.0


def declared_duration(info: VideoInfo) -> float:
    """The length a video's header promises: the longer of the container's duration and frames / rate.

    Why both: a cut download keeps the header it had, but which field survives depends on the container. A cut
    AVI keeps its frame count while its duration comes from the index that is left (an AVI cut in half reports
    half its length), a cut FLV keeps its duration; either one alone lets some truncated files through."""
    return max(info.duration_s, info.n_frames / info.fps if info.fps else 0.0)


def ends_early(last_frame_s: float, declared_s: float) -> bool:
    """Whether frames that stop at `last_frame_s` fall short of a declared length (see TRUNCATION_TOLERANCE_S)."""
    return declared_s - last_frame_s > max(TRUNCATION_TOLERANCE_S, 0.1 * declared_s)


def video_end_problem(path: str | Path, info: VideoInfo | None = None) -> str | None:
    """Why a video is unreadable or truncated, or None: found without decoding all of it.

    A truncated file (a cut download, a disk that filled up) still opens, and its header still states the full
    length, so probing alone does not see the cut, and decoding a whole 300 GB corpus to find one is too slow
    for `data summary`. Instead: seek close to the end the header declares and decode only the tail; frames
    that stop well short of it (or none at all) mean the file was cut. `info` is the file's `probe_video`
    result when the caller already has it."""
    path = Path(path)
    if info is None:
        try:
            info = probe_video(path)
        except VideoDecodeError as exc:
            return exc.problem
    declared = declared_duration(info)
    if declared <= 0:
        return "video has no duration (empty or truncated)"
    last = _last_frame_time(path, declared)
    if last is None:
        return "contains no decodable frame near its declared end (truncated)"
    if ends_early(last, declared):
        return f"truncated: frames end at {last:.2f} s of the {declared:.2f} s its header declares"
    return None


def _last_frame_time(path: Path, declared: float) -> float | None:
    """Time (s from the stream start) of the last frame decodable after seeking to `declared - TAIL_SEEK_S`."""
    last = None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            target = max(0.0, declared - TAIL_SEEK_S)
            if target > 0 and stream.time_base:
                # A container without an index (a cut AVI) may refuse to seek: decode from the start then.
                try:
                    container.seek(int((start + target) / stream.time_base), stream=stream, backward=True)
                except av.FFmpegError:
                    container.seek(0)
            for frame in container.decode(stream):
                if frame.time is not None:
                    last = frame.time - start
    except (av.FFmpegError, IndexError):
        pass  # a decoding error at the cut: the frames decoded before it say how far the file goes
    return last


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

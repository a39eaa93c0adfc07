"""Where frames come from: a video file or a camera (both decoded with PyAV), an array of frames, or an iterator.

Every source yields `(t_s, rgb)`: seconds from the first frame and a uint8 [H, W, 3] RGB frame, and reports
what went wrong in words that name it (a file that is not a video, a camera that does not exist, cannot be opened,
closes or stops delivering frames).
"""

from __future__ import annotations

import platform
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message names it."""


@dataclass
class FrameSource:
    """Timed frames from somewhere. `total_frames` is known for files (progress bars), None for live sources;
    `closed_early` is set when a live source stopped by itself (a camera unplugged or closed)."""

    name: str
    frames: Iterator[tuple[float, np.ndarray]]
    live: bool = False
    total_frames: int | None = None
    nominal_fps: float | None = None
    closed_early: str | None = field(default=None)

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        return self.frames


def _file_source(path: Path) -> FrameSource:
    import av

    from stress_lightning.data.errors import CorpusError
    from stress_lightning.data.video import iter_timed_frames, probe_video

    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    try:
        info = probe_video(path)
    except CorpusError as err:  # VideoDecodeError: not a container, or no video stream in it
        raise SourceError(f"{path}: not a readable video ({err.problem})") from err

    def frames() -> Iterator[tuple[float, np.ndarray]]:
        try:
            yield from iter_timed_frames(path)
        except CorpusError as err:  # a corrupt or truncated file: the frames so far were processed
            raise SourceError(f"{path}: {err.problem}") from err
        except av.error.FFmpegError as err:
            raise SourceError(f"{path}: decoding failed ({err})") from err

    return FrameSource(
        str(path), frames(), live=False, total_frames=info.n_frames or None, nominal_fps=info.fps or None
    )


def _camera_url(index: int) -> tuple[str, str | None]:
    system = platform.system()
    if system == "Linux":
        return f"/dev/video{index}", "v4l2"
    if system == "Darwin":
        return str(index), "avfoundation"
    # Windows' dshow names devices, not indices; OpenCV's capture is the portable fallback below.
    return str(index), None


def check_camera(index: int) -> None:
    """Raise SourceError when camera `index` cannot exist here: on Linux, when its device node is absent (the
    message lists the cameras there are). Cheap, so a command can say it before loading a model."""
    url, fmt = _camera_url(index)
    if fmt != "v4l2" or Path(url).exists():
        return
    nodes = [p for p in Path("/dev").glob("video*") if p.name[len("video") :].isdigit()]
    present = sorted(nodes, key=lambda p: int(p.name[len("video") :]))
    listing = ", ".join(str(p) for p in present) if present else "none"
    raise SourceError(f"camera {index}: no such device ({url} does not exist; cameras here: {listing})")


def check_source(source: str | int | Path) -> None:
    """What `open_source` would refuse at once, without opening anything: a missing file, an absent camera."""
    if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit()):
        check_camera(int(source))
        return
    path = Path(source).expanduser()
    if not path.is_file():
        raise SourceError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")


# A live source that has delivered nothing for this long has stopped (a hung driver, a USB camera that lost power);
# the first frame may take longer while the camera starts up.
LIVE_STALL_S = 5.0
LIVE_FIRST_FRAME_S = 15.0


def watch_live(source: FrameSource, stall_s: float | None = None, first_frame_s: float | None = None) -> None:
    """Read `source`'s frames in a thread so that a camera that stops delivering without closing ends the stream
    (with `closed_early` saying so) instead of blocking it forever. Errors of the reader reach the consumer.
    Timeouts default to `LIVE_STALL_S` and `LIVE_FIRST_FRAME_S`."""
    stall_s = LIVE_STALL_S if stall_s is None else stall_s
    first_frame_s = LIVE_FIRST_FRAME_S if first_frame_s is None else first_frame_s
    frames = source.frames
    # Two frames in hand at most: the consumer sees the newest frames, not a backlog.
    handoff: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    end = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for item in frames:
                if not put(item):
                    return
        except Exception as err:  # handed to the consumer, which raises it
            put(err)
            return
        put(end)

    def watched() -> Iterator[tuple[float, np.ndarray]]:
        thread = threading.Thread(target=reader, name=f"{source.name} reader", daemon=True)
        thread.start()
        delivered = False
        try:
            while True:
                wait = stall_s if delivered else first_frame_s
                try:
                    item = handoff.get(timeout=wait)
                except queue.Empty:
                    source.closed_early = (
                        f"no frame for {wait:g} s (the camera stopped delivering frames)"
                        if delivered
                        else f"no frame in the first {wait:g} s (the camera opened but sends nothing)"
                    )
                    return
                if item is end:
                    return
                if isinstance(item, Exception):
                    raise item
                delivered = True
                yield item
        finally:
            # The reader stops at its next frame; one blocked inside the driver is a daemon and goes with the process.
            stop.set()

    source.frames = watched()


def _quiet_opencv_capture(index: int):  # -> cv2.VideoCapture
    """OpenCV's capture of camera `index`, without the warnings its backends print to stderr for every one they
    try: the SourceError raised when it fails says what the user needs in one line."""
    import cv2

    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(index)
    finally:
        logging.setLogLevel(level)


def _camera_source(index: int) -> FrameSource:
    import av

    check_camera(index)
    url, fmt = _camera_url(index)
    container = None
    if fmt is not None:
        try:
            container = av.open(url, format=fmt)
        except (av.error.FFmpegError, OSError) as err:
            opened_with_pyav = f"PyAV ({fmt} {url}): {err}"
        else:
            opened_with_pyav = ""
    else:
        opened_with_pyav = "PyAV: no camera input format for this platform"
    source = FrameSource(f"camera {index}", iter(()), live=True)

    if container is not None:
        stream = container.streams.video[0]
        source.nominal_fps = float(stream.average_rate) if stream.average_rate else None

        def pyav_frames() -> Iterator[tuple[float, np.ndarray]]:
            t0 = None
            try:
                for frame in container.decode(stream):
                    now = time.monotonic()
                    t0 = now if t0 is None else t0
                    yield now - t0, frame.to_ndarray(format="rgb24")
                source.closed_early = "the camera stopped sending frames"
            except (av.error.FFmpegError, OSError) as err:
                source.closed_early = f"the camera closed ({err})"
            finally:
                container.close()

        source.frames = pyav_frames()
        watch_live(source)
        return source

    capture = _quiet_opencv_capture(index)
    if not capture.isOpened():
        raise SourceError(f"camera {index}: cannot be opened ({opened_with_pyav}; OpenCV could not open it either)")

    def cv2_frames() -> Iterator[tuple[float, np.ndarray]]:
        import cv2

        t0 = None
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    source.closed_early = "the camera stopped sending frames"
                    return
                now = time.monotonic()
                t0 = now if t0 is None else t0
                yield now - t0, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()

    source.frames = cv2_frames()
    watch_live(source)
    return source


def _check_frame(frame: np.ndarray, where: str) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise SourceError(f"{where}: frames must be uint8 RGB [H, W, 3], got {frame.dtype} {frame.shape}")
    return frame


def array_source(frames: np.ndarray, fps: float, name: str = "array") -> FrameSource:
    """Frames [T, H, W, 3] uint8 RGB at `fps`."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise SourceError(f"{name}: frames must be a uint8 array [T, H, W, 3] (RGB), got {frames.dtype} {frames.shape}")
    if not fps or fps <= 0:
        raise SourceError(f"{name}: an array of frames needs its frame rate (fps > 0), got {fps!r}")
    timed = ((i / float(fps), frames[i]) for i in range(len(frames)))
    return FrameSource(name, timed, total_frames=len(frames), nominal_fps=float(fps))


def iterable_source(frames: Iterable, fps: float | None, name: str = "iterator") -> FrameSource:
    """An iterator of frames (at `fps`) or of `(t_s, frame)` pairs (then `fps` may be None)."""

    def timed() -> Iterator[tuple[float, np.ndarray]]:
        for i, entry in enumerate(frames):
            if isinstance(entry, tuple) and len(entry) == 2:
                t, frame = entry
                yield float(t), _check_frame(frame, f"{name} frame {i}")
            else:
                if not fps or fps <= 0:
                    raise SourceError(f"{name}: frames without timestamps need fps > 0, got {fps!r}")
                yield i / float(fps), _check_frame(entry, f"{name} frame {i}")

    return FrameSource(name, timed(), nominal_fps=fps)


def open_source(source: str | int | Path) -> FrameSource:
    """A video file path, or a camera index (an int or a string of digits)."""
    if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit()):
        return _camera_source(int(source))
    return _file_source(Path(source).expanduser())

"""`stress-lightning stream` on a real face video: JSON lines, the annotated video, the learned heart-rate stream, and
its errors (not a video, no face, a camera that cannot be opened or stops, bad arguments); once end to end through
the installed console script."""

from __future__ import annotations

import errno
import json
import os
import platform
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from inference_helpers import (
    FPS,
    FRAME_SIZE,
    conftest_writer,
    face_frames,
    make_module,
    save_lightning_checkpoint,
    single_thread,  # noqa: F401 (fixture)
    write_face_video,
    write_grey_video,
)

from stress_lightning.commands import run
from stress_lightning.data.video import iter_timed_frames, probe_video

pytestmark = pytest.mark.usefixtures("single_thread")

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ("t_s", "hr_bpm", "hr_window_s", "expression", "stress", "quality")
DT = 1 / FPS


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_lightning_checkpoint(make_module(), tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.fixture(scope="module")
def face_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s of the real face at 25 fps (150 frames), 320x180, H.264."""
    return write_face_video(conftest_writer(), tmp_path_factory.mktemp("video") / "face.mp4", 6.0)


def _stream(*args: str) -> int:
    return run(["stream", "--threads", "1", *args])


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.shared_data
def test_stream_writes_jsonl_and_an_annotated_video(
    checkpoint: Path, face_mp4: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, annotated = tmp_path / "results.jsonl", tmp_path / "annotated" / "out.mp4"
    code = _stream(
        "--source", str(face_mp4), "--model", str(checkpoint), "--out", str(out), "--annotate", str(annotated),
        "--hr-window", "4", "--hr-method", "chrom",
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == ""  # records go to --out only
    assert "stream: 150 frames" in captured.err and "a face in 150" in captured.err
    records = _lines(out.read_text())
    assert len(records) == 150
    for record in records:
        for key in REQUIRED:
            assert key in record, (key, record)
    t = np.array([r["t_s"] for r in records])
    np.testing.assert_allclose(t, np.arange(150) / FPS, atol=1e-3)
    assert all(r["hr_method"] == "chrom" for r in records)
    assert all(r["hr_bpm"] is None for r in records if r["t_s"] < 4.0 - DT - 1e-9)
    late = [r for r in records if r["t_s"] >= 5.0]
    assert late and all(40 <= r["hr_bpm"] <= 180 and r["hr_window_s"] == 4.0 for r in late)
    assert all(0.0 <= r["quality"] <= 1.0 and r["stress"] in ("calm", "tense") for r in late)
    assert all(r["expression"] is not None for r in records if r["t_s"] >= 1.0)

    # The annotated video: decodable, every frame, the source's size.
    info = probe_video(annotated)
    assert (info.width, info.height) == FRAME_SIZE
    decoded = list(iter_timed_frames(annotated))
    assert len(decoded) == 150
    # The results are drawn on it (the top-left text block differs from the source frame).
    source = face_frames(1)[0].astype(int)
    assert np.abs(decoded[0][1][:40, :120].astype(int) - source[:40, :120]).mean() > 5


@pytest.mark.shared_data
def test_stream_to_stdout_with_the_learned_heart_rate(
    checkpoint: Path, face_mp4: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    code = _stream("--source", str(face_mp4), "--model", str(checkpoint), "--hr-method", "model", "--max-seconds", "5")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert list(tmp_path.iterdir()) == []  # on-device: nothing written without --out / --annotate
    assert "/150 [" in captured.err  # a progress bar over the file's frames
    records = _lines(captured.out)  # --out defaults to stdout
    # --max-seconds 5 stops after the frame at 5.0 s.
    assert len(records) == round(5 * FPS) + 1 and records[-1]["t_s"] == pytest.approx(5.0)
    assert all(r["hr_method"] == "model" for r in records)
    # The learned stream reports once its 4 s pulse window is full, over that window.
    assert all(r["hr_bpm"] is None for r in records if r["t_s"] < 4.0 - DT - 1e-9)
    with_hr = [r for r in records if r["hr_bpm"] is not None]
    assert with_hr and all(r["hr_window_s"] == 4.0 and 40 <= r["hr_bpm"] <= 180 for r in with_hr)
    assert records[-1]["hr_bpm"] is not None and records[-1]["stress"] in ("calm", "tense")
    assert "stream:" in captured.err and "(torch, heart rate: model)" in captured.err


@pytest.mark.shared_data
def test_learned_heart_rate_with_another_window(
    checkpoint: Path, face_mp4: Path, capsys: pytest.CaptureFixture
) -> None:
    # The learned stream covers the model's 4 s pulse window: --hr-window 6 is refused as a usage error, or at least
    # the records do not claim 6 s.
    args = ("--source", str(face_mp4), "--model", str(checkpoint), "--hr-method", "model", "--hr-window", "6")
    try:
        code = _stream(*args, "--max-seconds", "4.4", "--quiet")
    except SystemExit as exit_info:
        assert exit_info.code == 2 and "window" in capsys.readouterr().err
        return
    captured = capsys.readouterr()
    assert code == 0, captured.err
    claimed = {r["hr_window_s"] for r in _lines(captured.out) if r["hr_bpm"] is not None}
    assert claimed == {4.0}


def test_not_a_video_exits_1_naming_the_path(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, bad_input
) -> None:
    path = tmp_path / "holiday.mp4"
    path.write_text("not a video\n")
    assert _stream("--source", str(path), "--model", str(checkpoint), "--quiet") == 1
    err = capsys.readouterr().err
    assert f"error: {path}: not a readable video" in err
    bad_input.record("inference inputs", "stream --source: a text file named .mp4", err, exit_status=1)

    assert _stream("--source", str(tmp_path / "absent.mp4"), "--model", str(checkpoint)) == 1
    err = capsys.readouterr().err
    # Said before the model is loaded: the only line.
    assert err.strip() == f"error: {tmp_path / 'absent.mp4'}: no such file"
    bad_input.record("inference inputs", "stream --source: a missing video file", err, exit_status=1)


def test_no_face_exits_1_and_says_so(
    checkpoint: Path, tmp_path: Path, video_writer, capsys: pytest.CaptureFixture, bad_input
) -> None:
    video = write_grey_video(video_writer, tmp_path / "grey.mp4", 1.0)
    out = tmp_path / "grey.jsonl"
    assert _stream("--source", str(video), "--model", str(checkpoint), "--out", str(out), "--quiet") == 1
    err = capsys.readouterr().err
    assert f"error: {video}: no face found in any of its 25 frames" in err
    error_line = next(line for line in err.splitlines() if line.startswith("error:"))
    bad_input.record("inference inputs", "stream --source: a video without a face", error_line, exit_status=1)
    # Every frame is still reported, with nothing estimated.
    records = _lines(out.read_text())
    assert len(records) == 25 and not any(r["face"] or r["expression"] or r["hr_bpm"] for r in records)


def test_model_and_camera_errors_exit_1(
    checkpoint: Path, tmp_path: Path, capfd: pytest.CaptureFixture, bad_input
) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")  # exists: the model is what fails
    assert _stream("--source", str(video), "--model", str(tmp_path / "missing.ckpt")) == 1
    assert f"error: model: {tmp_path / 'missing.ckpt'}: no such file" in capfd.readouterr().err
    # A camera index with no camera behind it: one line naming it (OpenCV's own warnings are not let through).
    assert _stream("--source", "97", "--model", str(checkpoint), "--quiet") == 1
    err = capfd.readouterr().err
    assert "error: camera 97: " in err
    if platform.system() == "Linux":
        (line,) = err.strip().splitlines()
        assert line.startswith("error: camera 97: no such device (/dev/video97 does not exist; cameras here: ")
    bad_input.record("inference inputs", "stream --source 97 (no such camera)", err, exit_status=1)


class _FakeCamera:
    """What PyAV's v4l2 input hands the camera source: a video stream with a rate, decoded frames, close()."""

    def __init__(self, frames: np.ndarray, after: str, release: threading.Event) -> None:
        self.streams = SimpleNamespace(video=[SimpleNamespace(average_rate=Fraction(25))])
        self.frames, self.after, self.release = frames, after, release
        self.closed = False

    def decode(self, stream: object):
        for rgb in self.frames:
            yield SimpleNamespace(to_ndarray=lambda format, rgb=rgb: rgb)
            time.sleep(0.005)
        if self.after == "unplugged":
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        if self.after == "stalls":
            self.release.wait(30)  # a driver that blocks without closing

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("after", ["ends", "unplugged", "stalls"])
def test_a_camera_that_stops_keeps_the_records_so_far(
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    bad_input,
    after: str,
) -> None:
    # The camera source as it runs on a machine with a camera (PyAV's v4l2 input, read in a watched thread), with
    # PyAV's container replaced by one that gives 20 frames and then ends, fails or blocks.
    import av

    import stress_lightning.inference.sources as sources

    release = threading.Event()
    camera = _FakeCamera(np.full((20, 180, 320, 3), 128, np.uint8), after, release)
    monkeypatch.setattr(sources, "check_camera", lambda index: None)  # no /dev/video0 on the test machine
    monkeypatch.setattr(sources, "LIVE_STALL_S", 0.3)
    monkeypatch.setattr(av, "open", lambda url, format=None: camera)
    out = tmp_path / "live.jsonl"
    try:
        assert _stream("--source", "0", "--model", str(checkpoint), "--out", str(out)) == 1
    finally:
        release.set()
    captured = capsys.readouterr()
    error_line = next(line for line in captured.err.splitlines() if line.startswith("error:"))
    expected = {
        "ends": "the camera stopped sending frames",
        "unplugged": "the camera closed ([Errno 19] No such device)",
        "stalls": "no frame for 0.3 s (the camera stopped delivering frames)",
    }[after]
    assert error_line == f"error: camera 0: stopped early: {expected} (the 20 records so far are written)"
    bad_input.record("inference inputs", f"stream --source 0: the camera {after} after 20 frames", error_line, 1)
    assert len(_lines(out.read_text())) == 20
    # A live source gets a live line on stderr (rewritten in place), not a progress bar.
    assert "\r" in captured.err and "HR" in captured.err
    if after != "stalls":
        assert camera.closed


@pytest.mark.shared_data
def test_out_into_a_new_folder(checkpoint: Path, face_mp4: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Like --annotate, --out may name a folder that does not exist yet; failing that, a clear error naming it.
    out = tmp_path / "new" / "folder" / "results.jsonl"
    code = _stream("--source", str(face_mp4), "--model", str(checkpoint), "--out", str(out), "--max-seconds", "0.2")
    err = capsys.readouterr().err
    if code == 0:
        assert len(_lines(out.read_text())) == 6
    else:
        assert code == 1 and str(out) in err


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "the following arguments are required: --source"),
        (["--source", "x.mp4", "--hr-method", "guess"], "argument --hr-method: invalid choice: 'guess'"),
        (["--source", "x.mp4", "--update-every", "0"], "--update-every must be positive"),
        (["--source", "x.mp4", "--hr-window", "2"], "hr_window_s must be >= 4 s"),
        (["--source", "x.mp4", "--expression-every", "0"], "expression_every and max_faces must be >= 1"),
        (["--source", "x.mp4", "--backend", "tensorrt"], "argument --backend: invalid choice"),
        (["--source", "x.mp4", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["stream", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: stress-lightning stream" in err and message in err


def test_help_lists_the_record_fields(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["stream", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("--source", "--annotate", "--hr-method", "hr_window_s", "quality", "no frame is stored"):
        assert word in text


@pytest.mark.shared_data
def test_console_script_end_to_end(checkpoint: Path, face_mp4: Path, tmp_path: Path) -> None:
    script = REPO_ROOT / ".venv" / "bin" / "stress-lightning"
    if not script.is_file():
        pytest.skip(f"{script} is not installed (pip install -e . into .venv)")
    out = tmp_path / "cli.jsonl"
    result = subprocess.run(
        [str(script), "stream", "--source", str(face_mp4), "--model", str(checkpoint), "--out", str(out),
         "--threads", "1", "--max-seconds", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    records = _lines(out.read_text())
    assert len(records) == round(2 * FPS) + 1
    assert all(set(REQUIRED) <= set(r) for r in records) and all(r["face"] for r in records)
    assert "stream: 51 frames" in result.stderr and result.stdout == ""

"""`stress-lightning stream`: a video file or a camera through a trained model, in real time, as JSON lines."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import numpy as np

from stress_lightning.commands import CommandError

DEFAULT_MODEL = "models:/stress-multitask@champion"

DESCRIPTION = """\
Run a trained model on a video file or a camera: detect and track the face, crop and align it as in training,
and write one JSON line per frame with the expression and, as soon as each window allows, heart rate, HRV and
stress with a quality value in [0, 1].

Record fields: t_s (seconds from the start, the end of the frame's face window), frame, face, faces_in_view,
expression, expression_probs, hr_bpm (null until a full window has a face, and again when the face is lost),
hr_window_s (the span of the heart-rate estimate, ending at hr_t_s: its last update, at most --update-every before
t_s), hr_method, rmssd_ms, lf_hf_ratio, stress, stress_probs, quality, snr_db, face_fraction, and events (face
lost/found, several faces, frame size changes) when something happened.

On-device by design: no frame is stored or written anywhere unless --annotate asks for a video.

MODEL is a registry URI (models:/NAME@alias, models:/NAME/N, runs:/ID/model; store from --tracking-uri, else
$MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db), a local MLflow model folder, a Lightning checkpoint or an
exported ONNX file. The network runs on ONNX Runtime when the model carries an ONNX file, else PyTorch.

Exit status: 0 done, 1 the model or the source cannot be read (a missing file or camera is reported before the
model loads), no face was ever found, or a camera or file stopped early: closed, unplugged, or no frame for 5 s
(every record up to then is written), 2 usage error."""


def build_parser() -> argparse.ArgumentParser:
    from stress_lightning.inference.engine import DEFAULT_HR_METHOD, HR_METHODS

    parser = argparse.ArgumentParser(
        prog="stress-lightning stream", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source", required=True, metavar="PATH_OR_CAMERA_INDEX", help="a video file or a camera index"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="MODEL", help=f"(default: {DEFAULT_MODEL})")
    parser.add_argument("--tracking-uri", default=None, metavar="URI", help="MLflow store for registry URIs")
    parser.add_argument("--out", default="-", metavar="PATH", help="JSON lines output (default: - for stdout)")
    parser.add_argument(
        "--annotate", default=None, metavar="OUT.mp4", help="also write the video with the results drawn"
    )
    parser.add_argument(
        "--hr-method",
        default=DEFAULT_HR_METHOD,
        choices=HR_METHODS,
        help=f"heart rate from the learned rPPG stream (model) or a classic method (default: {DEFAULT_HR_METHOD})",
    )
    parser.add_argument("--backend", default="auto", choices=("auto", "onnx", "torch"), help="(default: auto)")
    # Half the cores: the decoder and Face Mesh need the rest, and PyTorch's OpenMP threads stalled the stream
    # (0.6 frames/s) when they had to wait for a busy core (benchmarks/results/stream.md).
    default_threads = max(1, (os.cpu_count() or 2) // 2)
    parser.add_argument(
        "--threads",
        type=int,
        default=default_threads,
        metavar="N",
        help=f"CPU threads of the network (default: half the cores, {default_threads})",
    )
    parser.add_argument("--update-every", type=float, default=1.0, metavar="S", help="HR/HRV/stress update (s)")
    parser.add_argument("--hr-window", type=float, default=None, metavar="S", help="HR window (default: 10 s classic)")
    parser.add_argument("--expression-every", type=int, default=1, metavar="N", help="expression every N frames")
    parser.add_argument("--detect-every", type=int, default=None, metavar="N", help="re-detection interval (frames)")
    parser.add_argument(
        "--max-faces",
        type=int,
        default=2,
        metavar="N",
        help="faces tracked at once, the largest used (default 2: a second face is noticed; 1 saves ~2 ms a frame)",
    )
    parser.add_argument("--max-seconds", type=float, default=None, metavar="S", help="stop after S seconds of video")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or live line")
    return parser


def _draw(frame: np.ndarray, record: dict[str, Any], box: np.ndarray | None) -> np.ndarray:
    import cv2

    out = np.ascontiguousarray(frame.copy())
    if box is not None and record["face"]:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 255, 0), 2)
    lines = [f"t {record['t_s']:.1f} s"]
    if record["expression"]:
        p = record["expression_probs"][record["expression"]]
        lines.append(f"{record['expression']} {p:.2f}")
    if record["hr_bpm"] is not None:
        q = record["quality"]
        lines.append(f"HR {record['hr_bpm']:.0f} bpm" + (f" q {q:.2f}" if q is not None else ""))
    if record["stress"]:
        lines.append(f"stress {record['stress']}")
    if not record["face"]:
        lines.append("no face")
    for i, text in enumerate(lines):
        org = (8, 22 + 22 * i)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class _Annotator:
    """Writes the annotated frames with PyAV (H.264 where the bundled FFmpeg has it, else MPEG-4 Part 2)."""

    def __init__(self, path: Path, fps: float) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        rate = max(1, int(round(fps)))
        try:
            self.stream = self.container.add_stream("libx264", rate=rate)
        except (av.error.FFmpegError, ValueError):
            self.stream = self.container.add_stream("mpeg4", rate=rate)
        self.stream.pix_fmt = "yuv420p"
        self.size: tuple[int, int] | None = None

    def write(self, rgb: np.ndarray) -> None:
        import av
        import cv2

        if self.size is None:
            # Encoders need even sizes; a later frame of another size is scaled to the first.
            self.size = (rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2)
            self.stream.width, self.stream.height = self.size
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def _live_line(record: dict[str, Any], fps: float) -> str:
    parts = [f"t {record['t_s']:7.1f} s", f"{fps:5.1f} fps", "face" if record["face"] else "no face"]
    if record["expression"]:
        parts.append(record["expression"])
    parts.append(f"HR {record['hr_bpm']:.0f}" if record["hr_bpm"] is not None else "HR --")
    if record["stress"]:
        parts.append(f"stress {record['stress']}")
    return "  ".join(parts)


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    for name in ("update_every", "hr_window", "max_seconds"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")

    from stress_lightning.inference import sources
    from stress_lightning.inference.api import StressModel
    from stress_lightning.inference.engine import StreamSettings
    from stress_lightning.inference.loading import ModelLoadError, resolve_model
    from stress_lightning.inference.sources import SourceError

    try:
        settings = StreamSettings(
            hr_method=args.hr_method,
            hr_window_s=args.hr_window,
            update_every_s=args.update_every,
            expression_every=args.expression_every,
            detect_every=args.detect_every,
            max_faces=args.max_faces,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        # A missing file or camera is said before the model loads (seconds, or a download from the registry).
        sources.check_source(args.source)
    except SourceError as exc:
        raise CommandError(str(exc)) from exc
    try:
        loaded = resolve_model(
            args.model, prefer="torch" if args.backend == "torch" else "auto", tracking_uri=args.tracking_uri
        )
        model = StressModel(loaded, backend=args.backend, threads=args.threads)
    except (ModelLoadError, ValueError) as exc:
        raise CommandError(f"model: {exc}") from exc
    try:
        source = sources.open_source(args.source)
    except SourceError as exc:
        raise CommandError(str(exc)) from exc

    try:
        engine = model.engine(settings)
    except ValueError as exc:  # settings the model cannot honour (a heart-rate window for its learned stream)
        parser.error(str(exc))
    print(
        f"stream: {source.name} through {args.model} ({model.backend}, heart rate: {args.hr_method})", file=sys.stderr
    )
    stopped: str | None = None
    started = time.perf_counter()
    with ExitStack() as stack:
        out: IO[str] = sys.stdout
        if args.out != "-":
            try:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                out = stack.enter_context(open(args.out, "w", encoding="utf-8"))
            except OSError as exc:
                raise CommandError(f"{args.out}: cannot write the results ({exc})") from exc
        annotator = _Annotator(Path(args.annotate), source.nominal_fps or 30.0) if args.annotate else None
        if annotator is not None:
            stack.callback(annotator.close)
        stack.callback(engine.close)
        bar = None
        if not args.quiet and not source.live:
            from tqdm.auto import tqdm

            bar = stack.enter_context(tqdm(total=source.total_frames, unit="frame", desc="stream", file=sys.stderr))
        frames = iter(source)
        while True:
            try:
                t_s, rgb = next(frames)
            except StopIteration:
                break
            except SourceError as exc:
                stopped = str(exc)
                break
            if args.max_seconds is not None and t_s > args.max_seconds:
                break
            record = engine.process(t_s, rgb)
            out.write(json.dumps(record) + "\n")
            out.flush()  # a reader (or a crash) sees every frame so far
            for event in record.get("events", []):
                print(
                    f"\n[{record['t_s']:.2f} s] {event}" if not args.quiet else f"[{record['t_s']:.2f} s] {event}",
                    file=sys.stderr,
                )
            if annotator is not None:
                annotator.write(
                    _draw(rgb, record, None if engine.last_observation is None else engine.last_observation.box)
                )
            if bar is not None:
                bar.update(1)
            elif source.live and not args.quiet:
                rate = engine.frames_seen / max(time.perf_counter() - started, 1e-6)
                print("\r" + _live_line(record, rate), end="", file=sys.stderr, flush=True)
    stopped = stopped or source.closed_early
    if stopped and stopped.startswith(f"{source.name}: "):
        stopped = stopped[len(source.name) + 2 :]  # the error names the source already; say it once
    elapsed = time.perf_counter() - started
    summary = (
        f"{engine.frames_seen} frames in {elapsed:.1f} s ({engine.frames_seen / max(elapsed, 1e-9):.1f} fps), "
        f"a face in {engine.frames_with_face}"
    )
    if engine.max_faces_seen > 1:
        summary += f"; up to {engine.max_faces_seen} faces in view (the largest was tracked)"
    print(("\n" if source.live and not args.quiet else "") + f"stream: {summary}", file=sys.stderr)
    if stopped:
        raise CommandError(
            f"{source.name}: stopped early: {stopped} (the {engine.frames_seen} records so far are written)"
        )
    if engine.frames_seen == 0:
        raise CommandError(f"{source.name}: no frames")
    if engine.frames_with_face == 0:
        raise CommandError(f"{source.name}: no face found in any of its {engine.frames_seen} frames; nothing estimated")
    return 0

"""End-to-end speed and memory of the stream (`StreamEngine`) on 2 CPU cores over a 640x480 video; writes
benchmarks/results/stream.md.

Run from the repository root:
    .venv/bin/python benchmarks/bench_stream.py                       # speed: every configuration, eager and ORT
    .venv/bin/python benchmarks/bench_stream.py --only memory         # RSS over a 10-minute video (slow)

The video: ../shared/data/faces/posed/single_face.mp4 (640x360, 30 fps, 2.4 s, a real talking face) letterboxed
to 640x480 (black bars top and bottom), played forward then backward (so a loop has no jump), encoded once with
PyAV/libx264 (CRF 18, yuv420p, no B-frames, like a webcam's H.264 stream: high quality, not lossless) and repeated by
remuxing the encoded loop (no re-encoding) up to the length asked for, in a temporary folder that is deleted
afterwards. Nothing is written into the repository but the results file.

Each measurement runs in a fresh subprocess (OMP_NUM_THREADS=MKL_NUM_THREADS=threads, `torch.set_num_threads`,
onnxruntime intra-op threads = threads) so one run's thread pools, caches and mediapipe graphs do not touch the
next. The stream is what `stress-lightning stream` runs: `StreamEngine(...).run(open_source(path))` with
`StreamSettings(record_timings=True)` and the default heart-rate method (POS), records consumed and dropped.
Networks have random weights (seeded, identical for eager and ONNX Runtime): timing does not depend on them.
ONNX files come from `export.onnx.export_onnx` (every head) and `export_expression_onnx` (the per-frame
expression path) and are loaded by `inference.loading.resolve_model`, as an exported model is.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "faces" / "posed" / "single_face.mp4"
OUT = ROOT / "benchmarks" / "results" / "stream.md"
COMMAND = ".venv/bin/python benchmarks/bench_stream.py"
WIDTH, HEIGHT = 640, 480
CRF = 18
WARMUP_S = 2.0  # video seconds left out when a run stops before its steady state (graph building, first calls)
MIN_STEADY_FRAMES = 30
# The memory part: the default backend (ORT, as `stream` runs an exported model) of the fastest and the default
# configuration, and eager for the fastest. Eager waits passively: a spinning OpenMP pool on a busy shared machine
# can slow a 10-minute stream ten-fold (see the speed part), and how threads wait does not change what is kept.
MEMORY_RUNS = ("fastest=onnx:2", "fastest=torch:2:passive", "default=onnx:2")
MAX_WALL_S = 150.0  # a speed run stops after this long (a pathological variant on a busy machine)
SEED = 0
MEMORY_SAMPLE_EVERY_S = 10.0  # video seconds between RSS samples
KEEP_RUNS = 3  # earlier speed runs kept in the results file
HISTORY_SEPARATOR = "\n\n#### Run\n\n"
MARK_START = "<!-- {name}:start -->"
MARK_END = "<!-- {name}:end -->"


@dataclass(frozen=True)
class Config:
    """One model configuration: the net, its clip geometry and how the stream runs it."""

    name: str
    title: str
    net: dict[str, Any]
    spec: dict[str, Any]
    expression_every: int = 1
    seconds: float = 30.0  # video length of the speed run
    why: str = ""
    max_faces: int = 2  # StreamSettings.max_faces (the stream's default: 2, so a second face is noticed)


CONFIGS: dict[str, Config] = {
    "default": Config(
        "default",
        "(a) default: EfficientNet-B0 + C3D-small + rPPG CNN, face 8 x 64 px, ROI 200 x 8 px",
        net={"spatial_backbone": "efficientnet_b0", "temporal_backbone": "c3d_small", "rppg_backbone": "rppg_cnn"},
        spec={},
        seconds=30.0,
        why="conf/model/multitask.yaml with the clip geometry of conf/data/synthetic.yaml (the ModelSpec defaults)",
    ),
    "paper": Config(
        "paper",
        "(b) paper: EfficientNet-B0 + I3D R50 + rPPG CNN, face 8 x 112 px, ROI 200 x 8 px",
        net={"spatial_backbone": "efficientnet_b0", "temporal_backbone": "i3d_r50", "rppg_backbone": "rppg_cnn"},
        spec={"face_size": 112, "face_frames": 8},
        seconds=12.0,
        why=(
            "I3D at a CPU input size: 112 x 112 px (C3D's input, a quarter of the 224 x 224 pixels I3D was trained "
            "on) and 8 frames, the clip length of pytorchvideo's I3D_8x8_R50 checkpoint and of the default model, so "
            "only the temporal backbone and the face size differ from (a); 16 frames cost 3.5x more (an I3D call "
            "took 2.4 s vs 0.68 s while this benchmark was prepared), under 1 frame/s on these cores. 12 s of "
            "video, so the pulse window fills and the full graph runs 4 times (2 in the steady state)"
        ),
    ),
    "fastest": Config(
        "fastest",
        "(c) fastest: conv4 (8-16-32-32) + C3D-small (8-16-32-32) + rPPG CNN (8-16), face 4 x 48 px, "
        "expression every 3rd frame",
        net={
            "spatial_backbone": "conv4",
            "spatial_kwargs": {"channels": [8, 16, 32, 32]},
            "temporal_backbone": "c3d_small",
            "temporal_kwargs": {"channels": [8, 16, 32, 32]},
            "rppg_backbone": "rppg_cnn",
            "rppg_kwargs": {"channels": [8, 16]},
        },
        spec={"face_size": 48, "face_frames": 4},
        expression_every=3,
        seconds=30.0,
        why=(
            "the smallest registered backbones at reduced widths, 4 face frames of 48 px, the expression streams on "
            "every 3rd frame (10 updates a second at 30 fps); Face Mesh tracking as in every configuration"
        ),
    ),
}
# The fastest configuration tracking one face only: Face Mesh with max_num_faces=1 stops looking for a second face
# on every frame (BlazeFace, ~2 ms at 640x480), at the price of not noticing a crowd.
CONFIGS["fastest_one_face"] = replace(
    CONFIGS["fastest"],
    name="fastest_one_face",
    title="(c') fastest, one face: (c) with `StreamSettings(max_faces=1)`",
    why="as (c), but Face Mesh tracks one face and no longer searches every frame for a second one",
    max_faces=1,
)


# -- the video ---------------------------------------------------------------------------------------------------
def _letterboxed_pingpong(path: Path) -> tuple[list[np.ndarray], Fraction]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or Fraction(30)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    if not frames:
        raise SystemExit(f"{path}: no frame decoded")
    h, w = frames[0].shape[:2]
    if w != WIDTH or h > HEIGHT:
        raise SystemExit(f"{path}: expected 640 px wide and at most 480 high, got {w}x{h}")
    top = (HEIGHT - h) // 2
    boxed = []
    for f in frames:
        canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        canvas[top : top + h] = f
        boxed.append(canvas)
    # Forward then backward without repeating the end frames: ... n-2, n-1, n-2 ... 1, 0, 1 ... has no jump.
    return boxed + boxed[-2:0:-1], Fraction(rate)


def _encode_loop(frames: list[np.ndarray], rate: Fraction, path: Path) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": str(CRF), "preset": "medium"}
        # No B-frames: every packet's dts equals its pts, so copies of the loop can be appended by shifting both.
        stream.codec_context.max_b_frames = 0
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def make_video(seconds: float, folder: Path) -> Path:
    """A 640x480 H.264 mp4 of `seconds` (the ping-pong clip repeated), made once per length in `folder`."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    loop = folder / "loop.mp4"
    if not loop.exists():
        frames, rate = _letterboxed_pingpong(SOURCE)
        _encode_loop(frames, rate, loop)
    out_path = folder / f"face_640x480_{seconds:g}s.mp4"
    if out_path.exists():
        return out_path
    with av.open(str(loop)) as src:
        in_stream = src.streams.video[0]
        packets = [p for p in src.demux(in_stream) if p.size]
        tb = in_stream.time_base
        frame_ticks = int(round(1 / (in_stream.average_rate * tb)))
        loop_ticks = frame_ticks * len(packets)
        total = int(np.ceil(seconds * float(in_stream.average_rate)))
        with av.open(str(out_path), "w") as out:
            out_stream = out.add_stream_from_template(in_stream)
            for i in range(total):
                # Cutting inside a loop is safe: without B-frames no packet refers to a later one.
                k, j = divmod(i, len(packets))
                p = packets[j]
                # A fresh packet each time: muxing rescales a packet's timestamps in place.
                q = av.Packet(bytes(p))
                q.pts, q.dts = p.pts + k * loop_ticks, p.dts + k * loop_ticks
                q.time_base, q.is_keyframe = tb, p.is_keyframe
                q.stream = out_stream
                out.mux(q)
    return out_path


# -- the model ---------------------------------------------------------------------------------------------------
def _spec(config: Config):
    from stress_lightning.inference.spec import ModelSpec

    return ModelSpec(**config.spec)


def build_net(config: Config):
    """The configuration's MultiTaskNet with seeded random weights (eval, CPU)."""
    import torch

    from stress_lightning.models.net import MultiTaskNet

    spec = _spec(config)
    torch.manual_seed(SEED)
    net = MultiTaskNet(
        **config.net,
        num_expressions=len(spec.expression_names),
        num_stress=len(spec.stress_names),
        fps=spec.fps,
        roi_frames=spec.roi_frames,
    )
    return net.eval()


def export_config(config: Config, folder: Path) -> dict[str, Any]:
    """model.onnx + expression.onnx of the configuration in `folder`, checked against PyTorch."""
    import torch

    from stress_lightning.export.onnx import (
        check_expression_parity,
        check_parity,
        example_clips,
        export_expression_onnx,
        export_onnx,
    )

    spec = _spec(config)
    net = build_net(config)
    frames, roi = example_clips(1, spec.face_frames, spec.face_size, spec.roi_frames, spec.roi_size, spec.fps)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model_path = export_onnx(net, (frames, roi), folder / "model.onnx", spec_json=spec.to_json())
    export_expression_onnx(net, frames, folder / "expression.onnx", spec_json=spec.to_json())
    export_s = time.perf_counter() - t0
    with torch.inference_mode():
        full = check_parity(net, model_path, (frames, roi))
        expression = check_expression_parity(net, folder / "expression.onnx", frames)
    params = sum(p.numel() for p in net.parameters())
    return {
        "onnx": str(model_path),
        "export_s": export_s,
        "params_m": params / 1e6,
        "parity_full": max(full.values()),
        "parity_expression": max(expression.values()),
        "onnx_mb": (model_path.stat().st_size + (folder / "expression.onnx").stat().st_size) / 2**20,
    }


def _loaded(config: Config, backend: str, onnx_path: str | None):
    from stress_lightning.inference.loading import LoadedModel, resolve_model

    if backend == "onnx":
        return resolve_model(onnx_path, prefer="onnx")  # model.onnx, with expression.onnx beside it
    return LoadedModel(spec=_spec(config), source=f"random init ({config.name})", net=build_net(config))


# -- workers (subprocesses) ----------------------------------------------------------------------------------------
def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _timed_ms(fn, n: int) -> tuple[float, float]:
    """(min, median) ms of `n` calls after one untimed call."""
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.min(times)), 1000 * float(np.median(times))


def _calls(engine, job: dict) -> dict[str, tuple[float, float]]:
    """Per-call times of the network on the stream's input shapes, outside the stream: the runner's expression
    and full calls; for eager also the spatial, temporal and rPPG streams alone."""
    import torch

    spec = engine.spec
    rng = np.random.default_rng(SEED)
    frames = rng.random((1, spec.face_frames, 3, spec.face_size, spec.face_size), dtype=np.float32)
    roi = (0.5 + 0.01 * rng.random((1, spec.roi_frames, 3, spec.roi_size, spec.roi_size))).astype(np.float32)
    n = job["calls"]
    out = {
        "expression": _timed_ms(lambda: engine.runner.expression(frames), n),
        "full": _timed_ms(lambda: engine.runner.full(frames, roi), n),
    }
    net = engine.loaded.net
    if job["backend"] == "torch" and net is not None:
        f, r = torch.from_numpy(frames), torch.from_numpy(roi)
        centre = f[:, spec.face_frames // 2]
        with torch.inference_mode():
            out["spatial"] = _timed_ms(lambda: net.spatial(centre), n)
            out["temporal"] = _timed_ms(lambda: net.temporal(f), n)
            out["rppg"] = _timed_ms(lambda: net.rppg(r), n)
    return out


def _nospin_runner(loaded, threads: int):
    """ONNX Runtime as `make_runner` builds it, but with the intra-op threads told not to spin between runs (they
    spin by default, holding a core the face tracker and the decoder could use)."""
    import onnxruntime as ort

    from stress_lightning.inference.runtime import OnnxRunner

    spec = loaded.spec
    runner = OnnxRunner(
        loaded.onnx_path, loaded.expression_onnx_path, (spec.roi_frames, 3, spec.roi_size, spec.roi_size), threads
    )

    def session(path: Path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    runner.session = session(loaded.onnx_path)
    if loaded.expression_onnx_path is not None:
        runner.expression_session = session(loaded.expression_onnx_path)
    return runner


def _engine(job: dict, settings):
    import torch

    from stress_lightning.inference.engine import StreamEngine

    threads = job["threads"]
    torch.set_num_threads(threads)
    config = CONFIGS[job["config"]]
    loaded = _loaded(config, job["backend"], job.get("onnx"))
    runner = _nospin_runner(loaded, threads) if job.get("tweak") == "nospin" else None
    return StreamEngine(loaded, settings, backend=job["backend"], threads=threads, runner=runner)


def timing_worker(job: dict) -> dict:
    from stress_lightning.inference.engine import CLASSIC_WINDOW_S, StreamSettings
    from stress_lightning.inference.sources import open_source

    config = CONFIGS[job["config"]]
    engine = _engine(
        job, StreamSettings(expression_every=config.expression_every, max_faces=config.max_faces, record_timings=True)
    )
    source = open_source(job["video"])
    marks, t_s, hr, expr = [], [], 0, 0
    cpu0 = os.times()
    start = time.perf_counter()
    capped = False
    for record in engine.run(source):
        marks.append(time.perf_counter())
        t_s.append(record["t_s"])
        hr += record["hr_bpm"] is not None
        expr += record["expression"] is not None
        if marks[-1] - start > job["max_wall_s"]:
            capped = True  # a variant too slow for the whole video on a shared machine: stop, report what ran
            break
    cpu1 = os.times()
    engine.close()
    calls = _calls(engine, job)
    tm = {k: np.asarray(v) for k, v in engine.timings.items()}
    n = len(marks)
    # Steady state: every window full (pulse window and classic HR window), as in a long stream.
    steady_from = max(engine.spec.window_s, CLASSIC_WINDOW_S)
    warm = int(np.searchsorted(np.asarray(t_s), steady_from))
    if warm >= n - MIN_STEADY_FRAMES:
        # Stopped (or a video too short) before the windows filled: figures over the frames after the warm-up,
        # without pulse updates, flagged in the report.
        steady_from = WARMUP_S
        warm = int(np.searchsorted(np.asarray(t_s), steady_from))
    steady = slice(warm, n)
    latency = (tm["decode"] + tm["total"])[steady]
    update = (tm["pulse"][steady] > 0) | (tm["hr"][steady] > 0)
    called = tm["expression"][steady] > 0

    def per_call(stage: str, mask: np.ndarray) -> float:
        return 1000 * float(np.median(tm[stage][steady][mask])) if mask.any() else float("nan")

    return {
        "frames": n,
        "steady_from_s": steady_from,
        "capped": capped,
        "video_s": float(t_s[-1]),
        "steady_frames": n - warm,
        "fps_all": n / (marks[-1] - start),
        "fps_steady": (n - warm) / (marks[-1] - marks[warm - 1]),
        "cpu_ms_per_frame": 1000 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / n,
        "p50_ms": 1000 * float(np.percentile(latency, 50)),
        "p99_ms": 1000 * float(np.percentile(latency, 99)),
        "max_ms": 1000 * float(latency.max()),
        "update_frames": int(update.sum()),
        "update_frame_ms": 1000 * float(np.median(latency[update])) if update.any() else float("nan"),
        "other_frame_p99_ms": 1000 * float(np.percentile(latency[~update], 99)) if (~update).any() else float("nan"),
        "stage_ms": {k: 1000 * float(v[steady].mean()) for k, v in tm.items()},
        "expression_per_call_ms": per_call("expression", called),
        "pulse_per_update_ms": per_call("pulse", update),
        "hr_per_update_ms": per_call("hr", update),
        "records_with_hr": hr,
        "records_with_expression": expr,
        "rss_mb": _rss_mb(),
        "calls": calls,
        "backend": engine.runner.name,
    }


def memory_worker(job: dict) -> dict:
    from stress_lightning.inference.engine import StreamSettings
    from stress_lightning.inference.sources import open_source

    config = CONFIGS[job["config"]]
    # record_timings off: its per-frame lists grow by design and would hide what the engine itself keeps.
    engine = _engine(job, StreamSettings(expression_every=config.expression_every, max_faces=config.max_faces))
    samples: list[tuple[float, float, float]] = [(0.0, _rss_mb(), 0.0)]
    next_sample = MEMORY_SAMPLE_EVERY_S
    start = time.perf_counter()
    n = hr = 0
    t_last = 0.0
    for record in engine.run(open_source(job["video"])):
        n += 1
        hr += record["hr_bpm"] is not None
        t_last = record["t_s"]
        if t_last >= next_sample:
            samples.append((t_last, _rss_mb(), time.perf_counter() - start))
            next_sample += MEMORY_SAMPLE_EVERY_S
    samples.append((t_last, _rss_mb(), time.perf_counter() - start))
    engine.close()
    return {
        "frames": n,
        "records_with_hr": hr,
        "samples": samples,
        "wall_s": time.perf_counter() - start,
        "backend": engine.runner.name,
    }


def parse_variant(text: str) -> dict[str, Any]:
    """ "torch:2", "onnx:1", "torch:2:passive" (OMP_WAIT_POLICY=PASSIVE), "onnx:2:nospin" (ORT threads do not
    spin) -> job fields."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in ("torch", "onnx") or not parts[1].isdigit():
        raise argparse.ArgumentTypeError(f"variant {text!r}: expected BACKEND:THREADS[:passive|nospin]")
    tweak = parts[2] if len(parts) == 3 else ""
    if (
        tweak not in ("", "passive", "nospin")
        or (tweak == "passive" and parts[0] != "torch")
        or (tweak == "nospin" and parts[0] != "onnx")
    ):
        raise argparse.ArgumentTypeError(f"variant {text!r}: 'passive' goes with torch, 'nospin' with onnx")
    return {"backend": parts[0], "threads": int(parts[1]), "tweak": tweak, "label": text}


def parse_memory_run(text: str) -> tuple[str, dict[str, Any]]:
    """ "fastest=onnx:2" -> (configuration, variant)."""
    name, _, variant = text.partition("=")
    if name not in CONFIGS or not variant:
        raise argparse.ArgumentTypeError(f"memory run {text!r}: expected CONFIG=VARIANT, CONFIG in {list(CONFIGS)}")
    return name, parse_variant(variant)


def run_worker(kind: str, job: dict, timeout_s: float) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(job["threads"]), MKL_NUM_THREADS=str(job["threads"]))
    if job.get("tweak") == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    else:
        env.pop("OMP_WAIT_POLICY", None)
    env.setdefault("PYTHONWARNINGS", "ignore")
    cmd = [sys.executable, str(Path(__file__).resolve()), f"--worker-{kind}", json.dumps(job)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
        raise RuntimeError(f"{kind} worker {job['config']}/{job['label']} failed (rc {proc.returncode}):\n{tail}")
    return json.loads(lines[-1][len("RESULT ") :])


# -- the report ----------------------------------------------------------------------------------------------------
def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_gib() -> str:
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        return f"{kb / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        return "? GiB"


def machine_line() -> str:
    import av
    import mediapipe
    import onnxruntime
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"Machine: {_cpu_model()}, {os.cpu_count()} CPU cores ({usable} usable), {_mem_gib()}, no GPU; "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, mediapipe {mediapipe.__version__} (Face Mesh, XNNPACK), "
        f"PyAV {av.__version__}, numpy {np.__version__}."
    )


def _f(x: float, digits: int = 1) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def read_section(text: str, name: str) -> str:
    """The body of section `name` of an earlier results file ("" when absent), so one part can be rerun alone."""
    start, end = MARK_START.format(name=name), MARK_END.format(name=name)
    if start in text and end in text:
        return text.split(start, 1)[1].split(end, 1)[0].strip("\n")
    return ""


def earlier_runs(old_speed: str, old_history: str) -> str:
    """The history section after a new speed run: the main table of the run it replaces (with its command, date
    and load line) on top of the tables kept before, at most `KEEP_RUNS`. The same command gives different figures
    under different loads on a shared machine; the history shows how much."""
    entries = [e for e in old_history.split(HISTORY_SEPARATOR) if e.strip()][1:] if old_history else []
    if old_speed:
        lines = old_speed.splitlines()
        command = next((line for line in lines if line.startswith("Command:")), "")
        start = next((i for i, line in enumerate(lines) if line.startswith("| configuration | variant | frames")), None)
        if start is not None:
            end = start
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            entries.insert(0, "\n".join([command, "", *lines[start:end]]))
    entries = entries[:KEEP_RUNS]
    if not entries:
        return ""
    head = (
        "### Earlier speed runs\n\nThe main table of the previous runs of the speed part (newest first), kept by "
        "the script when it reran: the machine is shared, and the load during a run moves the figures."
    )
    return HISTORY_SEPARATOR.join([head, *entries])


def compose(sections: dict[str, str]) -> str:
    blocks = [header()]
    for name, body in sections.items():
        if body:
            blocks.append(f"{MARK_START.format(name=name)}\n{body.rstrip()}\n{MARK_END.format(name=name)}")
    return "\n".join(blocks) + "\n"


VARIANT_NOTES = {
    "torch": "PyTorch eager",
    "onnx": "ONNX Runtime",
    "passive": "OMP_WAIT_POLICY=PASSIVE",
    "nospin": "intra-op spinning off",
}
# Eager variant -> the ONNX Runtime variant it is compared with (same threads; each with its waiting fix).
PAIRS = {"torch:2": "onnx:2", "torch:1": "onnx:1", "torch:2:passive": "onnx:2:nospin"}


def _variant_text(label: str) -> str:
    v = parse_variant(label)
    text = f"{VARIANT_NOTES[v['backend']]}, {v['threads']} thread{'s' if v['threads'] > 1 else ''}"
    return text + (f", {VARIANT_NOTES[v['tweak']]}" if v["tweak"] else "")


def _target(name: str, r: dict) -> str:
    if name == "default":
        ok = r["fps_steady"] >= 30 and r["p99_ms"] < 100
        return f"{'met' if ok else 'missed'} (>= 30 fps, p99 < 100 ms)"
    if name.startswith("fastest"):
        return f"{'met' if r['fps_steady'] >= 100 else 'missed'} (>= 100 fps)"
    return ""


def summary(results: dict, configs: list[str]) -> list[str]:
    """What the speed table says, in figures: targets, how threads wait, and what limits the fastest stream."""
    ok = {key: r for key, r in results.items() if "error" not in r}
    lines = ["**Summary of this run.**", ""]
    for name in configs:
        rows = {label: r for (n, label), r in ok.items() if n == name}
        if not rows:
            continue
        best_label, best = max(rows.items(), key=lambda kv: kv[1]["fps_steady"])
        text = (
            f"- {name}: best {best['fps_steady']:.1f} frames/s ({best_label}, p50 {best['p50_ms']:.1f} ms, p99 "
            f"{best['p99_ms']:.1f} ms)"
        )
        shipped = [label for label in ("onnx:2", "torch:2") if label in rows]
        if shipped:
            text += "; as shipped (`onnx:2` with an ONNX file, else `torch:2`): " + ", ".join(
                f"{label} {rows[label]['fps_steady']:.1f} frames/s, p99 {rows[label]['p99_ms']:.0f} ms"
                for label in shipped
            )
        if name == "default" or name.startswith("fastest"):
            met = [label for label, r in rows.items() if _target(name, r).startswith("met")]
            text += f". Target met by {len(met)} of {len(rows)} variants" + (f" ({', '.join(met)})" if met else "")
        lines.append(text + ".")
    spin = [
        (name, ok[(name, "onnx:2")], ok[(name, "onnx:2:nospin")])
        for name in configs
        if (name, "onnx:2") in ok and (name, "onnx:2:nospin") in ok
    ]
    if spin:
        gains = [b["fps_steady"] / a["fps_steady"] for _, a, b in spin]
        effect = (
            "In this run spinning cost frames/s: other processes kept the cores busy."
            if max(gains) >= 1.2
            else "In this run it made little difference (the cores had room); on a loaded machine it does (see the "
            "earlier runs, if any, and their load)."
        )
        lines += [
            "",
            "Waiting threads: ONNX Runtime's intra-op threads spin after every run by default, and PyTorch's OpenMP "
            "threads spin at every barrier (libgomp's active wait). The network shares 2 cores with Face Mesh, the "
            "H.264 decoder's threads and whatever else runs, so a spinning thread can take the core the others "
            "need. ORT with spinning / without ("
            + "; ".join(
                f"{name}: {a['fps_steady']:.1f} / {b['fps_steady']:.1f} frames/s, decode "
                f"{a['stage_ms']['decode']:.1f} / {b['stage_ms']['decode']:.1f} ms, CPU "
                f"{a['cpu_ms_per_frame']:.1f} / {b['cpu_ms_per_frame']:.1f} ms/frame"
                for name, a, b in spin
            )
            + f"). {effect} Eager with 2 spinning threads depends most on what else runs: a median far above the "
            "minimum in the call table below is time spent waiting for a descheduled thread.",
        ]
    fastest = ok.get(("fastest", "onnx:2:nospin")) or ok.get(("fastest", "onnx:2"))
    if fastest:
        s = fastest["stage_ms"]
        lines += [
            "",
            f"What limits the fastest configuration: face tracking and crops {s['face']:.1f} ms and decoding "
            f"{s['decode']:.1f} ms of its {s['decode'] + s['total']:.1f} ms per frame; the networks take "
            f"{s['expression'] + s['pulse']:.1f} ms on average.",
        ]
    return lines


def speed_section(results: dict, exports: dict, args, load_before: str, load_after: str, wall_s: float) -> str:
    command = " ".join([COMMAND, *args.passthrough])
    lines = [
        "### Speed",
        "",
        f"Command: `{command}`. Date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}. Load average "
        f"(1/5/15 min) before: {load_before}; after: {load_after}. Wall time {wall_s / 60:.1f} min.",
        "",
        "Configurations (random init weights, seeded; the same weights for eager and ONNX Runtime):",
        "",
    ]
    for name in args.configs:
        c = CONFIGS[name]
        e = exports.get(name)
        line = f"- **{c.title}**: {c.why}."
        if e:
            line += (
                f" {e['params_m']:.2f} M parameters. ONNX export {e['export_s']:.1f} s, {e['onnx_mb']:.1f} MB (model "
                f"+ expression graph); ORT vs PyTorch max |diff| {e['parity_full']:.1e} (full graph), "
                f"{e['parity_expression']:.1e} (expression graph)."
            )
        lines.append(line)
    lines += [
        "",
        "Variants: `torch:N` PyTorch eager, `onnx:N` ONNX Runtime (`expression.onnx` per frame, `model.onnx` per "
        "update), N intra-op threads (OMP_NUM_THREADS=N, `torch.set_num_threads(N)`, ORT `intra_op_num_threads=N`). "
        "`torch:2:passive` adds OMP_WAIT_POLICY=PASSIVE (OpenMP threads sleep instead of spinning while they wait); "
        "`onnx:2:nospin` sets ORT's `session.intra_op.allow_spinning=0` (a runner built by this benchmark, "
        "otherwise `OnnxRunner`).",
        "",
        "Steady state: the frames after the first 10 s of video, when the pulse window (8 s) and the classic HR "
        "window (10 s) are full and every stage runs as in a long stream. Frames/s: steady-state frames over their "
        "wall time (records consumed by a no-op); in brackets over the whole run from the first frame request. CPU "
        "ms/frame: the process's user + system time over the whole run per frame (all threads; spinning counts). "
        "Latency of a frame = decode (waiting for PyAV) + `process()` (tracking, crops, networks, record). The pulse "
        "update (full graph + POS + HRV) runs once per second of video, on 1 frame in 30, so **p99 is the latency of "
        "an update frame**; `other p99` is p99 over the frames without an update.",
        "",
        f"A run stops after {args.max_wall_s:g} s of wall time; one stopped before 10 s of video reports the frames "
        f"after the first {WARMUP_S:g} s instead (no pulse update among them: its p99 is not comparable).",
        "",
        "| configuration | variant | frames (steady) | frames/s steady (all) | CPU ms/frame | p50 ms | p99 ms | max ms "
        "| update frame ms | other p99 ms | target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (name, label), r in results.items():
        if "error" in r:
            lines.append(f"| {name} | {label} | failed: {r['error']} | | | | | | | | |")
            continue
        frames = f"{r['frames']} ({r['steady_frames']})"
        if r["capped"]:
            frames += f", stopped at {r['video_s']:.1f} s of video"
        if r["steady_from_s"] < 10.0:
            frames += f", from {r['steady_from_s']:g} s: no pulse update"
        lines.append(
            f"| {name} | {label} | {frames} | **{r['fps_steady']:.1f}** "
            f"({r['fps_all']:.1f}) | {r['cpu_ms_per_frame']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['max_ms']:.1f} | {_f(r['update_frame_ms'])} | {r['other_frame_p99_ms']:.1f} | {_target(name, r)} |"
        )
    lines += ["", *summary(results, args.configs)]
    lines += [
        "",
        "#### By stage (steady state, ms)",
        "",
        "Mean per frame over the steady-state frames, and the median per call for the stages that do not run on "
        "every frame. decode: PyAV (H.264, frame threads) + conversion to RGB; face: Face Mesh tracking, aligned "
        "face crop, landmark ROI grid, resampling to the 25 fps clip rate; expression: the spatial + temporal "
        "streams and the expression head (`runner.expression`); pulse: the full graph once per update (rPPG stream, "
        "HR, HRV and stress heads, and the spatial and temporal streams again on the face window centred in the "
        "pulse window); hr: the classic method (POS on 10 s, HRV from up to 60 s) once per update; total: "
        "`process()`.",
        "",
        "| configuration | variant | decode | face | expression | expression per call | pulse | pulse per update "
        "| hr | hr per update | total |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (name, label), r in results.items():
        if "error" in r:
            continue
        s = r["stage_ms"]
        lines.append(
            f"| {name} | {label} | {s['decode']:.2f} | {s['face']:.2f} | {s['expression']:.2f} | "
            f"{_f(r['expression_per_call_ms'], 2)} | {s['pulse']:.2f} | {_f(r['pulse_per_update_ms'], 1)} | "
            f"{s['hr']:.2f} | {_f(r['hr_per_update_ms'], 1)} | {s['total']:.2f} |"
        )
    lines += [
        "",
        f"#### Network calls outside the stream (min / median of {args.calls} calls on the stream's input shapes, ms)",
        "",
        "After the stream has finished, in the same process. spatial / temporal / rPPG: the eager backbones alone "
        "(spatial on the centre frame, temporal on the face window, rPPG on the 200-frame ROI); expression call: "
        "`runner.expression`; full call: `runner.full` (every head; the heads are what it costs beyond the three "
        "backbones). The min is the undisturbed cost; a median far above it means the call waited for a core.",
        "",
        "| configuration | variant | spatial | temporal | rPPG | expression call | full call |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def mm(pair) -> str:
        return "-" if pair is None else f"{pair[0]:.2f} / {pair[1]:.2f}"

    for (name, label), r in results.items():
        if "error" in r:
            continue
        c = r["calls"]
        lines.append(
            f"| {name} | {label} | {mm(c.get('spatial'))} | {mm(c.get('temporal'))} | {mm(c.get('rppg'))} | "
            f"{mm(c['expression'])} | {mm(c['full'])} |"
        )
    lines += [
        "",
        "#### PyTorch eager vs ONNX Runtime (same model and weights, same benchmark run)",
        "",
        "Ratios eager / ORT of time (> 1: ORT faster); frames/s as ORT / eager. Calls: min-time ratios (the "
        "undisturbed cost). TensorRT: not installed on this machine, and it has no GPU: not measured.",
        "",
        "| configuration | eager variant | ORT variant | frames/s eager | frames/s ORT | frames/s ORT / eager "
        "| p50 ratio | p99 ratio | expression call ratio | full call ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in args.configs:
        for eager_label, ort_label in PAIRS.items():
            eager, ort = results.get((name, eager_label)), results.get((name, ort_label))
            if not eager or not ort or "error" in eager or "error" in ort:
                continue
            lines.append(
                f"| {name} | {eager_label} | {ort_label} | {eager['fps_steady']:.1f} | {ort['fps_steady']:.1f} | "
                f"**{ort['fps_steady'] / eager['fps_steady']:.2f}** | {eager['p50_ms'] / ort['p50_ms']:.2f} | "
                f"{eager['p99_ms'] / ort['p99_ms']:.2f} | "
                f"{eager['calls']['expression'][0] / ort['calls']['expression'][0]:.2f} | "
                f"{eager['calls']['full'][0] / ort['calls']['full'][0]:.2f} |"
            )
    lines += [
        "",
        "Output check (records with an expression / with a heart rate / all): "
        + "; ".join(
            f"{name} {label}: {r['records_with_expression']} / {r['records_with_hr']} / {r['frames']}"
            for (name, label), r in results.items()
            if "error" not in r
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


def memory_section(results: dict, args, load_before: str, load_after: str, wall_s: float) -> str:
    command = " ".join([COMMAND, "--only memory", *args.passthrough])
    lines = [
        "### Memory over a 10-minute video",
        "",
        f"Command: `{command}`. Date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}. Load average "
        f"(1/5/15 min) before: {load_before}; after: {load_after}. Wall time {wall_s / 60:.1f} min.",
        "",
        f"The same 640x480 video looped to {args.memory_minutes:g} minutes ({args.memory_minutes * 1800:.0f} "
        "frames); each configuration streams all of it in its own process (stage timings off, records dropped). "
        f"Resident set size (VmRSS, /proc/self/status) every {MEMORY_SAMPLE_EVERY_S:g} s of video. Slope: "
        "least-squares line through the samples from minute 1 to the end. The eager run waits passively "
        "(OMP_WAIT_POLICY=PASSIVE) so that it finishes in reasonable time on the shared machine; how threads wait "
        "does not change what the stream keeps in memory.",
        "",
        "| configuration | variant | frames | records with HR | wall min | RSS at start MB | RSS at 1 min MB "
        "| RSS at 10 min MB | slope MB/min (1-10 min) | max - min after 1 min MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (name, label), r in results.items():
        if "error" in r:
            lines.append(f"| {name} | {label} | failed: {r['error']} | | | | | | | |")
            continue
        s = np.asarray(r["samples"])
        t, rss = s[:, 0], s[:, 1]

        def at(x: float, t: np.ndarray = t, rss: np.ndarray = rss) -> float:
            i = int(np.argmin(np.abs(t - x)))
            return float(rss[i]) if abs(t[i] - x) <= MEMORY_SAMPLE_EVERY_S else float("nan")

        after = t >= 60.0
        slope = float(np.polyfit(t[after] / 60.0, rss[after], 1)[0]) if after.sum() >= 3 else float("nan")
        spread = float(rss[after].max() - rss[after].min()) if after.any() else float("nan")
        lines.append(
            f"| {name} | {label} | {r['frames']} | {r['records_with_hr']} | {r['wall_s'] / 60:.1f} | {rss[0]:.0f} | "
            f"{_f(at(60.0), 0)} | {_f(at(600.0), 0)} | {_f(slope, 2)} | {_f(spread, 1)} |"
        )
    lines += ["", "RSS by minute of video (minute: MB):", ""]
    for (name, label), r in results.items():
        if "error" in r:
            continue
        s = np.asarray(r["samples"])
        picks = [s[int(np.argmin(np.abs(s[:, 0] - 60.0 * m)))] for m in range(int(args.memory_minutes) + 1)]
        lines.append(f"- {name} {label}: " + ", ".join(f"{p[0] / 60:.0f}: {p[1]:.0f}" for p in picks))
    lines.append("")
    return "\n".join(lines)


def header() -> str:
    return "\n".join(
        [
            "## Stream speed and memory on 2 CPU cores (`benchmarks/bench_stream.py`)",
            "",
            machine_line(),
            "The machine is shared with other jobs (see the load averages): figures are upper bounds on latency and "
            "lower bounds on frames/s. Video: ../shared/data/faces/posed/single_face.mp4 (640x360, 30 fps, a real "
            f"face) letterboxed to 640x480, looped forward-backward, H.264 by PyAV/libx264 CRF {CRF} yuv420p without "
            "B-frames (high quality, not lossless), 30 fps. Face tracking: Face Mesh video mode (the default "
            "`mediapipe` detector) with the stream's default `max_faces=2` unless a configuration says otherwise; "
            "classic HR method: POS (the stream's default).",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("speed", "memory", "all"), default="speed")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--variants",
        nargs="+",
        type=parse_variant,
        default=[parse_variant(v) for v in ("torch:2", "onnx:2")],
        help="BACKEND:THREADS[:passive|nospin] run for every configuration (default: torch:2 onnx:2)",
    )
    parser.add_argument(
        "--extra-variants",
        nargs="*",
        type=parse_variant,
        default=[parse_variant(v) for v in ("torch:2:passive", "onnx:2:nospin", "torch:1", "onnx:1")],
        help="variants run for --extra-configs only",
    )
    parser.add_argument("--extra-configs", nargs="*", default=["default", "fastest"], choices=list(CONFIGS))
    parser.add_argument("--seconds", type=float, default=None, help="override every configuration's video length")
    parser.add_argument("--calls", type=int, default=10, help="network calls timed outside the stream")
    parser.add_argument(
        "--max-wall-s", type=float, default=MAX_WALL_S, help="stop a speed run after this many seconds of wall time"
    )
    parser.add_argument("--memory-minutes", type=float, default=10.0)
    parser.add_argument(
        "--memory-runs",
        nargs="+",
        type=parse_memory_run,
        default=[parse_memory_run(r) for r in MEMORY_RUNS],
        help=f"CONFIG=VARIANT streams for the memory part (default: {' '.join(MEMORY_RUNS)})",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--workdir", type=Path, default=None, help="keep videos/ONNX here (default: a temp dir)")
    parser.add_argument("--worker-timing", help=argparse.SUPPRESS)
    parser.add_argument("--worker-memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_timing or args.worker_memory:
        import warnings

        warnings.filterwarnings("ignore")
        job = json.loads(args.worker_timing or args.worker_memory)
        result = timing_worker(job) if args.worker_timing else memory_worker(job)
        print("RESULT " + json.dumps(result), flush=True)
        return
    if not SOURCE.is_file():
        print(f"{SOURCE} is missing (shared data); nothing to measure", file=sys.stderr)
        raise SystemExit(1)
    argv = sys.argv[1:]
    if "--only" in argv:  # each section's command line names its part itself
        i = argv.index("--only")
        argv = argv[:i] + argv[i + 2 :]
    args.passthrough = argv

    previous = args.out.read_text() if args.out.exists() else ""
    sections = {name: read_section(previous, name) for name in ("speed", "history", "memory")}
    with tempfile.TemporaryDirectory(prefix="bench_stream_") as tmp:
        work = args.workdir or Path(tmp)
        if args.only in ("speed", "all"):
            load_before, t_start = _load(), time.perf_counter()
            exports, results = {}, {}
            for name in args.configs:
                config = CONFIGS[name]
                video = make_video(args.seconds or config.seconds, work / "video")
                variants = list(args.variants) + (list(args.extra_variants) if name in args.extra_configs else [])
                if any(v["backend"] == "onnx" for v in variants):
                    print(f"{name}: exporting ONNX ...", flush=True)
                    exports[name] = export_config(config, work / "onnx" / name)
                for v in variants:
                    job = {
                        **v,
                        "config": name,
                        "video": str(video),
                        "calls": args.calls,
                        "max_wall_s": args.max_wall_s,
                        "onnx": exports.get(name, {}).get("onnx"),
                    }
                    key = (name, v["label"])
                    try:
                        r = results[key] = run_worker("timing", job, timeout_s=1800)
                        stages = {k: round(x, 1) for k, x in r["stage_ms"].items()}
                        print(
                            f"  {name} {v['label']}: {r['fps_steady']:.1f} fps, p50 {r['p50_ms']:.1f} ms, p99 "
                            f"{r['p99_ms']:.1f} ms, stages {stages}, load {_load()}",
                            flush=True,
                        )
                    except (RuntimeError, subprocess.TimeoutExpired) as err:
                        print(f"  {name} {v['label']}: {err}", flush=True)
                        results[key] = {"error": str(err).splitlines()[0]}
            sections["history"] = earlier_runs(sections["speed"], sections["history"])
            sections["speed"] = speed_section(
                results, exports, args, load_before, _load(), time.perf_counter() - t_start
            )
            args.out.write_text(compose(sections))
        if args.only in ("memory", "all"):
            load_before, t_start = _load(), time.perf_counter()
            video = make_video(args.memory_minutes * 60.0, work / "video")
            results = {}
            onnx: dict[str, str] = {}
            for name, v in args.memory_runs:
                if v["backend"] == "onnx" and name not in onnx:
                    onnx[name] = export_config(CONFIGS[name], work / "onnx" / name)["onnx"]
                job = {**v, "config": name, "video": str(video), "onnx": onnx.get(name)}
                key = (name, v["label"])
                try:
                    r = results[key] = run_worker("memory", job, timeout_s=4 * 3600)
                    s = r["samples"]
                    print(
                        f"  {name} {v['label']}: RSS {s[0][1]:.0f} -> {s[-1][1]:.0f} MB over {s[-1][0]:.0f} s "
                        f"of video in {r['wall_s'] / 60:.1f} min, load {_load()}",
                        flush=True,
                    )
                except (RuntimeError, subprocess.TimeoutExpired) as err:
                    print(f"  {name} {v['label']}: {err}", flush=True)
                    results[key] = {"error": str(err).splitlines()[0]}
            sections["memory"] = memory_section(results, args, load_before, _load(), time.perf_counter() - t_start)
            args.out.write_text(compose(sections))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

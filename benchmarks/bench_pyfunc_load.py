"""The registered pyfunc model under load: 1000 consecutive predictions from one process, resident memory sampled as
they run, to show whether serving leaks; writes benchmarks/results/pyfunc_load.md.

Run from the repository root:
    .venv/bin/python benchmarks/bench_pyfunc_load.py                    # models:/stress-multitask@champion
    .venv/bin/python benchmarks/bench_pyfunc_load.py --tiny             # a fresh clone: a tiny random model
    .venv/bin/python benchmarks/bench_pyfunc_load.py --from-checkpoint outputs/.../last.ckpt
    .venv/bin/python benchmarks/bench_pyfunc_load.py --input video --calls 200   # the video-column form

The model is loaded as a consumer would (`tracking.pyfunc.load_pyfunc`: `mlflow.pyfunc.load_model` after checking
its files against the registry's checksums) from --model-uri in --tracking-uri (default: $MLFLOW_TRACKING_URI,
else the repository's sqlite:///mlruns/mlflow.db). `--tiny` and `--from-checkpoint` log and register a model into a
temporary store first (nothing is trained, nothing is written into the repository but the results file).

Inputs (the pyfunc's two forms, `tracking/pyfunc.py`): `clips` (default), a fixed dict {"frames", "roi"} of one
preprocessed clip at the model's geometry (seeded random face frames, an ROI carrying a 72 bpm pulse); `video`,
a one-row DataFrame {"video": [path]}, by default a 3 s clip of ../shared/data/faces/posed/single_face.mp4
re-encoded at the model's frame rate (each call runs the whole stream: face tracking, crops, windows).

Memory: resident set size (VmRSS, /proc/self/status) after `--warmup` calls and then every `--sample-every` calls;
the slope is the least-squares line through those samples from the second on (KiB per call). Time per call: wall
clock of each `predict`, after the warm-up. glibc's malloc arenas (one per thread that allocates, up to 8 per core)
make RSS of the video form wander by tens of MiB; `MALLOC_ARENA_MAX=2` in the environment narrows that.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "pyfunc_load.md"
FACE_VIDEO = ROOT.parent / "shared" / "data" / "faces" / "posed" / "single_face.mp4"
DEFAULT_URI = "models:/stress-multitask@champion"
MARK_START = "<!-- {name}:start -->"
MARK_END = "<!-- {name}:end -->"
SEED = 0


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status (this benchmark reads Linux's /proc)")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    import mlflow
    import onnxruntime
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"Machine: {_cpu_model()}, {os.cpu_count()} CPU cores ({usable} usable), no GPU (CPU only); "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}; torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op threads), onnxruntime {onnxruntime.__version__}, "
        f"mlflow {mlflow.__version__}, numpy {np.__version__}."
    )


# -- the model ----------------------------------------------------------------------------------------------------
def _register(net: Any, spec: Any, store_dir: Path) -> tuple[str, str]:
    """Log `net` as the pyfunc model into a new SQLite store under `store_dir` and register it as champion."""
    from mlflow import MlflowClient

    from stress_lightning.tracking.pyfunc import log_pyfunc_model
    from stress_lightning.tracking.registry import ModelRegistry
    from stress_lightning.tracking.store import ensure_experiment

    uri = f"sqlite:///{store_dir}/mlflow.db"
    client = MlflowClient(uri)
    run_id = client.create_run(ensure_experiment("bench-pyfunc-load", uri)).info.run_id
    rng = np.random.default_rng(SEED)
    example = {
        "frames": rng.random((1, spec.face_frames, 3, spec.face_size, spec.face_size), dtype=np.float32),
        "roi": rng.random((1, spec.roi_frames, 3, spec.roi_size, spec.roi_size), dtype=np.float32),
    }
    names = {"expression": list(spec.expression_names), "stress": list(spec.stress_names)}
    info = log_pyfunc_model(net, names, example, run_id=run_id, tracking_uri=uri, spec=spec)
    registry = ModelRegistry(uri)
    version = registry.register(run_id, model_id=info.model_id, name="bench-pyfunc-load")
    registry.set_alias(version, "champion", name="bench-pyfunc-load")
    client.set_terminated(run_id)
    return uri, "models:/bench-pyfunc-load@champion"


def tiny_model(store_dir: Path) -> tuple[str, str, str]:
    """A small random MultiTaskNet at the tests' geometry (25 fps, 4 s pulse window, 32 px faces)."""
    import torch

    from stress_lightning.inference.spec import ModelSpec
    from stress_lightning.models.net import MultiTaskNet

    torch.manual_seed(SEED)
    net = MultiTaskNet(
        spatial_backbone="conv4",
        spatial_kwargs={"channels": [8, 16]},
        temporal_backbone="c3d_small",
        temporal_kwargs={"channels": [4, 8, 8, 16]},
        rppg_backbone="rppg_cnn",
        rppg_kwargs={"channels": [4, 8], "out_dim": 16},
        fps=25.0,
        roi_frames=100,
    ).eval()
    spec = ModelSpec(fps=25.0, roi_frames=100, face_frames=4, face_size=32, roi_size=8)
    uri, model_uri = _register(net, spec, store_dir)
    return uri, model_uri, "tiny random MultiTaskNet (conv4 8-16, C3D-small 4-8-8-16, rPPG CNN 4-8), registered here"


def checkpoint_model(path: Path, store_dir: Path) -> tuple[str, str, str]:
    from stress_lightning.inference.loading import resolve_model

    loaded = resolve_model(path, prefer="torch")
    uri, model_uri = _register(loaded.net, loaded.spec, store_dir)
    return uri, model_uri, f"the weights of {path}, registered here"


# -- the inputs ---------------------------------------------------------------------------------------------------
def clip_input(spec: Any) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    frames = rng.random((1, spec.face_frames, 3, spec.face_size, spec.face_size), dtype=np.float32)
    t = np.arange(spec.roi_frames, dtype=np.float32) / spec.fps
    pulse = 0.003 * np.sin(2 * np.pi * 1.2 * t)[None, :, None, None, None]
    roi = 0.5 + pulse + 0.002 * rng.random((1, spec.roi_frames, 3, spec.roi_size, spec.roi_size), dtype=np.float32)
    return {"frames": frames, "roi": roi.astype(np.float32)}


def video_input(spec: Any, folder: Path, source: Path | None, seconds: float) -> tuple[Any, str]:
    """A one-row video table: `source`, or `seconds` of the shared face video at the model's frame rate."""
    import pandas as pd

    if source is not None:
        return pd.DataFrame({"video": [str(source)]}), str(source)
    if not FACE_VIDEO.is_file():
        raise SystemExit(f"{FACE_VIDEO} is absent (see ../shared/data/README.md); pass --video PATH")
    import av

    from stress_lightning.data.video import iter_timed_frames

    frames = [rgb for _, rgb in iter_timed_frames(FACE_VIDEO)]
    frames = frames + frames[::-1]  # forwards then backwards: no jump where the loop restarts
    count = round(seconds * spec.fps)
    path = folder / "face.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=round(spec.fps))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i % len(frames)]), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return pd.DataFrame({"video": [str(path)]}), f"{seconds:g} s of {FACE_VIDEO.name} at {spec.fps:g} fps (H.264)"


# -- the run ------------------------------------------------------------------------------------------------------
def run(model: Any, model_input: Any, calls: int, warmup: int, sample_every: int) -> dict[str, Any]:
    import gc

    rss_loaded = rss_kib()
    times: list[float] = []
    samples: list[tuple[int, int]] = []  # (calls done, RSS KiB) from the end of the warm-up on
    rows = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short video warns that it gave no window, on every call
        for i in range(1, calls + 1):
            start = time.perf_counter()
            table = model.predict(model_input)
            elapsed = time.perf_counter() - start
            rows = len(table)
            if i > warmup:
                times.append(elapsed)
            if i == warmup or (i > warmup and (i - warmup) % sample_every == 0):
                samples.append((i, rss_kib()))
            if i % 100 == 0:
                print(f"  {i} calls, RSS {rss_kib() / 1024:.1f} MiB", file=sys.stderr, flush=True)
    gc.collect()
    calls_done = np.array([c for c, _ in samples], dtype=float)
    rss = np.array([r for _, r in samples], dtype=float)
    # The line starts at the second sample: the first, right after the warm-up, still holds its transients (it
    # was the highest in every run of the video form), and would tilt the line down.
    fit = slice(1, None) if len(samples) >= 3 else slice(None)
    slope = float(np.polyfit(calls_done[fit], rss[fit], 1)[0]) if len(samples) >= 2 else float("nan")
    ms = np.array(times) * 1000
    return {
        "rss_loaded": rss_loaded,
        "rss_warm": samples[0][1],
        "rss_fit_start": samples[1][1] if len(samples) >= 3 else samples[0][1],
        "fit_start_calls": samples[1][0] if len(samples) >= 3 else samples[0][0],
        "rss_end": samples[-1][1],
        "rss_after_gc": rss_kib(),
        "rss_max": int(rss.max()),
        "rss_min": int(rss.min()),
        "slope_kib_per_call": slope,
        "samples": samples,
        "rows": rows,
        "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "stdev_ms": float(statistics.pstdev(ms)),
    }


def section(args: argparse.Namespace, meta: dict[str, Any], result: dict[str, Any]) -> str:
    mib = 1024.0
    growth = result["rss_end"] - result["rss_fit_start"]
    per_1000 = result["slope_kib_per_call"] * 1000
    # A leak shows as a rising line; allocator noise moves single samples up and down by a few MiB.
    verdict = (
        "no leak: resident memory does not grow with the calls (slope below +1 KiB a call, 1 MiB per 1000)"
        if result["slope_kib_per_call"] < 1.0
        else "memory grows with the calls: look for what each call keeps"
    )
    samples = ", ".join(f"{c}: {r / mib:.1f}" for c, r in result["samples"])
    return "\n".join(
        [
            f"### Input `{args.input}`",
            "",
            f"Command: `{meta['command']}` (from the repository root). Date: {meta['date']}. Load average "
            f"(1/5/15 min) before: {meta['load_before']}; after: {meta['load_after']}. Wall time "
            f"{meta['wall_s'] / 60:.1f} min.",
            "",
            f"Model: `{meta['model_uri']}` ({meta['model_what']}); loaded with `load_pyfunc` in "
            f"{meta['load_s']:.1f} s{meta['load_note']}. Input: {meta['input_what']}; each call returns "
            f"{result['rows']} row(s).",
            "",
            f"| calls | warm-up | RSS after load MiB | RSS after warm-up MiB | RSS after last call MiB | growth from "
            f"call {result['fit_start_calls']} MiB | slope KiB/call (from call {result['fit_start_calls']}) "
            "| min / max RSS after warm-up MiB | ms/call mean | p50 | p99 | max |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| {args.calls} | {args.warmup} | {result['rss_loaded'] / mib:.1f} | {result['rss_warm'] / mib:.1f} | "
            f"{result['rss_end'] / mib:.1f} | {growth / mib:+.2f} | {result['slope_kib_per_call']:+.3f} "
            f"({per_1000 / mib:+.2f} MiB per 1000 calls) | {result['rss_min'] / mib:.1f} / "
            f"{result['rss_max'] / mib:.1f} | {result['mean_ms']:.1f} | {result['p50_ms']:.1f} | "
            f"{result['p99_ms']:.1f} | {result['max_ms']:.1f} |",
            "",
            f"**{verdict}.** RSS every {args.sample_every} calls after the warm-up (calls: MiB): {samples}.",
        ]
    )


def _load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def write_results(name: str, body: str, machine: str) -> None:
    previous = OUT.read_text(encoding="utf-8") if OUT.is_file() else ""
    # The other input's section of an earlier run is kept, so each can be rerun alone.
    sections = dict(re.findall(r"<!-- (\w+):start -->\n(.*?)\n<!-- \1:end -->", previous, flags=re.S))
    sections[name] = body
    parts = [
        "## The pyfunc model under load (`benchmarks/bench_pyfunc_load.py`)",
        "",
        machine,
        "",
        "One process loads the registered model once (`tracking.pyfunc.load_pyfunc`, i.e. `mlflow.pyfunc.load_model` "
        "after the checksum checks) and calls `predict` again and again with the same input. Resident set size: "
        "VmRSS from /proc/self/status, after the warm-up and then at a fixed interval; slope: least-squares line "
        "through those samples from the second on (the first still holds the warm-up's transients). The machine "
        "is shared with other jobs (see the load averages): times are upper "
        "bounds.",
    ]
    # "notes": written by hand (what was found looking into a result), kept across runs.
    for key in ("clips", "video", "notes"):
        if key in sections:
            parts += ["", MARK_START.format(name=key), sections[key], MARK_END.format(name=key)]
    OUT.write_text("\n".join(parts) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", default=DEFAULT_URI, help=f"registered model (default {DEFAULT_URI})")
    parser.add_argument("--tracking-uri", default=None, help="store (default $MLFLOW_TRACKING_URI, else mlruns)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--tiny", action="store_true", help="register a tiny random model in a temporary store")
    where.add_argument("--from-checkpoint", type=Path, metavar="CKPT", help="register these weights temporarily")
    parser.add_argument("--input", choices=("clips", "video"), default="clips")
    parser.add_argument("--video", type=Path, default=None, help="the video of --input video (default: 3 s face)")
    parser.add_argument("--video-seconds", type=float, default=3.0)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--sample-every", type=int, default=50)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's, one per core)"
    )
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing the file")
    args = parser.parse_args()
    if args.calls <= args.warmup or args.sample_every < 1:
        parser.error("--calls must exceed --warmup, and --sample-every be at least 1")

    import torch

    from stress_lightning.tracking.pyfunc import load_pyfunc
    from stress_lightning.tracking.store import display_uri, resolve_tracking_uri

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    load_before = _load_average()
    scratch = Path(tempfile.mkdtemp(prefix="bench_pyfunc_load_"))
    try:
        if args.tiny:
            tracking_uri, model_uri, model_what = tiny_model(scratch)
        elif args.from_checkpoint is not None:
            tracking_uri, model_uri, model_what = checkpoint_model(args.from_checkpoint, scratch)
        else:
            tracking_uri, model_uri = resolve_tracking_uri(args.tracking_uri), args.model_uri
            model_what = f"from {display_uri(tracking_uri)}"
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = load_pyfunc(model_uri, tracking_uri)
            except Exception as err:
                raise SystemExit(
                    f"{model_uri}: cannot be loaded from {display_uri(tracking_uri)} ({err}); on a fresh clone "
                    "pass --tiny or --from-checkpoint"
                ) from err
        load_s = time.perf_counter() - t0
        unverified = [str(w.message) for w in caught if "carries no checksums" in str(w.message)]
        load_note = " (logged before checksums were recorded: loaded with that warning)" if unverified else ""
        spec = model.unwrap_python_model().spec
        if args.input == "clips":
            model_input = clip_input(spec)
            input_what = (
                f"one preprocessed clip, frames [1, {spec.face_frames}, 3, {spec.face_size}, {spec.face_size}] and roi "
                f"[1, {spec.roi_frames}, 3, {spec.roi_size}, {spec.roi_size}] float32 (seeded, fixed)"
            )
        else:
            model_input, video_what = video_input(spec, scratch, args.video, args.video_seconds)
            input_what = f'a one-row table {{"video": [...]}}: {video_what}'
        print(f"{model_uri}: {args.calls} calls with {args.input}", file=sys.stderr)
        result = run(model, model_input, args.calls, args.warmup, args.sample_every)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    argv = " ".join(sys.argv[1:])
    meta = {
        "command": f".venv/bin/python benchmarks/bench_pyfunc_load.py{' ' + argv if argv else ''}",
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "load_before": load_before,
        "load_after": _load_average(),
        "wall_s": time.perf_counter() - started,
        "model_uri": model_uri if not (args.tiny or args.from_checkpoint) else model_uri + " (temporary store)",
        "model_what": model_what,
        "load_s": load_s,
        "load_note": load_note,
        "input_what": input_what,
    }
    body = section(args, meta, result)
    if args.no_write:
        print(body)
    else:
        write_results(args.input, body, machine_line())
        print(f"wrote {OUT.relative_to(ROOT)}")
    print(body.splitlines()[-1], file=sys.stderr)


if __name__ == "__main__":
    main()

"""Sharded clips (`stress_lightning.data.shards`, litdata) vs the local preprocessing cache, on a synthetic corpus of
at least 50,000 training clips: building costs, read throughput, memory per DataLoader worker, litdata's disk cache.

Run from the repository root (about 20-30 min on 2 shared cores at the defaults):
    nice -n 10 .venv/bin/python benchmarks/bench_shards.py [--subjects 20] [--duration-s 120] [--stride-s 0.08]
    [--size 96] [--workdir /tmp] [--keep] [--max-batches 0] [--out benchmarks/results/shards.md]

Scale: the synthetic corpus (`corpus_options.generator`: `--subjects`, `--duration-s`, `--size` px square source
frames) with the main job's clip geometry (conf/data/synthetic.yaml: 25 fps, 8 s ROI windows of 8x8, 8 face crops
of 64x64 over 1.4 s) and a training stride of `--stride-s` instead of the main job's 1 s. Rendering enough footage
for 50,000 clips at a 1 s stride would take hours here; with a short stride neighbouring clips overlap, so the
local cache (one face crop and one ROI grid per frame, shared by every clip that covers the frame) stays small
while the shards materialise every clip's 8 crops and 200 ROI grids one by one.

1. Building (in this process, timed): corpus generation (`ClipDataModule.all_items()`, which renders the corpus
   through its reader, 2 processes), the local cache (`prepare_data()`, 2 processes), `setup("fit")`, and
   `write_shards(..., splits=("train",))` with 1 and with 2 workers (the 1-worker set is measured, then deleted).
2. Reading (each setting in a fresh subprocess, so every process's memory is the reader's own): a full epoch (or
   `--max-batches`) of the training split, batch size 16, no model, torch intra-op threads 1: the local cache
   (`ClipDataModule.train_dataloader()`: ClipDataset over the memory-mapped cache, shuffled) and the shards
   (`ShardedClipDataset(shuffle=True)` + `shard_loader`) with its own settings and with litdata's per-item
   decoding (`batch_decode=0`), each with num_workers 0 and 2.
3. Memory: /proc/<pid>/smaps_rollup of the reading process and every descendant (the DataLoader workers), sampled
   every 0.25 s while iterating; peak RSS, PSS and USS (private clean + dirty) per process.
4. litdata's disk cache: sizes of the shard folder, litdata's default cache folder (~/.lightning/chunks) and
   $LITDATA_CACHE_DIR before and after each sharded read.

Refuses to start when the work folder's disk cannot hold the corpus, the cache and one shard set. Writes `--out`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "shards.md"
COMMAND = "nice -n 10 .venv/bin/python benchmarks/bench_shards.py"
MACHINE = "2 x86_64 CPU cores, 24 GiB, no GPU"
LITDATA_DEFAULT_CACHE = Path.home() / ".lightning" / "chunks"

# The main job's clip geometry (conf/data/synthetic.yaml).
FPS = 25.0
CLIP_SECONDS = 8.0
FACE_FRAMES = 8
FACE_SPAN_S = 1.4
FACE_SIZE = 64
ROI_SIZE = 8
BATCH_SIZE = 16
SAMPLE_INTERVAL_S = 0.25
MIN_TRAIN_CLIPS = 50_000


# -- sizes and the machine ----------------------------------------------------------------------------------------
def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def _gb(n_bytes: float) -> float:
    return n_bytes / 1e9


def _mib(n_bytes: float) -> float:
    return n_bytes / 1024**2


def folder_bytes(path: Path) -> tuple[int, int]:
    """(apparent bytes, files) under a folder; (0, 0) when it does not exist."""
    total = files = 0
    if not path.exists():
        return 0, 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
                files += 1
            except OSError:
                pass
    return total, files


def planned_sizes(args: argparse.Namespace) -> dict[str, float]:
    """Sessions, frames, training clips and bytes the run will produce, from the settings alone (before any work).

    Splits follow the generator (`synthetic._assign_splits`: 20 % val, 20 % test, at least 1 each); clips follow
    `clips.sample_clips` (a start every round(stride * fps) frames while a whole ROI window fits)."""
    n = args.subjects
    n_val = max(1, int(round(0.2 * n)))
    n_test = max(1, int(round(0.2 * n)))
    train_subjects = n - n_val - n_test
    frames = int(round(args.duration_s * FPS))
    roi_frames = round(CLIP_SECONDS * FPS)
    stride = max(1, round(args.stride_s * FPS))
    per_session = max(0, (frames - roi_frames) // stride + 1)
    train_clips = 3 * train_subjects * per_session  # one session per stress level
    all_frames = 3 * n * frames
    face_bytes = FACE_FRAMES * FACE_SIZE * FACE_SIZE * 3  # uint8
    roi_bytes = roi_frames * 3 * ROI_SIZE * ROI_SIZE * 4  # float32
    return {
        "sessions": 3 * n,
        "train_sessions": 3 * train_subjects,
        "frames_per_session": frames,
        "all_frames": all_frames,
        "stride_frames": stride,
        "train_clips": train_clips,
        # Upper bounds: FFV1 is lossless but compresses; the cache adds a bool per frame and small JSON files.
        "corpus_bytes": all_frames * args.size * args.size * 3,
        "cache_bytes": all_frames * (FACE_SIZE * FACE_SIZE * 3 + 3 * ROI_SIZE * ROI_SIZE * 4 + 1),
        "shard_bytes": train_clips * (face_bytes + roi_bytes + 512),
        "sample_bytes": face_bytes + roi_bytes,
    }


def check_disk(workdir: Path, plan: dict[str, float]) -> None:
    need = (plan["corpus_bytes"] + plan["cache_bytes"] + plan["shard_bytes"]) * 1.1 + 2e9
    free = shutil.disk_usage(workdir).free
    if free < need:
        raise SystemExit(
            f"--workdir {workdir}: {_gb(free):.1f} GB free, but this run needs about {_gb(need):.1f} GB (corpus "
            f"<= {_gb(plan['corpus_bytes']):.1f} GB, local cache {_gb(plan['cache_bytes']):.1f} GB, one shard set "
            f"{_gb(plan['shard_bytes']):.1f} GB for {plan['train_clips']:,} training clips, 10 % + 2 GB spare); "
            "point --workdir at a larger disk or lower --subjects / --duration-s"
        )


# -- memory of a process tree ---------------------------------------------------------------------------------------
def smaps_rollup(pid: int) -> dict[str, int] | None:
    """RSS, PSS, USS and PSS of anonymous memory, KiB, from /proc/<pid>/smaps_rollup (None if the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[key.strip()] = int(parts[0])
    if "Rss" not in values:
        return None
    return {
        "rss": values["Rss"],
        "pss": values.get("Pss", 0),
        "uss": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0),
        "pss_anon": values.get("Pss_Anon", 0),
    }


def io_bytes(pid: int) -> tuple[int, int] | None:
    """(read_bytes, rchar) of /proc/<pid>/io: bytes the process made the kernel fetch from storage (page-cache
    misses, memory-mapped reads included) and bytes it read through read() calls, cache hits included."""
    try:
        fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    except (OSError, ValueError):
        return None
    return int(fields["read_bytes"]), int(fields["rchar"])


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children listed per thread in /proc/<pid>/task/<tid>/children)."""
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                kids = Path(f"/proc/{parent}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                if kid not in found:
                    found.append(kid)
                    stack.append(kid)
    return found


def _role(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "child"
    if "resource_tracker" in cmdline:
        return "resource tracker"
    if "semaphore_tracker" in cmdline or "forkserver" in cmdline:
        return "multiprocessing helper"
    return "child"


class MemorySampler(threading.Thread):
    """Samples smaps_rollup of this process and its descendants every `interval` s; keeps each process's peaks."""

    def __init__(self, interval: float = SAMPLE_INTERVAL_S) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.root = os.getpid()
        self.stop_event = threading.Event()
        self.peaks: dict[int, dict[str, int]] = {}
        self.roles: dict[int, str] = {}
        self.samples: dict[int, int] = {}
        self.io: dict[int, tuple[int, int]] = {}
        # What this process had read before the sampling began (imports, setup) is left out.
        self.io_start = io_bytes(self.root) or (0, 0)
        self.total_pss_peak = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.interval)
        self.sample()

    def sample(self) -> None:
        total = 0
        for pid in [self.root, *descendants(self.root)]:
            mem = smaps_rollup(pid)
            if mem is None:
                continue
            if pid not in self.roles:
                self.roles[pid] = "main" if pid == self.root else _role(pid)
            peak = self.peaks.setdefault(pid, dict.fromkeys(mem, 0))
            for key, value in mem.items():
                peak[key] = max(peak[key], value)
            self.samples[pid] = self.samples.get(pid, 0) + 1
            total += mem["pss"]
            io = io_bytes(pid)
            if io is not None:
                self.io[pid] = io
        self.total_pss_peak = max(self.total_pss_peak, total)

    def stop(self) -> dict[str, Any]:
        self.stop_event.set()
        self.join()
        procs = []
        workers = 0
        for pid, peak in self.peaks.items():
            role = self.roles[pid]
            if role == "child":
                workers += 1
                role = f"worker {workers}"
            procs.append({"pid": pid, "role": role, "samples": self.samples[pid], **peak})
        return {
            "processes": procs,
            "total_pss_peak_kib": self.total_pss_peak,
            # Last sample of each process (a worker's final reads after the last sample are not counted).
            "read_bytes": sum(v[0] for v in self.io.values()) - self.io_start[0],
            "rchar": sum(v[1] for v in self.io.values()) - self.io_start[1],
        }


# -- the data module ----------------------------------------------------------------------------------------------
def generator_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "num_subjects": args.subjects,
        "duration_s": args.duration_s,
        "fps": FPS,
        "width": args.size,
        "height": args.size,
        "seed": 0,
        "codec": "ffv1",
    }


def make_module(args: argparse.Namespace, workdir: Path, num_workers: int = 0):
    from stress_lightning.data.datamodules import ClipDataModule

    return ClipDataModule(
        corpus="synthetic",
        root=str(workdir / "corpus"),
        corpus_options={"generator": generator_options(args)},
        cache_dir=str(workdir / "cache"),
        fps=FPS,
        clip_seconds=CLIP_SECONDS,
        train_stride_s=args.stride_s,
        eval_stride_s=2.0,
        face_frames=FACE_FRAMES,
        face_span_s=FACE_SPAN_S,
        face_size=FACE_SIZE,
        roi_size=ROI_SIZE,
        batch_size=BATCH_SIZE,
        num_workers=num_workers,
        augment=False,
        progress=False,
        workers=2,
    )


def _timed(fn, *a, **kw) -> tuple[Any, float, dict[str, Any]]:
    """(result, wall s, memory peaks of this process tree) of one call."""
    sampler = MemorySampler(interval=0.5)
    sampler.start()
    t0 = time.perf_counter()
    try:
        result = fn(*a, **kw)
    finally:
        wall = time.perf_counter() - t0
        memory = sampler.stop()
    return result, wall, memory


def build_section(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    dm = make_module(args, workdir)
    steps: dict[str, Any] = {}
    load = {"before": _load()}
    _, steps["generate"], steps["generate_mem"] = _timed(dm.all_items)
    print(f"[build] corpus generated in {steps['generate']:.0f} s", flush=True)
    _, steps["cache"], steps["cache_mem"] = _timed(dm.prepare_data)
    print(f"[build] local cache built in {steps['cache']:.0f} s", flush=True)
    _, steps["setup"], _ = _timed(dm.setup, "fit")
    train = dm.datasets["train"]
    steps["train_clips"] = len(train)
    steps["split_clips"] = {s: d.__len__() for s, d in dm.datasets.items()}
    steps["corpus_size"] = folder_bytes(workdir / "corpus")
    steps["cache_size"] = folder_bytes(workdir / "cache")
    steps["train_items"] = sum(1 for it in dm.items() if it.split == "train")
    print(f"[build] {len(train):,} training clips", flush=True)
    if len(train) < args.min_clips:
        raise SystemExit(
            f"the corpus yields {len(train):,} training clips, fewer than --min-clips {args.min_clips:,}: raise "
            "--subjects or --duration-s, or lower --stride-s"
        )
    if args.skip_shards:
        load["after"] = _load()
        steps["load"] = load
        return steps
    from stress_lightning.data import shards

    writes = []
    for workers in (1, 2):
        out = workdir / f"shards_w{workers}"
        free_before = shutil.disk_usage(workdir).free
        counts, wall, memory = _timed(
            shards.write_shards,
            dm,
            out,
            splits=("train",),
            workers=workers,
            chunk_bytes=args.chunk_bytes,
            progress=False,
        )
        size = folder_bytes(out)
        written = int(counts["train"])
        writes.append(
            {"workers": workers, "wall_s": wall, "samples": written, "size": size, "memory": memory, "dir": out}
        )
        print(
            f"[build] shards with {workers} worker(s): {written:,} samples in {wall:.0f} s, {_gb(size[0]):.2f} GB",
            flush=True,
        )
        if written != len(train):
            raise SystemExit(f"write_shards wrote {written} training samples; the data module serves {len(train)}")
        if workers == 1:
            # One shard set on disk at a time (the disk check counts one).
            shutil.rmtree(out)
        steps.setdefault("disk_free_before_write", free_before)
    steps["writes"] = writes
    steps["manifest"] = shards.read_manifest(str(workdir / "shards_w2"))
    load["after"] = _load()
    steps["load"] = load
    return steps


# -- reading (child processes) ---------------------------------------------------------------------------------------
def _read_child(args: argparse.Namespace, workdir: Path, mode: str, num_workers: int) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(args.torch_threads)
    dm = make_module(args, workdir, num_workers=num_workers)
    check: dict[str, Any] = {}
    t0 = time.perf_counter()
    if mode == "local":
        # The local reader's start-up: the data module samples clips and labels over the cache.
        dm.setup("fit")
        loader = dm.train_dataloader()
        dataset_len = len(dm.datasets["train"])
        setup_s = time.perf_counter() - t0
    else:
        from stress_lightning.data.shards import ShardedClipDataset, shard_loader

        # "shards": litdata's default decoding window (batch_decode="auto"); "shards_bd0": per-item decoding
        # (batch_decode=0, ShardedClipDataset's default since this benchmark found the window 10x slower shuffled).
        extra = {"batch_decode": 0} if mode == "shards_bd0" else {"batch_decode": "auto"}
        dataset = ShardedClipDataset(str(workdir / "shards_w2"), "train", shuffle=True, seed=0, **extra)
        loader = shard_loader(dataset, batch_size=BATCH_SIZE, num_workers=num_workers)
        dataset_len = len(dataset)
        check["batch_decode"] = dataset.batch_decode
        setup_s = time.perf_counter() - t0
        # Only for the content check below (a run on shards does not need the cache); not part of the start-up.
        dm.setup("fit")
    sampler = MemorySampler()
    sampler.start()
    stamps: list[float] = []
    batches = samples = 0
    seen: set[int] = set()
    duplicates = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for batch in loader:
        stamps.append(time.perf_counter())
        n = int(batch["frames"].shape[0])
        batches += 1
        samples += n
        for k in batch["clip_index"].tolist():
            if k in seen:
                duplicates += 1
            seen.add(k)
        if batches == 1 and mode != "local":
            # The shards must hold what ClipDataset serves: compare the first batch with the cache's samples.
            ref = dm.datasets["train"]
            diffs = []
            for j, k in enumerate(batch["clip_index"].tolist()[:4]):
                local = ref[int(k)]
                diffs.append(
                    max(
                        float((batch["frames"][j] - local["frames"]).abs().max()),
                        float((batch["roi"][j] - local["roi"]).abs().max()),
                    )
                )
            check.update(compared=len(diffs), max_abs_diff=max(diffs))
        if args.max_batches and batches >= args.max_batches:
            break
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    memory = sampler.stop()
    intervals = np.diff([t0, *stamps])
    result = {
        "mode": mode,
        "num_workers": num_workers,
        "setup_s": setup_s,
        "dataset_len": dataset_len,
        "batches": batches,
        "samples": samples,
        "distinct": len(seen),
        "duplicates": duplicates,
        "wall_s": wall,
        "cpu_s": cpu,
        "first_batch_s": float(intervals[0]) if len(intervals) else float("nan"),
        "rest_rate": (samples - int(batch["frames"].shape[0])) / (stamps[-1] - stamps[0]) if batches > 1 else 0.0,
        "median_interval_ms": 1000 * float(np.median(intervals[1:])) if batches > 1 else float("nan"),
        "memory": memory,
        "check": check,
    }
    print("RESULT " + json.dumps(result), flush=True)


def run_read(args: argparse.Namespace, workdir: Path, mode: str, num_workers: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *_scale_args(args), "--workdir-exact", str(workdir)]
    cmd += ["--child-read", mode, str(num_workers)]
    log = workdir / f"read_{mode}_{num_workers}.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.torch_threads)}
    watched = [workdir / "shards_w2", LITDATA_DEFAULT_CACHE]
    if os.environ.get("LITDATA_CACHE_DIR"):
        watched.append(Path(os.environ["LITDATA_CACHE_DIR"]))
    before = {str(p): folder_bytes(p) for p in watched}
    load_before = _load()
    t0 = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env).returncode
    text = log.read_text()
    if code != 0:
        raise SystemExit(f"read {mode} num_workers={num_workers} failed (exit {code}):\n{text[-4000:]}")
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"read {mode} num_workers={num_workers} printed no result:\n{text[-4000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    result["process_s"] = time.perf_counter() - t0
    result["load"] = (load_before, _load())
    result["watched"] = {str(p): (before[str(p)], folder_bytes(p)) for p in watched}
    rate = result["samples"] / result["wall_s"]
    print(f"[read] {mode} num_workers={num_workers}: {result['samples']:,} samples, {rate:.0f} samples/s", flush=True)
    return result


def _scale_args(args: argparse.Namespace) -> list[str]:
    return [
        "--subjects",
        str(args.subjects),
        "--duration-s",
        str(args.duration_s),
        "--stride-s",
        str(args.stride_s),
        "--size",
        str(args.size),
        "--max-batches",
        str(args.max_batches),
        "--torch-threads",
        str(args.torch_threads),
        "--min-clips",
        str(args.min_clips),
    ]


# -- the report -----------------------------------------------------------------------------------------------------
def _versions() -> str:
    from importlib.metadata import version

    names = ("torch", "lightning", "litdata", "numpy", "av")
    parts = []
    for name in names:
        try:
            parts.append(f"{name} {version(name)}")
        except Exception:  # noqa: BLE001
            parts.append(f"{name} not installed")
    return ", ".join(parts)


def _label(r: dict[str, Any]) -> str:
    if r["mode"] == "local":
        return "local cache"
    return f"shards, batch_decode={r['check']['batch_decode']!r}"


def _mem_rows(label: str, memory: dict[str, Any]) -> list[str]:
    rows = []
    for proc in memory["processes"]:
        rows.append(
            f"| {label} | {proc['role']} | {proc['rss'] / 1024:.0f} | {proc['pss'] / 1024:.0f} | "
            f"{proc['uss'] / 1024:.0f} | {proc['pss_anon'] / 1024:.0f} | {proc['samples']} |"
        )
    return rows


def _peak(memory: dict[str, Any], role: str, key: str) -> float:
    values = [p[key] for p in memory["processes"] if p["role"].startswith(role)]
    return max(values) / 1024 if values else float("nan")


def report(args: argparse.Namespace, plan: dict, build: dict, reads: list[dict], meta: dict) -> str:
    gen = ", ".join(f"{k}={v}" for k, v in generator_options(args).items())
    train = build["train_clips"]
    corpus_b, corpus_n = build["corpus_size"]
    cache_b, cache_n = build["cache_size"]
    writes = build.get("writes", [])
    # Footage for the same training clips at a 1 s stride (25 frames a clip), all splits, and the time it takes.
    need_frames = train * 25 * plan["sessions"] / plan["train_sessions"]
    frame_rate = plan["all_frames"] / (build["generate"] + build["cache"])
    scope = "a full epoch" if not args.max_batches else f"the first {args.max_batches} batches"
    lines = [
        "## Sharded clips (litdata) vs the local cache: building, read throughput, memory per worker",
        "",
        f"Command: `{meta['command']}` (from the repository root). Machine: {MACHINE} ({platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}). Date: {meta['started']:%Y-%m-%d %H:%M}. "
        f"Versions: {_versions()}. Load average (1/5/15 min) at the start: {meta['load_start']}; at the end: "
        f"{meta['load_end']} (other jobs share the 2 cores; every row below is a wall-clock figure under that "
        f"load). Work folder: a temporary folder under {meta['workdir_parent']} ({'kept' if args.keep else 'removed'} "
        f"at the end). The benchmark took {meta['took_s'] / 60:.1f} min.",
        "",
        "### Scale",
        "",
        f'Synthetic corpus through `ClipDataModule(corpus="synthetic", corpus_options={{generator: {{{gen}}}}})`: '
        f"{plan['sessions']} sessions (one per subject and stress level) of {args.duration_s:g} s, "
        f"{plan['all_frames']:,} frames of {args.size}x{args.size}; {build['train_items']} sessions in train. Clip "
        f"geometry of the main job (conf/data/synthetic.yaml): {FPS:g} fps, {CLIP_SECONDS:g} s ROI windows "
        f"({round(CLIP_SECONDS * FPS)} grids of {ROI_SIZE}x{ROI_SIZE}, float32), "
        f"{FACE_FRAMES} face crops of {FACE_SIZE}x{FACE_SIZE} (uint8 in the cache) over {FACE_SPAN_S:g} s, "
        f"batch size {BATCH_SIZE}, augment off. **Training stride {args.stride_s:g} s "
        f"({plan['stride_frames']} frame(s)) instead of the main job's 1 s**, which gives **{train:,} training "
        "clips** (splits served: "
        + ", ".join(f"{s} {n:,}" for s, n in build["split_clips"].items())
        + "; only the train split is sharded and read here). With this stride a clip starts every "
        f"{plan['stride_frames']} frame(s), so neighbouring clips share almost all their frames: the local cache "
        "stores each frame's face crop and ROI grid once and a clip is a view into it, whereas the shards hold "
        f"every clip's {FACE_FRAMES} crops and {round(CLIP_SECONDS * FPS)} ROI grids on its own "
        f"({_mib(plan['sample_bytes']):.2f} MiB of arrays per clip). The same {train:,} training clips at the "
        f"main job's 1 s stride would need about {need_frames / 1e6:.1f} M frames of footage (all splits), which "
        f"at this run's measured generation + cache rate ({frame_rate:.0f} frames/s) is about "
        f"{need_frames / frame_rate / 3600:.1f} h on these cores; the shards' size per clip does not depend on "
        "the stride, the cache's does "
        "(see the disk table).",
        "",
        "### 1. Building",
        "",
        "Timed in one process; the corpus generation, the cache build and the shard writes run their own worker "
        "processes (peak PSS summed over the process tree, sampled every 0.5 s). The synthetic corpus carries "
        "its face boxes, so the cache build is decoding (FFV1), cropping and ROI averaging without face tracking. "
        "The 1-worker shard set is measured, then deleted; the 2-worker set is the one read below.",
        "",
        "| step | wall (s) | samples / s | output | size on disk | files | peak PSS, process tree (MiB) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| corpus generation (`all_items()`: render + read, 2 processes) | {build['generate']:.0f} | "
        f"{plan['all_frames'] / build['generate']:.0f} frames/s | corpus folder (FFV1 MKV, ECG CSV) | "
        f"{_gb(corpus_b):.2f} GB | {corpus_n} | {build['generate_mem']['total_pss_peak_kib'] / 1024:.0f} |",
        f"| local cache (`prepare_data()`, 2 processes, all splits) | {build['cache']:.0f} | "
        f"{plan['all_frames'] / build['cache']:.0f} frames/s | cache folder (faces, ROI, valid .npy) | "
        f"{_gb(cache_b):.2f} GB | {cache_n} | {build['cache_mem']['total_pss_peak_kib'] / 1024:.0f} |",
        f'| `setup("fit")` (clip sampling over the cache) | {build["setup"]:.1f} | - | - | - | - | - |',
    ]
    for w in writes:
        lines.append(
            f'| `write_shards(splits=("train",), workers={w["workers"]})` | {w["wall_s"]:.0f} | '
            f"**{w['samples'] / w['wall_s']:.0f}** | shard folder, {w['samples']:,} training clips | "
            f"{_gb(w['size'][0]):.2f} GB | {w['size'][1]} | {w['memory']['total_pss_peak_kib'] / 1024:.0f} |"
        )
    if writes:
        w2 = writes[-1]
        lines += [
            "",
            f"Disk per training clip: shards {w2['size'][0] / w2['samples']:,.0f} B (arrays "
            f"{plan['sample_bytes']:,} B, the rest labels, ids and litdata's framing); the local cache "
            f"{cache_b / plan['all_frames']:,.0f} B per frame of footage, i.e. "
            f"{cache_b / plan['all_frames'] * plan['stride_frames'] / 1024:.0f} KiB per clip at this stride "
            f"and {cache_b / plan['all_frames'] * 25 / 1024:.0f} KiB per clip at the main job's 1 s stride "
            f"(25 frames a clip). So at 1 s the shard set is about "
            f"{(w2['size'][0] / w2['samples']) / (cache_b / plan['all_frames'] * 25):.1f}x the cache, here "
            f"{w2['size'][0] / cache_b:.0f}x. Shard chunk size {args.chunk_bytes}, no compression.",
        ]
    lines += ["", f"### 2. Read throughput ({scope}, batch size {BATCH_SIZE}, no model)", ""]
    lines += [
        "Each setting in a fresh process (`--child-read`), torch intra-op threads "
        f"{args.torch_threads}, shuffled training loader. Local: `ClipDataModule.train_dataloader()` (ClipDataset "
        "over the memory-mapped cache, `shuffle=True`, `drop_last=True`, persistent workers). Shards: "
        '`ShardedClipDataset(url, "train", shuffle=True, seed=0)` + `shard_loader(dataset, batch_size=16, '
        "num_workers=N)` (litdata's StreamingDataLoader). samples/s = samples / wall time of the pass "
        "(first batch included); 'after the first batch' leaves out the workers' start-up. start-up = what the "
        "reader does before its first batch can be asked for: for the local cache the data module's "
        '`setup("fit")` (clip sampling and per-clip labels over the cache), for the shards opening the '
        "dataset (manifest and litdata's index; the data module set up for the content check is not counted). "
        "Read from storage / through read(): `read_bytes` / `rchar` of /proc/<pid>/io summed over the process "
        "tree during the pass: the first counts page-cache misses only (memory-mapped reads included), the "
        "second every byte read() returned, page-cache hits included (memory-mapped reads not; litdata maps its "
        "chunks too). The page cache was warm from the build: reads from storage near 0 mean the pass read RAM, "
        "not disk.",
        "",
        "| reader | num_workers | batches | samples (distinct) | wall (s) | **samples / s** | after the first batch "
        "(samples / s) | first batch (s) | median batch interval (ms) | main CPU (s) | start-up (s) | read from "
        "storage / through read() (GB) | load before -> after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in reads:
        lines.append(
            f"| {_label(r)} | {r['num_workers']} | {r['batches']:,} | {r['samples']:,} ({r['distinct']:,}) | "
            f"{r['wall_s']:.1f} | **{r['samples'] / r['wall_s']:.0f}** | {r['rest_rate']:.0f} | "
            f"{r['first_batch_s']:.2f} | {r['median_interval_ms']:.1f} | {r['cpu_s']:.1f} | {r['setup_s']:.1f} | "
            f"{_gb(r['memory']['read_bytes']):.2f} / {_gb(r['memory']['rchar']):.2f} | "
            f"{r['load'][0]} -> {r['load'][1]} |"
        )
    checks = [r["check"] for r in reads if r["check"]]
    if checks:
        lines += [
            "",
            "Content check: in the first batch of each sharded pass, "
            f"{checks[0]['compared']} samples were compared with `ClipDataset[clip_index]` over the cache: largest "
            f"absolute difference of frames and ROI {max(c['max_abs_diff'] for c in checks):.3g}.",
        ]
    lines += [
        "",
        "### 3. Memory per process while reading",
        "",
        "Peaks over the pass of /proc/<pid>/smaps_rollup, sampled every "
        f"{SAMPLE_INTERVAL_S:g} s, MiB. RSS counts every resident page the process maps (shared libraries, "
        "torch, and the pages of memory-mapped cache files it touched); PSS divides each shared page among the "
        "processes that map it; USS is the process's private pages only (what ending it would free); "
        "PSS anon leaves out file-backed pages (code and memory-mapped data), i.e. heap and tensors. Workers "
        "are forked from the main process, so they start sharing its pages.",
        "",
        "| reader, num_workers | process | peak RSS | peak PSS | peak USS | peak PSS anon | samples |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in reads:
        lines += _mem_rows(f"{_label(r)}, {r['num_workers']}", r["memory"])
    totals = "; ".join(
        f"{_label(r)}, {r['num_workers']}: {r['memory']['total_pss_peak_kib'] / 1024:.0f}" for r in reads
    )
    lines += ["", f"Peak PSS summed over the reading process tree (sampled at once), MiB: {totals}."]
    shard_reads = [r for r in reads if r["mode"] != "local"]
    if shard_reads:
        lines += [
            "",
            "### 4. litdata's disk cache when reading a local folder",
            "",
            "| pass | folder | before | after |",
            "| --- | --- | --- | --- |",
        ]
        for r in shard_reads:
            for folder, (before, after) in r["watched"].items():
                lines.append(
                    f"| {_label(r)}, {r['num_workers']} | {folder} | {_mib(before[0]):.1f} MiB, {before[1]} files | "
                    f"{_mib(after[0]):.1f} MiB, {after[1]} files |"
                )
        lines += [
            "",
            meta["litdata_note"],
        ]
    lines += ["", "### Finding", "", meta["finding"], ""]
    return "\n".join(lines)


def finding(build: dict, reads: list[dict]) -> tuple[str, str]:
    by = {(r["mode"], r["num_workers"]): r for r in reads}

    def rate(mode: str, n: int) -> float:
        r = by.get((mode, n))
        return r["samples"] / r["wall_s"] if r else float("nan")

    grew = any(after[0] > before[0] for r in reads for before, after in r.get("watched", {}).values())
    litdata_note = (
        "Reading a local shard folder, litdata copied nothing: no folder above grew"
        if not grew
        else "Some folder above grew while reading (see the table): litdata wrote to it"
    ) + (
        ". In litdata 0.2.76 `StreamingDataset._create_cache` reads a plain local path in place; it copies chunks "
        "into a cache folder (`cache_dir`, default ~/.lightning/chunks or $LITDATA_CACHE_DIR) only for remote URLs "
        "(s3://, gs://, ...), for Lightning's /teamspace mounts, and decompressed copies of compressed sets on "
        "network filestores; that download cache is bounded by `max_cache_size` (default 75 % of the free disk) "
        "and evicts chunks already read. So on local disk the shards cost their own size once, and from object "
        "storage each node also needs a local cache of at least num_workers x max_pre_download chunks."
    )
    if not reads:
        return "(reads skipped)", litdata_note
    local0, local2 = rate("local", 0), rate("local", 2)
    sh0, sh2, bd0, bd2 = rate("shards", 0), rate("shards", 2), rate("shards_bd0", 0), rate("shards_bd0", 2)
    best_local = max(local0, local2)
    best_shards = max(sh0, sh2, bd0, bd2)
    w = build.get("writes", [])
    writes = ", ".join(
        f"{x['samples'] / x['wall_s']:.0f} samples/s with {x['workers']} worker(s) ({x['wall_s'] / 60:.1f} min)"
        for x in w
    )
    default_label = _label(by["shards", 0]).split(", ")[1] if ("shards", 0) in by else "-"
    slower = [_label(by[m, 0]) for m in ("local", "shards", "shards_bd0") if rate(m, 2) < rate(m, 0)]
    workers_note = (
        "With 2 loader workers every reader here is slower than in the main process"
        if len(slower) == 3
        else "With 2 loader workers these readers are slower than in the main process: "
        + ("; ".join(slower) if slower else "none")
    )
    rates = {f"{_label(r)}, num_workers {r['num_workers']}": r["samples"] / r["wall_s"] for r in reads}
    below_cpu = [k for k, v in rates.items() if v < 47]
    above_gpu = [k for k, v in rates.items() if v >= 1000]

    def peak(r: dict[str, Any], role: str, key: str) -> float:
        values = [p[key] for p in r["memory"]["processes"] if p["role"].startswith(role)]
        return max(values, default=0) / 1024

    memory = "; ".join(
        f"{_label(r)}: main {peak(r, 'main', 'pss_anon'):.0f} (USS {peak(r, 'main', 'uss'):.0f}), each worker up "
        f"to {peak(r, 'worker', 'pss_anon'):.0f} (USS {peak(r, 'worker', 'uss'):.0f})"
        for r in reads
        if r["num_workers"] == 2
    )
    local0_uss = peak(by["local", 0], "main", "uss") if ("local", 0) in by else float("nan")
    local0_anon = peak(by["local", 0], "main", "pss_anon") if ("local", 0) in by else float("nan")
    storage = ", ".join(
        f"{_label(r)} / {r['num_workers']}: {_gb(r['memory']['read_bytes']):.1f} GB"
        for r in reads
        if r["mode"] != "local"
    )
    set_bytes = build["writes"][-1]["size"][0] if build.get("writes") else 0
    missed = any(r["memory"]["read_bytes"] > 0.05 * set_bytes for r in reads if r["mode"] != "local")
    text = (
        f"**Reading** (samples/s, num_workers 0 / 2): local cache {local0:.0f} / {local2:.0f}; shards with "
        f"litdata's default decoding ({default_label}) {sh0:.0f} / {sh2:.0f}; shards with batch_decode=0 "
        f"{bd0:.0f} / {bd2:.0f}. Best of each: local {best_local:.0f}, shards {best_shards:.0f} "
        f"({best_shards / best_local:.2f}x the local cache). Between the two shard rows only litdata's decoding "
        f'window differs ({bd0 / sh0:.1f}x in the main process): with `batch_decode="auto"` litdata '
        "deserialises a window of neighbouring records of the chunk for each item it serves, and with shuffling "
        "the next item is seldom in that window, so most of the work is thrown away (a cProfile of a "
        "1,600-sample pass over a small set, outside this script: about 90 numpy deserialisations and copies "
        "per sample served); per-item decoding (`batch_decode=0`, `ShardedClipDataset`'s default) "
        f"avoids it. {workers_note} (2 shared cores; each batch of float32 frames, 16 x 8 x 3 x 64 x 64 x 4 B = "
        "6.3 MB plus 1.2 MB of ROI, crosses from the worker through shared memory). Against the main model's "
        "training step on these 2 CPUs (~47 samples/s, benchmarks/results/train_throughput.md) "
        + ("every reader keeps up" if not below_cpu else "these readers fall short: " + "; ".join(below_cpu))
        + "; at the ~1,000 samples/s assumed for one GPU in the README estimate, "
        + ("only these keep up: " + "; ".join(above_gpu) if above_gpu else "none keeps up on its own")
        + f". **Writing** shards: {writes}. **Memory** with 2 workers, peak PSS of anonymous memory (heap and "
        f"tensors), MiB: {memory}. USS also counts the clean pages of memory-mapped files that only that process "
        f"touched: with num_workers 0 the local reader's main process reaches {local0_uss:.0f} MiB USS against "
        f"{local0_anon:.0f} MiB anonymous, the difference being the cache's pages it read, which the kernel can "
        "drop and re-read. **Storage**: the shard passes read from storage (page-cache misses) "
        f"{storage}"
        + (
            f"; the {_gb(set_bytes):.1f} GB set does not stay whole in the page cache beside the other jobs' memory, "
            "and the passes ran in the order of the table, so each one finds part of the set left cached by the "
            "one before. "
            if missed
            else " (the set stayed in the page cache). "
        )
        + "The gap between batch_decode 'auto' and 0 is not the disk: in earlier runs of this script on a "
        "1,809-clip set (0.46 GB, read wholly from the page cache) it was 398 vs 3,067 samples/s in the main "
        "process."
    )
    return text, litdata_note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=20, help="synthetic subjects (3 sessions each)")
    parser.add_argument("--duration-s", type=float, default=120.0, help="length of each session")
    parser.add_argument("--stride-s", type=float, default=0.08, help="training clip stride (main job: 1.0)")
    parser.add_argument("--size", type=int, default=96, help="source frame side in px (main job: 128)")
    parser.add_argument("--min-clips", type=int, default=MIN_TRAIN_CLIPS, help="refuse fewer training clips")
    parser.add_argument("--max-batches", type=int, default=0, help="batches per read pass; 0 = a full epoch")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads while reading")
    parser.add_argument("--chunk-bytes", default="64MB", help="litdata chunk size of the shards")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="parent of the work folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (corpus, cache, shards)")
    parser.add_argument("--skip-shards", action="store_true", help="local cache only (no results file)")
    parser.add_argument("--out", type=Path, default=OUT, help="results file")
    parser.add_argument("--workdir-exact", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-read", nargs=2, metavar=("MODE", "NUM_WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_read:
        _read_child(args, args.workdir_exact, args.child_read[0], int(args.child_read[1]))
        return 0
    for name in ("subjects", "size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be positive, got {getattr(args, name)}")
    if args.stride_s <= 0 or args.duration_s <= CLIP_SECONDS:
        raise SystemExit(f"--stride-s must be > 0 and --duration-s > {CLIP_SECONDS:g} (one clip)")
    plan = planned_sizes(args)
    if plan["train_clips"] < args.min_clips:
        raise SystemExit(
            f"--subjects {args.subjects} --duration-s {args.duration_s:g} --stride-s {args.stride_s:g} give "
            f"{plan['train_clips']:,} training clips, fewer than --min-clips {args.min_clips:,}"
        )
    args.workdir.mkdir(parents=True, exist_ok=True)
    check_disk(args.workdir, plan)
    started = datetime.datetime.now()
    load_start = _load()
    command = COMMAND + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    workdir = Path(tempfile.mkdtemp(prefix="bench_shards_", dir=args.workdir))
    print(
        f"[plan] {plan['train_clips']:,} training clips from {plan['all_frames']:,} frames; work folder {workdir}",
        flush=True,
    )
    reads: list[dict] = []
    try:
        build = build_section(args, workdir)
        for mode in ("local",) if args.skip_shards else ("local", "shards", "shards_bd0"):
            for num_workers in (0, 2):
                reads.append(run_read(args, workdir, mode, num_workers))
    finally:
        if args.keep:
            print(f"[done] work folder kept: {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text_finding, litdata_note = finding(build, reads)
    meta = {
        "command": command,
        "started": started,
        "load_start": load_start,
        "load_end": _load(),
        "took_s": (datetime.datetime.now() - started).total_seconds(),
        "workdir_parent": args.workdir,
        "finding": text_finding,
        "litdata_note": litdata_note,
    }
    text = report(args, plan, build, reads, meta)
    if args.skip_shards:
        print(text)
        print("\n(shards skipped: results file not written)")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

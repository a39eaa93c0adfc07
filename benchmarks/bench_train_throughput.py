"""Training throughput on the synthetic corpus: the data pipeline alone, the training step alone, and both.

Run from the repository root:  .venv/bin/python benchmarks/bench_train_throughput.py [--config conf/synthetic.yaml]
[--data-passes 3] [--workers 0 2] [--steps 50] [--warmup 3] [--torch-threads N]

The data module and the model are built from the config as `stress-lightning fit --config conf/synthetic.yaml` builds
them (the project's LightningCLI with `run=False`, logger and callbacks off), over the corpus and the cache the
config names (data/synthetic, data_cache: generated and filled on first use, reused afterwards; run from the
repository root so the relative paths resolve to them). `prepare_data` and `setup("fit")` run once, untimed.

1. Data pipeline alone: `train_dataloader()` (the training sampler, collate and batch size of the config) iterated
   `--data-passes` times with no model, for each `--workers` value (num_workers; persistent workers, so the first
   pass pays the worker start). Batches/s and samples/s per pass.
2. Training step alone: one training batch taken from that loader and kept in memory; then per step
   `module.training_step(batch)` (forward, losses, the module's metric updates; `self.log` is a no-op without a
   trainer), `backward()` and an AdamW step with the module's lr and weight decay (what `configure_optimizers`
   builds, without the OneCycle schedule, which needs a trainer and costs nothing). Forward, backward and optimizer
   timed apart. The same fixed batch is then run through `Trainer.fit` (a loader that hands out that batch again
   and again), which adds Lightning's loop, logging and scheduler.
3. Both: `Trainer.fit(module, datamodule=dm)` for `--warmup` + `--steps` steps (validation off), for each
   `--workers` value. A callback times each step: the interval between the ends of consecutive steps (everything
   the loop does for one step) and the part inside `training_step` + backward + optimizer.

Every model run starts from a copy of the same freshly built module. Step figures are medians over the timed steps
(after `--warmup`); the mean rate (timed steps / their total wall time) is shown beside them because other jobs
share the cores: a step that waits for a core shows up in the mean and the spread, not in the median.
Writes benchmarks/results/train_throughput.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "train_throughput.md"
COMMAND = ".venv/bin/python benchmarks/bench_train_throughput.py"


_LOAD_SEEN: list[float] = []  # every 1-minute load average read during the run


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    _LOAD_SEEN.append(one)
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def _machine() -> str:
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f", {int(line.split()[1]) / 1024**2:.0f} GiB"
    except OSError:
        pass
    gpu = "CUDA GPU present (not used)" if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()}, {cpus} CPUs ({usable} usable by this process){mem}, {gpu}; {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def _versions() -> str:
    import lightning

    return f"torch {torch.__version__}, lightning {lightning.__version__}"


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    """(10th percentile, median, 90th percentile)."""
    if len(values) < 2:
        v = values[0] if values else float("nan")
        return v, v, v
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    return deciles[0], statistics.median(values), deciles[-1]


# -- building what `fit --config` builds ---------------------------------------------------------------------------
def build_from_config(config: str) -> tuple[Any, Any]:
    """(module, datamodule) instantiated by the project's LightningCLI from `config`, nothing run."""
    from lightning.pytorch import LightningDataModule

    from stress_lightning.cli import StressLightningCLI
    from stress_lightning.models.module import MultiTaskStressModule

    cli = StressLightningCLI(
        MultiTaskStressModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=None,
        args=["--config", config, "--trainer.logger=false", "--trainer.callbacks=null"],
        run=False,
        auto_configure_optimizers=False,
    )
    return cli.model, cli.datamodule


# -- 1. the data pipeline alone ------------------------------------------------------------------------------------
def data_pipeline(dm: Any, workers: int, passes: int) -> dict[str, Any]:
    """Iterate the training loader `passes` times with `num_workers=workers`; per-pass and per-batch timings."""
    dm.num_workers = workers
    loader = dm.train_dataloader()
    rows = []
    gaps: list[float] = []  # seconds between consecutive batches, passes after the first (or the only one)
    load_before = _load()
    for k in range(passes):
        batches = samples = 0
        c0 = time.process_time()
        t0 = last = time.perf_counter()
        first = None
        for batch in loader:
            now = time.perf_counter()
            if first is None:
                first = now - t0
            elif k > 0 or passes == 1:
                gaps.append(now - last)
            last = now
            batches += 1
            samples += int(batch["stress_mask"].shape[0])
        wall = time.perf_counter() - t0
        rows.append(
            {
                "wall_s": wall,
                "cpu_s": time.process_time() - c0,
                "batches": batches,
                "samples": samples,
                "first_s": first or 0.0,
            }
        )
    del loader  # shuts persistent workers down
    steady = rows[1:] or rows
    wall = sum(r["wall_s"] for r in steady)
    median = statistics.median(gaps)
    return {
        "workers": workers,
        "passes": rows,
        "gaps": gaps,
        "median_s": median,
        "batches_per_s": 1 / median,
        "samples_per_s": dm.batch_size / median,
        "mean_batches_per_s": sum(r["batches"] for r in steady) / wall,
        "load_before": load_before,
        "load_after": _load(),
    }


# -- 2. the training step alone, by hand ---------------------------------------------------------------------------
def step_by_hand(template: Any, batch: dict[str, torch.Tensor], warmup: int, steps: int) -> dict[str, Any]:
    module = copy.deepcopy(template).train()
    hp = module.hparams
    optimizer = torch.optim.AdamW(module.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    batch_size = int(batch["stress_mask"].shape[0])
    parts: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": [], "total": [], "cpu": []}
    losses = []
    load_before = _load()
    for i in range(warmup + steps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        loss = module.training_step(batch, i)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        if i >= warmup:
            parts["forward"].append(t1 - t0)
            parts["backward"].append(t2 - t1)
            parts["optimizer"].append(t3 - t2)
            parts["total"].append(t3 - t0)
            parts["cpu"].append(time.process_time() - c0)
        losses.append(float(loss.detach()))
    median = statistics.median(parts["total"])
    return {
        "parts": parts,
        "batch_size": batch_size,
        "median_s": median,
        "steps_per_s": 1 / median,
        "samples_per_s": batch_size / median,
        "mean_steps_per_s": steps / sum(parts["total"]),
        "loss_first_last": (losses[0], losses[-1]),
        "load_before": load_before,
        "load_after": _load(),
    }


# -- 2b and 3. Trainer.fit ------------------------------------------------------------------------------------------
class _StepTimer(Callback):
    """Wall time at the start and end of every training batch, CPU time at the end."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.cpu_ends: list[float] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())


class _SameBatch(torch.utils.data.Dataset):
    """`n` items, each the same collated batch (use with batch_size=None): a loader that costs nothing."""

    def __init__(self, batch: dict[str, torch.Tensor], n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batch


def fit_steps(
    template: Any, warmup: int, steps: int, dm: Any = None, batch: dict[str, torch.Tensor] | None = None
) -> dict[str, Any]:
    """`Trainer.fit` for warmup + steps steps on the data module (or on one fixed batch); per-step timings."""
    module = copy.deepcopy(template)
    timer = _StepTimer()
    total = warmup + steps
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        trainer = Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=total,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
            default_root_dir=tmp,
        )
        load_before = _load()
        t0 = time.perf_counter()
        if batch is not None:
            loader = torch.utils.data.DataLoader(_SameBatch(batch, total), batch_size=None)
            trainer.fit(module, train_dataloaders=loader)
            batch_size = int(batch["stress_mask"].shape[0])
        else:
            trainer.fit(module, datamodule=dm)
            batch_size = dm.batch_size
        fit_s = time.perf_counter() - t0
    if len(timer.ends) != total:
        raise SystemExit(f"Trainer.fit ran {len(timer.ends)} steps, expected {total}")
    # Step i's interval runs from the end of step i-1 to the end of step i: the loop's fetch of the next batch,
    # hooks, training_step, backward and optimizer. Inside = on_train_batch_start -> on_train_batch_end.
    intervals = [timer.ends[i] - timer.ends[i - 1] for i in range(warmup, total)]
    inside = [timer.ends[i] - timer.starts[i] for i in range(warmup, total)]
    outside = [timer.starts[i] - timer.ends[i - 1] for i in range(warmup, total)]
    cpu = [timer.cpu_ends[i] - timer.cpu_ends[i - 1] for i in range(warmup, total)]
    median = statistics.median(intervals)
    return {
        "intervals": intervals,
        "inside": inside,
        "outside": outside,
        "cpu": cpu,
        "median_s": median,
        "steps_per_s": 1 / median,
        "samples_per_s": batch_size / median,
        "mean_steps_per_s": len(intervals) / sum(intervals),
        "first_steps_s": timer.ends[warmup - 1] - t0 if warmup else 0.0,
        "fit_s": fit_s,
        "batch_size": batch_size,
        "load_before": load_before,
        "load_after": _load(),
    }


# -- the report ----------------------------------------------------------------------------------------------------
def _oversubscribed_note() -> list[str]:
    """A warning paragraph when other jobs kept more runnable threads than there are CPUs during the run."""
    cpus = os.cpu_count() or 1
    peak = max(_LOAD_SEEN, default=0.0)
    if peak <= cpus:
        return []
    return [
        f"**The cores were oversubscribed during this run** (1-minute load average up to {peak:.1f} on {cpus} "
        "CPUs, this benchmark included): a step waits for a core (wall time grows) and torch's OpenMP threads spin "
        "while they wait for each other (CPU time grows), so the absolute rates are well below what the machine "
        "does alone. The ratio between the data pipeline and the training step is the finding; rerun when "
        f"`uptime` shows a load below {cpus} for the machine's own figures.",
        "",
    ]


def _ms(values: list[float]) -> str:
    lo, mid, hi = _quantiles(values)
    return f"{1000 * mid:.0f} ({1000 * lo:.0f}-{1000 * hi:.0f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/synthetic.yaml", help="LightningCLI config of the run measured")
    parser.add_argument("--data-passes", type=int, default=3, help="passes over the training loader per setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers values")
    parser.add_argument("--steps", type=int, default=50, help="timed training steps per model run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps before them")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--no-write", action="store_true", help="print the results only")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 2 or args.data_passes < 1:
        parser.error("--warmup must be >= 1, --steps >= 2 and --data-passes >= 1")
    if not (ROOT / args.config).is_file() and not Path(args.config).is_file():
        parser.error(f"{args.config}: no such config file (run from the repository root)")
    if Path.cwd().resolve() != ROOT:
        parser.error(f"run from the repository root ({ROOT}): the config's data paths are relative to it")

    # Lightning's advice (workers, logger, `self.log` outside a trainer) is noise in a timing run.
    warnings.filterwarnings("ignore")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    started = datetime.datetime.now()
    load_start = _load()
    command = COMMAND + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))

    template, dm = build_from_config(args.config)
    t0 = time.perf_counter()
    dm.prepare_data()
    dm.setup("fit")
    prepare_s = time.perf_counter() - t0
    n_train = len(dm.datasets["train"])
    print(f"[setup] prepare_data + setup in {prepare_s:.1f} s; {n_train} training clips", flush=True)

    data = []
    for w in args.workers:
        data.append(data_pipeline(dm, w, args.data_passes))
        print(f"[data] num_workers={w}: {data[-1]['batches_per_s']:.1f} batches/s", flush=True)
    dm.num_workers = 0
    batch = next(iter(dm.train_dataloader()))
    shapes = {k: tuple(v.shape) for k, v in batch.items() if k in ("frames", "roi")}

    by_hand = step_by_hand(template, batch, args.warmup, args.steps)
    print(f"[step] by hand: {by_hand['steps_per_s']:.2f} steps/s", flush=True)
    fixed = fit_steps(template, args.warmup, args.steps, batch=batch)
    print(f"[step] Trainer.fit, fixed batch: {fixed['steps_per_s']:.2f} steps/s", flush=True)
    both = []
    for w in args.workers:
        dm.num_workers = w
        both.append((w, fit_steps(template, args.warmup, args.steps, dm=dm)))
        print(f"[both] Trainer.fit, num_workers={w}: {both[-1][1]['steps_per_s']:.2f} steps/s", flush=True)
    load_end = _load()
    took = (datetime.datetime.now() - started).total_seconds()

    net = template.hparams.net or {}
    bs = by_hand["batch_size"]
    best_data = max(data, key=lambda d: d["batches_per_s"])
    data0 = next((d for d in data if d["workers"] == 0), data[0])
    both0 = next((r for w, r in both if w == 0), both[0][1])
    limit = "the training step" if data0["batches_per_s"] > by_hand["steps_per_s"] else "the data pipeline"
    outside_share = statistics.median(both0["outside"]) / both0["median_s"]
    n_params = sum(p.numel() for p in template.parameters())

    lines = [
        "## Training throughput: data pipeline alone vs training step alone (synthetic corpus)",
        "",
        f"Command: `{command}` (from the repository root). Machine: {_machine()}. torch intra-op threads: "
        f"{torch.get_num_threads()}{' (--torch-threads)' if args.torch_threads else ' (torch default)'}. "
        f"Date: {started:%Y-%m-%d %H:%M}. Versions: {_versions()}. Load average (1/5/15 min) at the start: "
        f"{load_start}; at the end: {load_end} (other jobs share the cores; each section gives its own). "
        f"The benchmark took {took / 60:.1f} min.",
        "",
        f"Setup: `{args.config}` as `fit` builds it: `{type(dm).__name__}` over {dm.root} (cache {dm.cache_dir}), "
        f"{n_train} training clips, batch size {dm.batch_size}, frames {shapes['frames']}, roi {shapes['roi']}; "
        f"model `{type(template).__name__}` with net {net} ({n_params / 1e6:.2f} M parameters). prepare_data + "
        f"setup('fit') over the existing cache: {prepare_s:.1f} s (not in any figure below).",
        "",
        "| measured | batches or steps / s (median) | samples / s (median) | batches or steps / s (mean) |",
        "| --- | --- | --- | --- |",
        *(
            f"| 1. data pipeline alone, num_workers={d['workers']} | {d['batches_per_s']:.1f} | "
            f"{d['samples_per_s']:.0f} | {d['mean_batches_per_s']:.1f} |"
            for d in data
        ),
        f"| 2. training step alone (forward + backward + AdamW, by hand) | {by_hand['steps_per_s']:.2f} | "
        f"{by_hand['samples_per_s']:.1f} | {by_hand['mean_steps_per_s']:.2f} |",
        f"| 2b. training step alone in `Trainer.fit` (fixed batch) | {fixed['steps_per_s']:.2f} | "
        f"{fixed['samples_per_s']:.1f} | {fixed['mean_steps_per_s']:.2f} |",
        *(
            f"| 3. both: `Trainer.fit` on the data module, num_workers={w} | {r['steps_per_s']:.2f} | "
            f"{r['samples_per_s']:.1f} | {r['mean_steps_per_s']:.2f} |"
            for w, r in both
        ),
        "",
        f"**Which one limits: {limit}.** The loader alone delivers {data0['batches_per_s']:.0f} batches/s (median; "
        f"{data0['mean_batches_per_s']:.0f} mean) in the main process ({best_data['batches_per_s']:.0f} at best, "
        f"num_workers={best_data['workers']}), "
        f"{data0['batches_per_s'] / by_hand['steps_per_s']:.0f}x what the training step consumes "
        f"({by_hand['steps_per_s']:.2f} steps/s). In `Trainer.fit` with num_workers=0 the loop spends "
        f"{1000 * statistics.median(both0['outside']):.0f} ms of a {1000 * both0['median_s']:.0f} ms step "
        f"outside the step ({100 * outside_share:.0f} %: the loader, which alone needs "
        f"{1000 / data0['batches_per_s']:.0f} ms a batch); on a fixed batch a step takes "
        f"{1000 * fixed['median_s']:.0f} ms. Figures are medians over the timed steps; the mean rates and spreads "
        "below show what interference from other jobs on the cores did.",
        "",
        *_oversubscribed_note(),
        "### 1. Data pipeline alone",
        "",
        f"`train_dataloader()` iterated {args.data_passes} times per setting, no model (shuffled training sampler, "
        "default collate). The median rate above is 1 / the median time between consecutive batches, the mean rate "
        "batches / wall time, both over the passes after the first (with persistent workers the first pass pays the "
        "worker start-up), or the one pass when only one was run. CPU is the main process's (all its threads; "
        "workers' CPU is not in it).",
        "",
        "| num_workers | pass | wall (s) | CPU (s) | batches | samples | first batch (s) | batches / s | samples / s | "
        "load before -> after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in data:
        for i, r in enumerate(d["passes"]):
            lines.append(
                f"| {d['workers']} | {i + 1} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['batches']} | "
                f"{r['samples']} | {r['first_s']:.3f} | {r['batches'] / r['wall_s']:.1f} | "
                f"{r['samples'] / r['wall_s']:.0f} | {d['load_before'] + ' -> ' + d['load_after'] if i == 0 else ''} |"
            )
    lines += [
        "",
        "Time between consecutive batches, ms, median (10th-90th percentile): "
        + "; ".join(f"num_workers={d['workers']}: {_ms(d['gaps'])}" for d in data)
        + ".",
    ]
    p = by_hand["parts"]
    lines += [
        "",
        "### 2. Training step alone",
        "",
        f"One training batch ({bs} clips) kept in memory. By hand: {args.warmup} untimed steps, then {args.steps} "
        "timed; `training_step` is the module's own (forward, the four losses, metric updates). Milliseconds, median "
        "(10th-90th percentile):",
        "",
        "| part | ms |",
        "| --- | --- |",
        f"| forward (`training_step`: net, losses, metrics) | {_ms(p['forward'])} |",
        f"| backward | {_ms(p['backward'])} |",
        f"| AdamW step | {_ms(p['optimizer'])} |",
        f"| whole step | **{_ms(p['total'])}** |",
        f"| CPU time of the step (all threads) | {_ms(p['cpu'])} |",
        "",
        f"Median rate {by_hand['steps_per_s']:.2f} steps/s = {by_hand['samples_per_s']:.1f} samples/s; mean rate "
        f"{by_hand['mean_steps_per_s']:.2f} steps/s. Loss {by_hand['loss_first_last'][0]:.2f} at the first step, "
        f"{by_hand['loss_first_last'][1]:.2f} at the last (the same batch: it should fall). Load before: "
        f"{by_hand['load_before']}; after: {by_hand['load_after']}.",
        "",
        f"In `Trainer.fit` on the same fixed batch (a loader handing out that batch {args.warmup + args.steps} "
        f"times, validation off): step interval {_ms(fixed['intervals'])} ms, of which inside the step "
        f"{_ms(fixed['inside'])} ms and outside it {_ms(fixed['outside'])} ms; median rate "
        f"{fixed['steps_per_s']:.2f} steps/s, mean {fixed['mean_steps_per_s']:.2f}. Lightning's loop, `self.log` "
        f"and the OneCycle scheduler add {1000 * (fixed['median_s'] - by_hand['median_s']):+.0f} ms a step over the "
        f"hand loop. Load before: {fixed['load_before']}; after: {fixed['load_after']}.",
        "",
        "### 3. Both: `Trainer.fit` on the data module",
        "",
        f"`Trainer.fit(module, datamodule=dm)`, {args.warmup} untimed + {args.steps} timed steps, validation off, no "
        "logger or checkpoints. Interval = end of one step to the end of the next (fetching the next batch, hooks, "
        "step); outside = the part of it before `on_train_batch_start` (mostly the loader). Milliseconds, median "
        "(10th-90th percentile):",
        "",
        "| num_workers | step interval | inside the step | outside (data) | CPU per interval (main process) | "
        "steps / s (median) | steps / s (mean) | samples / s | start + warm-up steps (s) | load before -> after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for w, r in [("fixed batch", fixed), *both]:
        lines.append(
            f"| {w} | {_ms(r['intervals'])} | {_ms(r['inside'])} | {_ms(r['outside'])} | {_ms(r['cpu'])} | "
            f"{r['steps_per_s']:.2f} | {r['mean_steps_per_s']:.2f} | {r['samples_per_s']:.1f} | "
            f"{r['first_steps_s']:.1f} | {r['load_before']} -> {r['load_after']} |"
        )
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(text)
        print(f"\nwritten to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

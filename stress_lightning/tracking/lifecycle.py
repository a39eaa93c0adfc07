"""A fit that stops for any reason loses nothing and leaves an honest MLflow run.

- `FaultTolerance` (a callback, in every conf/callbacks list): checkpoints written atomically (`AtomicCheckpointIO`),
  a resumable `last.ckpt` every few minutes or steps between the epoch-end ones (a `kill -9` loses at most that
  much), the random number generators' states in every checkpoint (a resumed fit draws what the uninterrupted one
  would have), output folders checked before any work, SIGINT/SIGTERM turned into a stop at the end of the current
  batch with a checkpoint and the run ended KILLED, and runs left RUNNING by processes that died reaped as KILLED.
- `stop_exit_status()`: the exit status the CLI ends with after a stop by signal (128 + the signal's number).
- `reap_stale_runs()`: the same reaping for the `stress-lightning runs reap` command.

A run's process is known by the tags `stress_lightning.host`, `stress_lightning.pid` and
`stress_lightning.process_start` (the kernel's start time of the process, so a reused pid is not taken for it).
A RUNNING run whose process is gone on this host is stale. A run from another host is never closed on a guess.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from stress_lightning.storage import OutputFolderError, check_output_folder, describe_write_error, write_error_of

TAG_HOST = "stress_lightning.host"
TAG_PID = "stress_lightning.pid"
TAG_START = "stress_lightning.process_start"
TAG_END_REASON = "stress_lightning.end_reason"
RNG_KEY = "stress_lightning.rng"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file, synced and renamed over the old one.

    Lightning writes in place: a process killed while it rewrites `last.ckpt` leaves half a file and the previous
    checkpoint is gone too. A failed write (disk full, read-only) keeps the previous file and raises
    OutputFolderError naming the checkpoint.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        target = Path(path)
        if "://" in str(path):  # a remote file system (fsspec): no rename there, Lightning's own write
            return super().save_checkpoint(checkpoint, path, storage_options)
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Through a Python file: a failed write then surfaces as the OSError behind torch's "unexpected pos"
            # RuntimeError (its own file writer reports a full disk as "basic_ios::clear: iostream error").
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except (OSError, RuntimeError) as err:
            tmp.unlink(missing_ok=True)
            cause = write_error_of(err)
            if cause is None:
                raise
            kept = " (the previous checkpoint there is kept)" if target.exists() else ""
            problem = f"cannot write the checkpoint: {describe_write_error(cause)}{kept}"
            raise OutputFolderError(target, problem) from None
        return None


# -- which process owns a run --------------------------------------------------------------------------------------
def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` with the boot it belongs to (Linux), or None where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields after it start past the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return f"{boot}:{fields[19]}"


def process_tags(pid: int | None = None) -> dict[str, str]:
    """The tags that name this process (or `pid`) on a run."""
    pid = os.getpid() if pid is None else pid
    tags = {TAG_HOST: socket.gethostname(), TAG_PID: str(pid)}
    start = _process_start(pid)
    if start is not None:
        tags[TAG_START] = start
    return tags


def run_process_state(tags: dict[str, str]) -> tuple[bool | None, str]:
    """(alive, description) of the process a run's tags name: None when it cannot be told (no tags, other host)."""
    host, pid_text = tags.get(TAG_HOST), tags.get(TAG_PID)
    if not host or not pid_text or not pid_text.isdigit():
        return None, "the run does not say which process wrote it"
    pid = int(pid_text)
    where = f"process {pid} on {host}"
    if host != socket.gethostname():
        return None, f"{where} (another host: not checked)"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, f"{where} is gone"
    except PermissionError:
        pass  # it exists, owned by someone else
    recorded = tags.get(TAG_START)
    if recorded and _process_start(pid) not in (None, recorded):
        return False, f"{where} is gone (the pid now belongs to another process)"
    return True, f"{where} is running"


@dataclass(frozen=True)
class StaleRun:
    run_id: str
    experiment_id: str
    run_name: str
    reason: str


def find_stale_runs(client: Any, experiment_ids: list[str], exclude: set[str] | None = None) -> list[StaleRun]:
    """RUNNING runs of these experiments whose process is known to be gone (on this host)."""
    from mlflow.entities import ViewType

    stale = []
    exclude = exclude or set()
    page_token = None
    while True:
        runs = client.search_runs(
            experiment_ids,
            filter_string="attributes.status = 'RUNNING'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=page_token,
        )
        for run in runs:
            if run.info.run_id in exclude:
                continue
            alive, description = run_process_state(run.data.tags)
            if alive is False:
                stale.append(StaleRun(run.info.run_id, run.info.experiment_id, run.info.run_name or "", description))
        page_token = runs.token
        if not page_token:
            return stale


def close_run(client: Any, run_id: str, reason: str, status: str = "KILLED") -> None:
    """End a run with `status`, saying why in the `stress_lightning.end_reason` tag. The end time is the run's
    last activity (its newest metric), not the moment it was found."""
    run = client.get_run(run_id)
    # RunData keeps the Metric entities (with their timestamps) beside the plain values of `metrics`.
    times = [m.timestamp for m in getattr(run.data, "_metric_objs", None) or [] if getattr(m, "timestamp", None)]
    client.set_tag(run_id, TAG_END_REASON, reason)
    client.set_terminated(run_id, status, end_time=max(times) if times else None)


def reap_stale_runs(client: Any, experiment_ids: list[str], exclude: set[str] | None = None) -> list[StaleRun]:
    """Close (KILLED) every stale run of these experiments; returns them."""
    stale = find_stale_runs(client, experiment_ids, exclude)
    for run in stale:
        close_run(client, run.run_id, f"{run.reason}: the run was left RUNNING; closed by a later process")
    return stale


# -- stopping on a signal ----------------------------------------------------------------------------------------
_stop_signal: int | None = None


def stop_signal() -> int | None:
    """The signal (SIGINT/SIGTERM) that stopped the last fit of this process, if any."""
    return _stop_signal


def stop_exit_status() -> int | None:
    """128 + the number of the signal that stopped the fit (130 SIGINT, 143 SIGTERM), the shells' convention."""
    return None if _stop_signal is None else 128 + int(_stop_signal)


def _record_signal(signum: int) -> None:
    global _stop_signal
    _stop_signal = signum


def ignore_stop_signals_in_worker(worker_id: int) -> None:
    """DataLoader worker init: the main process coordinates a stop. A worker that died of the terminal's Ctrl+C
    (sent to the whole process group) would turn the clean stop into "worker exited unexpectedly"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.environ.get("PL_SEED_WORKERS") == "1":
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)


# -- random number generators in checkpoints ---------------------------------------------------------------------
def rng_states() -> dict[str, Any]:
    """Every generator a training step draws from, as plain data (tensors, ints, tuples) that
    `torch.load(weights_only=True)` reads back."""
    # The legacy global generator is the one albumentations and older code draw from.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos)},
        "numpy_gauss": (int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    python = states["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy = states["numpy"]
    has_gauss, gauss = states["numpy_gauss"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["pos"], has_gauss, gauss))  # noqa: NPY002
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class FaultTolerance(Callback):
    """What a fit needs to survive being stopped (see the module's docstring).

    Args:
        every_n_minutes: write the resumable `last.ckpt` at the first batch end after this much training time
            (None: never on time).
        every_n_train_steps: write it every this many optimizer steps (None: never on steps).
        min_free_mb: the free space the checkpoint folder must have when the fit starts.
        reap_stale_runs: close (KILLED) the RUNNING runs of this experiment whose process is gone, at fit start.
        handle_signals: turn SIGINT/SIGTERM into a stop at the end of the batch (a second SIGINT stops at once).

    The `last.ckpt` is the one of the run's ModelCheckpoint with `save_last` (so `--ckpt_path last` finds it).
    """

    def __init__(
        self,
        every_n_minutes: float | None = 5.0,
        every_n_train_steps: int | None = None,
        min_free_mb: float = 200.0,
        reap_stale_runs: bool = True,
        handle_signals: bool = True,
    ) -> None:
        super().__init__()
        if every_n_minutes is not None and every_n_minutes <= 0:
            raise ValueError(f"every_n_minutes must be positive or None, not {every_n_minutes}")
        if every_n_train_steps is not None and every_n_train_steps <= 0:
            raise ValueError(f"every_n_train_steps must be positive or None, not {every_n_train_steps}")
        self.every_n_minutes = every_n_minutes
        self.every_n_train_steps = every_n_train_steps
        self.min_free_mb = min_free_mb
        self.reap_stale_runs = reap_stale_runs
        self.handle_signals = handle_signals
        self._last_save_time = time.monotonic()
        self._last_save_step = -1
        self._warned_no_last = False
        self._previous_handlers: dict[int, Any] = {}
        self._trainer: Trainer | None = None

    # -- before any work -----------------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()
        # Before the callbacks that create the MLflow run (this one comes first in the conf lists): a fit that
        # cannot write its checkpoints stops here, with nothing started.
        for folder in self._checkpoint_folders(trainer):
            check_output_folder(folder, "checkpoints", self.min_free_mb if trainer.is_global_zero else 0.0)

    @staticmethod
    def _checkpoint_folders(trainer: Trainer) -> list[Path]:
        folders = []
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint):
                path = callback.dirpath or trainer.default_root_dir
                if "://" not in str(path):
                    folders.append(Path(path))
        return sorted(set(folders))

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_save_time = time.monotonic()
        self._last_save_step = trainer.global_step
        if not trainer.is_global_zero:
            return
        from stress_lightning.tracking.callbacks import find_mlflow_logger

        logger = find_mlflow_logger(trainer)
        if logger is None:
            return
        client, run_id = logger.experiment, logger.run_id
        for key, value in process_tags().items():
            client.set_tag(run_id, key, value)
        if self.reap_stale_runs:
            from mlflow.exceptions import MlflowException

            experiment_id = client.get_run(run_id).info.experiment_id
            try:
                reaped = reap_stale_runs(client, [experiment_id], exclude={run_id})
            except MlflowException as err:  # housekeeping: the fit goes on, `runs reap` can do it later
                rank_zero_warn(f"could not close the runs killed processes left RUNNING: {err}")
                reaped = []
            for run in reaped:
                rank_zero_info(f"MLflow run {run.run_id} ({run.run_name}) was left RUNNING ({run.reason}): KILLED")

    # -- signals -------------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning installs its SIGTERM handler just before training (trainer._run); ours goes on top of it.
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return
        global _stop_signal
        _stop_signal = None
        self._trainer = trainer
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        trainer = self._trainer
        if signum == signal.SIGINT and _stop_signal == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C: stop now (Lightning still ends the run)
        first = _stop_signal is None
        _record_signal(signum)
        name = signal.Signals(signum).name
        previous = self._previous_handlers.get(signum)
        if signum == signal.SIGTERM and callable(previous):
            previous(signum, frame)  # Lightning's: stops its launcher's children, tells the other ranks
        if trainer is not None:
            # The loops check this flag after each batch and stop there (SIGTERMException), whatever the signal.
            trainer._signal_connector.received_sigterm = True
        if first:
            again = " (Ctrl+C again to stop at once)" if signum == signal.SIGINT else ""
            rank_zero_info(f"\n{name} received: stopping after this batch with a checkpoint{again}")

    def _restore_signals(self) -> None:
        for signum, handler in self._previous_handlers.items():
            if threading.current_thread() is threading.main_thread():
                signal.signal(signum, handler)
        self._previous_handlers.clear()
        self._trainer = None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore_signals()
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        # A stop outside the part of the fit these handlers cover (the test after fit: Lightning's own SIGTERM
        # handler; Ctrl+C while the cache is built: Python's KeyboardInterrupt) is still a stop by that signal.
        if _stop_signal is None and isinstance(exception, SIGTERMException):
            _record_signal(signal.SIGTERM)
        elif _stop_signal is None and isinstance(exception, KeyboardInterrupt):
            _record_signal(signal.SIGINT)
        if _stop_signal is None:
            return
        name = signal.Signals(_stop_signal).name
        saved = self._save_last(trainer, notify=True) if trainer.state.fn == "fit" and trainer.global_step else None
        from stress_lightning.tracking.callbacks import find_mlflow_logger

        logger = find_mlflow_logger(trainer)
        # Only a run this process opened (a resumed logger knows its run id before it reopens the run).
        created = getattr(logger, "run_created", bool(getattr(logger, "_run_id", None)))
        if logger is not None and trainer.is_global_zero and created:
            # Lightning ends the run FAILED after the callbacks; the logger ends it with this status instead.
            logger.end_status = "KILLED"
            where = f"; resume with --ckpt_path {saved}" if saved else ""
            logger.experiment.set_tag(
                logger._run_id, TAG_END_REASON, f"stopped by {name} at step {trainer.global_step}{where}"
            )
        if saved:
            rank_zero_info(f"Stopped by {name}: checkpoint {saved} (resume with `fit ... --ckpt_path last`)")

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore_signals()

    # -- the resumable checkpoint ------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == self._last_save_step:
            return
        due = bool(self.every_n_train_steps) and step % int(self.every_n_train_steps) == 0
        if self.every_n_minutes is not None and not due:
            due = time.monotonic() - self._last_save_time >= 60.0 * self.every_n_minutes
            # Every rank must take the same decision: saving is collective.
            due = bool(trainer.strategy.broadcast(due))
        if due:
            self._save_last(trainer, notify=False)

    def _last_callback(self, trainer: Trainer) -> ModelCheckpoint | None:
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last is True and callback.dirpath:
                return callback
        return None

    def _save_last(self, trainer: Trainer, notify: bool) -> str | None:
        """Write the ModelCheckpoint's `last.ckpt` now. The callback's own bookkeeping of its top-k checkpoints is
        not touched (marking this step as saved would make it skip the epoch-end checkpoint of the same step)."""
        callback = self._last_callback(trainer)
        if callback is None:
            if not self._warned_no_last:
                rank_zero_warn("FaultTolerance: no ModelCheckpoint with save_last=True: no resumable checkpoint")
                self._warned_no_last = True
            return None
        path = callback.format_checkpoint_name(callback._monitor_candidates(trainer), callback.CHECKPOINT_NAME_LAST)
        trainer.save_checkpoint(path, callback.save_weights_only)
        # Same name as the callback's own `last`, overwritten in place by it later (not versioned `last-v1`).
        callback.last_model_path = path
        self._last_save_time = time.monotonic()
        self._last_save_step = trainer.global_step
        if notify and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(callback)
        return path

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = rng_states()

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get(RNG_KEY)
        if states is not None and trainer.state.fn == "fit":
            set_rng_states(states)

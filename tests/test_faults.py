"""Faults injected for real: a fit killed with SIGKILL and resumed, SIGTERM/SIGINT mid-fit, runs a killed process
left RUNNING, a cache build killed mid-file, a full disk and a read-only output folder (docs/RELIABILITY.md).

The fits are the smoke config (conf/tiny.yaml) with 2 epochs of 4 batches, in subprocesses that a test holds at a
known step (tests/fault_helpers.py) and then signals.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "stress_lightning.cli"]
# The metrics an interrupted-and-resumed fit must end with, as the uninterrupted one (same seed, same machine).
COMPARED = ("train/loss", "val/loss", "val/expression_acc", "val/stress_f1", "val/hr_mae_bpm")
# What "the same" means: CPU kernels here are deterministic, so the only slack is float32 summation order.
RESUME_RTOL = 1e-5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """One tiny synthetic corpus and cache for every fit of the module (the first fit renders and caches it)."""
    return tmp_path_factory.mktemp("faults_corpus")


def _config(path: Path, every_n_train_steps: int | None, pause: tuple[int, Path] | None = None) -> Path:
    callbacks: list[dict] = [
        {
            "class_path": "stress_lightning.tracking.lifecycle.FaultTolerance",
            "init_args": {"every_n_minutes": None, "every_n_train_steps": every_n_train_steps},
        }
    ]
    if pause is not None:
        step, marker = pause
        callbacks.append({"class_path": "fault_helpers.PauseAt", "init_args": {"step": step, "marker": str(marker)}})
    callbacks += [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "monitor": "val/loss",
                "save_last": True,
                "filename": "epoch{epoch:03d}-step{step:06d}",
                "auto_insert_metric_name": False,
            },
        },
        {"class_path": "stress_lightning.tracking.callbacks.MLflowRunCallback"},
    ]
    config = {
        "trainer": {"max_epochs": 2, "limit_train_batches": 4, "enable_progress_bar": False, "callbacks": callbacks},
        "test_after_fit": False,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _args(corpus: Path, out: Path, experiment: str, config: Path, *extra: str) -> list[str]:
    return [
        *CLI,
        "fit",
        "--config",
        "conf/synthetic.yaml",
        "--config",
        "conf/tiny.yaml",
        "--config",
        str(config),
        f"--data.init_args.root={corpus / 'corpus'}",
        f"--data.init_args.cache_dir={corpus / 'cache'}",
        f"--trainer.default_root_dir={out}",
        f"--trainer.logger.init_args.experiment_name={experiment}",
        *extra,
    ]


def _env(store: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO / "tests"), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "MLFLOW_TRACKING_URI": store, "PYTHONPATH": path, "NO_ALBUMENTATIONS_UPDATE": "1"}


def _run(args: list[str], store: str, expect: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=REPO, env=_env(store), capture_output=True, text=True, timeout=900)
    if proc.returncode != expect:
        tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        raise AssertionError(f"exit {proc.returncode} (expected {expect}):\n{tail}")
    return proc


def _start_and_wait(args: list[str], store: str, marker: Path) -> subprocess.Popen:
    """Start a fit and return once it is held at its PauseAt step."""
    proc = subprocess.Popen(args, cwd=REPO, env=_env(store), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not marker.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the fit ended ({proc.returncode}) before its pause:\n{out[-2000:]}\n{err[-6000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the fit did not reach its pause in 10 minutes")
        time.sleep(0.1)
    return proc


def _runs(store: str, experiment: str) -> list:
    client = MlflowClient(store)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], order_by=["attributes.start_time"])


def _final(client: MlflowClient, run_id: str) -> dict[str, tuple[int, float]]:
    """(step, value) of the last logged value of each compared metric."""
    final = {}
    for key in COMPARED:
        history = client.get_metric_history(run_id, key)
        assert history, f"run {run_id} logged no {key}"
        last = max(history, key=lambda m: (m.step, m.timestamp))
        final[key] = (last.step, last.value)
    return final


def test_killed_fit_resumes_in_its_run_and_ends_as_an_uninterrupted_one(corpus: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    periodic = _config(tmp_path / "periodic.yaml", every_n_train_steps=2)

    # The same seed and config twice, uninterrupted: identical metrics on CPU.
    for _ in range(2):
        _run(_args(corpus, tmp_path / "straight", "straight", periodic), store)
    first, second = (_final(client, r.info.run_id) for r in _runs(store, "straight"))
    assert first == second

    # Killed before any checkpoint: the run is left RUNNING (nothing can end it).
    early = tmp_path / "early.pid"
    proc = _start_and_wait(
        _args(corpus, tmp_path / "killed", "killed", _config(tmp_path / "early.yaml", None, (1, early))), store, early
    )
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    # Killed in the middle of the second epoch, just after the step-6 checkpoint.
    late = tmp_path / "late.pid"
    config = _config(tmp_path / "late.yaml", 2, (6, late))
    proc = _start_and_wait(_args(corpus, tmp_path / "killed", "killed", config), store, late)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    early_run, late_run = _runs(store, "killed")
    assert late_run.info.status == "RUNNING", "nothing can end the run of a process killed with SIGKILL"
    # The run killed before any checkpoint was found and closed by the next fit of the experiment.
    assert early_run.info.status == "KILLED"
    assert "is gone" in early_run.data.tags["stress_lightning.end_reason"]
    (last,) = (tmp_path / "killed").glob("*/*/checkpoints/last.ckpt")
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 6
    assert "stress_lightning.rng" in checkpoint

    # `--ckpt_path last` as a new user would type it: the interrupted run goes on and ends as the straight one.
    proc = _run(_args(corpus, tmp_path / "killed", "killed", periodic, "--ckpt_path=last"), store)
    assert f"Resuming MLflow run {late_run.info.run_id}" in proc.stdout + proc.stderr
    runs = {r.info.run_id: r for r in _runs(store, "killed")}
    assert set(runs) == {early_run.info.run_id, late_run.info.run_id}, "the resumed fit must not start a new run"
    resumed = runs[late_run.info.run_id]
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["resume.count"] == "1"
    resumed_final = _final(client, late_run.info.run_id)
    for key in COMPARED:
        assert resumed_final[key][0] == first[key][0], key
        assert np.isclose(resumed_final[key][1], first[key][1], rtol=RESUME_RTOL, atol=1e-7), (
            key,
            resumed_final[key],
            first[key],
        )


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_signal_saves_a_checkpoint_ends_the_run_killed_and_exits_nonzero(
    corpus: Path, tmp_path: Path, signum: int, status: int
) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    marker = tmp_path / "pause.pid"
    config = _config(tmp_path / "pause.yaml", None, (2, marker))
    proc = _start_and_wait(_args(corpus, tmp_path / "out", "stopped", config), store, marker)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == status, f"{out[-2000:]}\n{err[-4000:]}"
    name = signal.Signals(signum).name
    assert f"{name} received: stopping after this batch" in out + err
    (run,) = _runs(store, "stopped")
    assert run.info.status == "KILLED"
    assert run.data.tags["stress_lightning.end_reason"].startswith(f"stopped by {name} at step 2")
    (last,) = (tmp_path / "out").glob("*/*/checkpoints/last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2


# -- runs left RUNNING -----------------------------------------------------------------------------------------
def test_runs_reap_closes_only_the_runs_whose_process_is_gone(tmp_path: Path, capsys) -> None:
    from stress_lightning.commands import run as run_command
    from stress_lightning.tracking.lifecycle import TAG_HOST, TAG_PID, process_tags

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    experiment = client.create_experiment("reap")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_tags = process_tags(dead.pid)  # taken while it runs: its start time is known
    dead.wait()
    runs = {}
    for name, tags in {
        "dead": dead_tags,
        "alive": process_tags(),
        "elsewhere": {TAG_HOST: "another-host.example", TAG_PID: "1"},
        "untagged": {},
    }.items():
        runs[name] = client.create_run(experiment, run_name=name, tags=tags).info.run_id
    client.log_metric(runs["dead"], "train/loss", 1.5, timestamp=1_700_000_000_000)

    assert run_command(["runs", "reap", "--tracking-uri", store, "--dry-run"]) == 0
    assert client.get_run(runs["dead"]).info.status == "RUNNING"
    assert run_command(["runs", "reap", "--tracking-uri", store]) == 0
    printed = capsys.readouterr().out
    assert f"{runs['dead']} (dead): process {dead.pid} on" in printed
    assert f"{runs['elsewhere']} (elsewhere): RUNNING, process 1 on another-host.example" in printed
    # Ended at its last sign of life, not when it was found.
    assert client.get_run(runs["dead"]).info.end_time == 1_700_000_000_000
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {"dead": "KILLED", "alive": "RUNNING", "elsewhere": "RUNNING", "untagged": "RUNNING"}
    # A run of another host is closed when named; a run whose process is alive here is refused.
    assert run_command(["runs", "reap", "--tracking-uri", store, "--run-id", runs["elsewhere"]]) == 0
    assert client.get_run(runs["elsewhere"]).info.status == "KILLED"
    assert run_command(["runs", "reap", "--tracking-uri", store, "--run-id", runs["alive"]]) == 2
    assert "is running; stop that process instead" in capsys.readouterr().err
    assert client.get_run(runs["alive"]).info.status == "RUNNING"


# -- the cache ------------------------------------------------------------------------------------------------
def _cache_module(root: Path, cache_dir: Path):
    from stress_lightning.data.datamodules import ClipDataModule

    return ClipDataModule(
        corpus="synthetic",
        root=str(root),
        cache_dir=str(cache_dir),
        clip_seconds=4.0,
        face_size=32,
        corpus_options={
            "generator": {"num_subjects": 4, "duration_s": 6.0, "fps": 25.0, "width": 64, "height": 64, "seed": 0}
        },
        progress=False,
    )


def _has_temporary(folder: Path) -> bool:
    # os.walk, not glob: the builder renames folders while this looks (glob raises on a folder that went away).
    return any(".tmp" in name for _, dirs, files in os.walk(folder) for name in dirs + files)


def test_cache_build_killed_mid_file_is_detected_and_rebuilt(corpus: Path, tmp_path: Path, capsys) -> None:

    root = corpus / "corpus"
    cache_dir = tmp_path / "cache"
    dm = _cache_module(root, cache_dir)
    media = [it for it in dm.items() if not it.is_physiology]  # renders the corpus if no fit of the module has
    # A build in another process, killed with SIGKILL while it writes (as soon as it has a temporary folder).
    code = (
        "import sys; sys.path.insert(0, sys.argv[3]); from test_faults import _cache_module; "
        "_cache_module(sys.argv[1], sys.argv[2]).prepare_data()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(root), str(cache_dir), str(REPO / "tests")], cwd=REPO)
    deadline = time.monotonic() + 300
    while not _has_temporary(cache_dir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    cache = dm.cache()
    # Whatever the moment of the kill: an entry is either complete or not there, never read as valid when cut.
    for item in media:
        if cache.is_cached(item):
            video = cache.load_video(item)
            assert len(video.faces) == len(video.valid)
    # An entry cut short on disk (a copy that died, a full disk under an older writer) reads as not cached.
    done = [it for it in media if cache.is_cached(it)]
    if not done:
        cache.build(dm.reader, media[:1], progress=False)
        done = media[:1]
    faces = cache.video_dir(done[0]) / "faces.npy"
    with open(faces, "r+b") as handle:
        handle.truncate(faces.stat().st_size // 2)
    assert not cache.is_cached(done[0])
    dm.prepare_data()
    assert all(cache.is_cached(it) for it in media)
    assert not list(cache.root.glob("**/*.tmp[0-9]*")), "temporaries of the killed build are left"
    for item in media:
        video = cache.load_video(item)
        assert np.asarray(video.faces).shape[0] == len(video.valid)
    assert "built again" in capsys.readouterr().err


# -- output folders -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _small_mount(path: Path, size_kb: int, read_only: bool = False):
    """A tmpfs of `size_kb` at `path` (root with CAP_SYS_ADMIN), else a skip that says why."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kb}k" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small file system here to fill it for real ({done.stderr.strip()})")
    try:
        yield path
    finally:
        # Lazy: memory-mapped arrays of the test may still hold the file system.
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_keeps_the_previous_checkpoint_and_names_the_file(tmp_path: Path, bad_input) -> None:
    from stress_lightning.storage import OutputFolderError
    from stress_lightning.tracking.lifecycle import AtomicCheckpointIO

    with _small_mount(tmp_path / "disk", 512) as disk:
        io = AtomicCheckpointIO()
        target = disk / "last.ckpt"
        io.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "global_step": 1}, target)
        with pytest.raises(OutputFolderError) as err:
            io.save_checkpoint({"state_dict": {"w": torch.zeros(400_000)}, "global_step": 2}, target)
        assert str(target) in str(err.value) and "no space left" in str(err.value)
        assert torch.load(target, weights_only=True)["global_step"] == 1
        assert sorted(p.name for p in disk.iterdir()) == ["last.ckpt"], "the partial temporary file is left"
        bad_input.record("output folders", "checkpoint written to a full disk", str(err.value))


def test_full_and_read_only_output_folders_are_refused_up_front(tmp_path: Path, bad_input) -> None:
    from stress_lightning.storage import OutputFolderError, check_output_folder

    with _small_mount(tmp_path / "full", 256) as full:
        with pytest.raises(OutputFolderError) as err:
            check_output_folder(full / "checkpoints", "checkpoints", min_free_mb=200)
        assert "MB free for checkpoints" in str(err.value)
        bad_input.record("output folders", "checkpoint folder with less free space than asked", str(err.value))
    with _small_mount(tmp_path / "readonly", 64, read_only=True) as readonly:
        with pytest.raises(OutputFolderError) as err:
            check_output_folder(readonly / "cache", "the preprocessing cache")
        assert "read-only" in str(err.value) and str(readonly / "cache") in str(err.value)
        bad_input.record("output folders", "cache folder on a read-only file system", str(err.value))


def test_a_cache_build_on_a_full_disk_says_so_and_keeps_what_it_finished(
    corpus: Path, tmp_path: Path, bad_input
) -> None:
    from stress_lightning.storage import OutputFolderError

    with _small_mount(tmp_path / "disk", 2048) as disk:
        dm = _cache_module(corpus / "corpus", disk)
        media = [it for it in dm.items() if not it.is_physiology]
        cache = dm.cache()
        with pytest.raises(OutputFolderError) as err:
            dm.prepare_data()  # the preflight: less free space than a build wants
        assert "MB free for the preprocessing cache" in str(err.value)
        bad_input.record("output folders", "cache folder with too little free space", str(err.value))
        cache.min_free_mb = 0.0  # past the preflight: the disk fills up during the build
        with pytest.raises(OutputFolderError) as err:
            cache.build(dm.reader, media, progress=False)
        assert str(cache.root) in str(err.value) and "no space left on the device" in str(err.value)
        bad_input.record("output folders", "disk full while the cache is built", str(err.value))
        finished = [it for it in media if cache.is_cached(it)]
        assert 0 < len(finished) < len(media)
        for item in finished:
            assert len(cache.load_video(item).valid) > 0
        assert not _has_temporary(cache.root)

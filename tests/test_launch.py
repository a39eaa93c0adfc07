"""Distributed launches for real, on CPU with gloo: `torchrun` and an emulated SLURM allocation each start two
processes of the `stress-lightning` console script with conf/trainer/ddp_cpu.yaml and must end with one finished
MLflow run and one registered model; every conf/trainer preset composes with the main experiment.

The SLURM test runs scripts/slurm/fit.sbatch itself under bash, with the variables sbatch sets and a stand-in `srun`
on PATH that starts the tasks with the variables srun gives each one, so a change to the script is what is tested.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SBATCH = REPO / "scripts" / "slurm" / "fit.sbatch"
PRESETS = sorted((REPO / "conf" / "trainer").glob("*.yaml"))
TIMEOUT_S = 600
_MEMBER = re.compile(r"Initializing distributed: GLOBAL_RANK: (\d+), MEMBER: \d+/(\d+)")

# What srun does for the tasks of one step, for a CPU stand-in: one process per task of the allocation, each with
# its global rank, its rank on its node and its node's index; the step fails when a task fails.
FAKE_SRUN = """#!{python}
import os, subprocess, sys
ntasks = int(os.environ["SLURM_NTASKS"])
per_node = int(os.environ["SLURM_NTASKS_PER_NODE"])
tasks = []
for rank in range(ntasks):
    env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank % per_node),
               SLURM_NODEID=str(rank // per_node), SLURM_STEP_ID="0", SLURM_STEP_NUM_TASKS=str(ntasks))
    tasks.append(subprocess.Popen(sys.argv[1:], env=env))
sys.exit(max(task.wait() for task in tasks))
"""


@pytest.fixture(scope="module")
def corpus_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Corpus and cache folders the two launches share: the first one generates and caches the tiny corpus."""
    tmp = tmp_path_factory.mktemp("launch_data")
    return {"root": tmp / "corpus", "cache": tmp / "cache"}


def _env(store_uri: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "NODE_RANK"):
        env.pop(key, None)
    env.update(
        MLFLOW_TRACKING_URI=store_uri,
        NO_ALBUMENTATIONS_UPDATE="1",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",  # two processes on a shared 2-core machine
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra)
    return env


def _launch(args: list[str], env: dict[str, str]) -> str:
    """Run a launcher to its end; on failure or timeout, the log. Its own session, so that a hung job is ended
    whole."""
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # SIGTERM first: torchrun passes it on to its workers, which run in sessions of their own.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        raise AssertionError(f"{shlex.join(args)} did not end in {TIMEOUT_S} s:\n{out[-6000:]}") from None
    if proc.returncode != 0:
        raise AssertionError(f"{shlex.join(args)} failed ({proc.returncode}):\n{out[-8000:]}")
    return out


def _fit_args(dirs: dict[str, Path]) -> list[str]:
    return [
        "--config",
        "conf/synthetic.yaml",
        "--config",
        "conf/tiny.yaml",
        "--trainer",
        "conf/trainer/ddp_cpu.yaml",
        f"--data.init_args.root={dirs['root']}",
        f"--data.init_args.cache_dir={dirs['cache']}",
    ]


def _check_outcome(log: str, store_uri: str, out_dir: Path, num_nodes: int, devices: int) -> None:
    members = _MEMBER.findall(log)
    assert sorted(int(rank) for rank, _ in members) == [0, 1], f"expected ranks 0 and 1:\n{log[-4000:]}"
    assert {size for _, size in members} == {"2"}
    assert "Starting with 2 processes" in log

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store_uri)
    experiment = client.get_experiment_by_name("stress-lightning")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "one MLflow run for the whole job, not one per rank"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert {"train/loss", "val/loss", "test/loss", "test/expression_acc", "test/hr_mae_bpm"} <= set(run.data.metrics)
    params = run.data.params
    assert (params["trainer.num_nodes"], params["trainer.devices"]) == (str(num_nodes), str(devices))
    assert params["trainer.strategy.init_args.process_group_backend"] == "gloo"
    versions = client.search_model_versions("name='stress-multitask'")
    assert [str(v.version) for v in versions] == ["1"], "rank zero alone registers"
    assert versions[0].run_id == run.info.run_id
    assert list(out_dir.rglob("*.ckpt")), f"no checkpoint under {out_dir}"


def test_torchrun_launch(tmp_path: Path, store_uri: str, corpus_dirs: dict[str, Path]) -> None:
    out_dir = tmp_path / "out"
    log = _launch(
        [
            str(BIN / "torchrun"),
            "--standalone",
            "--nproc_per_node",
            "2",
            "--no-python",
            str(BIN / "stress-lightning"),
            "fit",
            *_fit_args(corpus_dirs),
            f"--trainer.default_root_dir={out_dir}",
        ],
        _env(store_uri),
    )
    assert "SLURM auto-requeueing enabled" not in log  # torchrun's variables, not SLURM's, were used
    _check_outcome(log, store_uri, out_dir, num_nodes=1, devices=2)


def _sbatch_options() -> dict[str, str]:
    options = {}
    for line in SBATCH.read_text().splitlines():
        if line.startswith("#SBATCH "):
            key, _, value = line[len("#SBATCH ") :].strip().partition("=")
            options[key] = value
    return options


def test_sbatch_directives_agree() -> None:
    options = _sbatch_options()
    # Lightning runs one process per GPU: as many tasks per node as GPUs per node.
    assert options["--ntasks-per-node"] == options["--gpus-per-node"]
    # Lightning ignores SLURM for these job names (interactive allocations) and would start processes itself.
    assert options["--job-name"] not in ("bash", "interactive")
    assert int(options["--nodes"]) >= 1


def _free_job_id() -> str:
    """A job id whose derived port (15000 + its last 4 digits, as SLURMEnvironment computes it) is free here."""
    for tail in random.sample(range(1000, 10000), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", 15000 + tail))
            except OSError:
                continue
        return f"7{tail:04d}"
    raise RuntimeError("no free port in 16000-24999")


def _fake_srun(folder: Path, script: str) -> str:
    """PATH with an `srun` running `script` first (and this environment's console scripts next)."""
    folder.mkdir()
    srun = folder / "srun"
    srun.write_text(script.format(python=sys.executable))
    srun.chmod(0o755)
    return f"{folder}{os.pathsep}{BIN}{os.pathsep}{os.environ.get('PATH', '')}"


def test_slurm_launch(tmp_path: Path, corpus_dirs: dict[str, Path]) -> None:
    # `sbatch --nodes 2 --ntasks-per-node 1 scripts/slurm/fit.sbatch ...` on two single-CPU "nodes" of this host.
    # A new MLflow store: srun starts every rank at once, and each one opens the store that nobody created yet.
    (tmp_path / "mlruns").mkdir()
    store_uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    out_dir = tmp_path / "out"
    env = _env(
        store_uri,
        PATH=_fake_srun(tmp_path / "bin", FAKE_SRUN),
        OUTPUT_DIR=str(out_dir),
        SLURM_JOB_ID=_free_job_id(),
        SLURM_JOB_NAME=_sbatch_options()["--job-name"],
        SLURM_NNODES="2",
        SLURM_NTASKS="2",
        SLURM_NTASKS_PER_NODE="1",
        SLURM_TASKS_PER_NODE="1(x2)",
        SLURM_CPUS_PER_TASK="1",
        SLURM_JOB_NODELIST="localhost,localhost",
        SLURM_NODELIST="localhost,localhost",
        SLURM_SUBMIT_DIR=str(REPO),
    )
    # Both "nodes" share this disk: the cache is built once overall, as docs/DISTRIBUTED.md says for shared storage.
    log = _launch(["bash", str(SBATCH), *_fit_args(corpus_dirs), "--data.init_args.prepare_data_per_node=false"], env)
    assert "SLURM auto-requeueing enabled" in log, "Lightning did not take the SLURM environment"
    _check_outcome(log, store_uri, out_dir, num_nodes=2, devices=1)


@pytest.mark.parametrize(
    ("restarts", "hpc_checkpoints", "expected"),
    [("0", [], None), ("1", [], "last"), ("2", ["hpc_ckpt_1.ckpt", "hpc_ckpt_2.ckpt"], "hpc_ckpt_2.ckpt")],
)
def test_requeued_job_resumes(tmp_path: Path, restarts: str, hpc_checkpoints: list[str], expected: str | None) -> None:
    # A stand-in srun that only records its command line: what the script would start, not the fit itself.
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for age, name in enumerate(reversed(hpc_checkpoints)):  # the last one listed is the newest
        (out_dir / name).write_bytes(b"")
        os.utime(out_dir / name, (1_000_000 - age, 1_000_000 - age))
    record = tmp_path / "argv.txt"
    echo = "#!{python}\nimport os, sys\nopen(os.environ['SRUN_RECORD'], 'w').write('\\n'.join(sys.argv[1:]))\n"
    env = {
        "PATH": _fake_srun(tmp_path / "bin", echo),
        "SRUN_RECORD": str(record),
        "OUTPUT_DIR": str(out_dir),
        "SLURM_RESTART_COUNT": restarts,
        "SLURM_NNODES": "3",
        "SLURM_NTASKS_PER_NODE": "4",
    }
    proc = subprocess.run(["bash", str(SBATCH), "--config", "conf/synthetic.yaml"], env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    argv = record.read_text().split("\n")
    assert argv[:4] == ["stress-lightning", "fit", "--config", "conf/synthetic.yaml"]
    options = dict(zip(argv[4::2], argv[5::2], strict=True))
    assert options["--trainer.num_nodes"] == "3" and options["--trainer.devices"] == "4"
    assert options["--trainer.default_root_dir"] == str(out_dir)
    if expected is None:
        assert "--ckpt_path" not in options
    else:
        assert options["--ckpt_path"] == (expected if expected == "last" else str(out_dir / expected))


def test_sbatch_without_arguments_says_how() -> None:
    proc = subprocess.run(["bash", str(SBATCH)], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 2 and "usage: sbatch scripts/slurm/fit.sbatch --config" in proc.stderr


def _same(printed: object, given: object) -> bool:
    if isinstance(given, list):  # sets (auto_wrap_policy) print in any order
        return isinstance(printed, list) and sorted(map(str, printed)) == sorted(map(str, given))
    return printed == given


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_composes_with_main_experiment(
    preset: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stress_lightning.cli import main

    monkeypatch.setattr(sys, "argv", ["stress-lightning"])  # pytest's own arguments are not the CLI's

    conf = REPO / "conf"
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["fit", "--config", str(conf / "synthetic.yaml"), "--config", str(conf / "tiny.yaml")]
            + ["--trainer", str(preset), "--print_config"]
        )
    assert exit_info.value.code in (0, None)
    trainer = yaml.safe_load(capsys.readouterr().out)["trainer"]
    for key, value in yaml.safe_load(preset.read_text()).items():
        if key in ("logger", "callbacks"):
            continue  # file references, resolved in the printed config
        printed = trainer[key]
        if isinstance(value, dict):  # class_path + init_args; the printed init_args also list the defaults
            assert printed["class_path"] == value["class_path"]
            for arg, given in value.get("init_args", {}).items():
                assert _same(printed["init_args"][arg], given), f"{preset.name}: trainer.{key}.init_args.{arg}"
        else:
            assert _same(printed, value), f"{preset.name}: trainer.{key}"
    # The experiment's logger and callbacks are still there, and conf/tiny.yaml's limits (the preset came later).
    assert trainer["logger"]["class_path"] == "stress_lightning.tracking.store.StressMLFlowLogger"
    assert any(cb["class_path"].endswith("RegistryCallback") for cb in trainer["callbacks"])
    assert trainer["limit_train_batches"] == 2


def test_fsdp_preset_wraps_every_stream_and_saves_full_checkpoints() -> None:
    import importlib

    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from stress_lightning.models.registry import BODY_BACKBONES, RPPG_BACKBONES, SPATIAL_BACKBONES, TEMPORAL_BACKBONES

    config = yaml.safe_load((REPO / "conf" / "trainer" / "fsdp.yaml").read_text())
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=FSDPStrategy)
    strategy = parser.instantiate_classes(parser.parse_object({"strategy": config["strategy"]})).strategy
    assert isinstance(strategy, FSDPStrategy)
    assert isinstance(strategy.kwargs["auto_wrap_policy"], ModuleWrapPolicy)
    # A consolidated checkpoint, readable by torch.load(weights_only=True) like a DDP run's.
    assert config["strategy"]["init_args"]["state_dict_type"] == "full"
    wrapped = []
    for path in config["strategy"]["init_args"]["auto_wrap_policy"]:
        module, _, name = path.rpartition(".")
        wrapped.append(getattr(importlib.import_module(module), name))
    # Every registered stream becomes an FSDP unit of its own (a new backbone family must be added to the preset).
    for registry in (SPATIAL_BACKBONES, TEMPORAL_BACKBONES, RPPG_BACKBONES, BODY_BACKBONES):
        for name in registry.names():
            assert issubclass(registry.get(name), tuple(wrapped)), f"{name} is not in fsdp.yaml's auto_wrap_policy"

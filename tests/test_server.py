"""Tracking against a real MLflow server: PostgreSQL backend store (SQLite where PostgreSQL cannot start, said in
the output), `mlflow server --serve-artifacts` on 127.0.0.1, a fit over HTTP that registers and promotes, a fresh
process loading `models:/stress-multitask@champion`, resuming a fit into the same run, an unreachable server at
start, and a server lost in the middle of a fit (back before the end, and not back at all)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from mlflow import MlflowClient
from server_helpers import TrackingServer, free_port
from test_cli import _tiny_args as cli_tiny_args
from torch.utils.data import DataLoader, TensorDataset

from stress_lightning.commands import run as run_command
from stress_lightning.tracking.resume import checkpoint_run
from stress_lightning.tracking.spool import PendingRun
from stress_lightning.tracking.store import StressMLFlowLogger, TrackingSyncError

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "stress_lightning.cli"]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> TrackingServer:
    srv = TrackingServer(tmp_path_factory.mktemp("mlflow_server"))
    srv.setup()
    if srv.fallback_reason:
        warnings.warn(srv.fallback_reason, stacklevel=1)
    yield srv
    srv.close()


@pytest.fixture
def running(server: TrackingServer) -> TrackingServer:
    """The server, started again after a test that stopped it."""
    yield server
    if server._proc is None:
        server.start()


def _env(uri: str) -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = uri
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(args: list[str], uri: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=REPO, env=_env(uri), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def _tiny_args(tmp: Path, *extra: str) -> list[str]:
    # test_cli's smoke config, in an experiment of its own, with the pending files in the test's folder.
    return [
        *cli_tiny_args(tmp),
        "--trainer.logger.init_args.experiment_name=server-tests",
        f"--trainer.logger.init_args.spool_dir={tmp / 'pending'}",
        *extra,
    ]


# -- a fit over HTTP, registered, promoted, loaded in a fresh process, resumed into the same run ---------------------
@pytest.fixture(scope="module")
def fitted(server: TrackingServer, tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("server_fit")
    _run([*CLI, "fit", *_tiny_args(tmp)], server.uri)
    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("server-tests")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return tmp, runs[0].info.run_id


def test_fit_over_http_logs_registers_and_promotes(server: TrackingServer, fitted: tuple[Path, str]) -> None:
    tmp, run_id = fitted
    client = MlflowClient(server.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in ("train/loss", "val/loss", "test/stress_f1", "test/hr_mae_bpm", "export/onnx_max_abs_diff"):
        assert key in run.data.metrics, key
    assert run.data.tags["git.commit"]
    assert run.data.params["trainer.max_epochs"] == "1"
    # The artifacts went through the server into its artifact destination, not into a local folder.
    paths = {a.path for folder in ("", "config", "plots", "checkpoints") for a in client.list_artifacts(run_id, folder)}
    assert "config/config.yaml" in paths
    assert {"plots/test_expression_confusion.png", "plots/test_hr_bland_altman.png"} <= paths
    checkpoints = [p for p in paths if p.startswith("checkpoints/") and p.endswith(".ckpt")]
    assert "checkpoints/last.ckpt" in checkpoints and len(checkpoints) == 2, checkpoints
    assert all("=" not in p for p in paths), paths
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert any((server.root / "artifacts").rglob("config.yaml"))
    version = client.get_model_version_by_alias("stress-multitask", "champion")
    assert version.run_id == run_id
    assert version.tags["promotion.decision"] == "champion"


def test_registry_commands_over_http(
    server: TrackingServer, fitted: tuple[Path, str], capsys: pytest.CaptureFixture
) -> None:
    _, run_id = fitted
    assert run_command(["models", "list", "--json", "--name", "stress-multitask", "--tracking-uri", server.uri]) == 0
    rows = json.loads(capsys.readouterr().out)
    champion = next(r for r in rows if "champion" in r["aliases"])
    assert champion["run_id"] == run_id and champion["export"]["onnx"] == "ok"
    # The gate reads the model's files through the server's proxied artifact store.
    args = ["promote", "--run-id", run_id, "--dry-run", "--tracking-uri", server.uri]
    assert run_command(args) == 0
    assert "already champion" in capsys.readouterr().out


def test_champion_loads_over_http_in_a_fresh_process(server: TrackingServer, fitted: tuple[Path, str]) -> None:
    script = """
import json, numpy as np, mlflow
model = mlflow.pyfunc.load_model("models:/stress-multitask@champion")
rng = np.random.default_rng(0)
frames = rng.random((2, 8, 3, 32, 32), dtype=np.float32)
roi = (0.5 + 0.01 * rng.random((2, 100, 3, 8, 8))).astype(np.float32)
out = model.predict({"frames": frames, "roi": roi})
print(json.dumps({"rows": len(out), "hr": out["hr_bpm"].tolist(), "stress": out["stress_level"].tolist(),
                  "columns": list(out.columns)}))
"""
    proc = _run([sys.executable, "-c", script], server.uri)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rows"] == 2
    assert {"expression", "hr_bpm", "rmssd_ms", "stress_level", "stress_prob_high"} <= set(result["columns"])
    assert all(40 <= hr <= 180 for hr in result["hr"])
    assert set(result["stress"]) <= {"low", "normal", "high"}


def test_resumed_fit_continues_the_same_run(server: TrackingServer, fitted: tuple[Path, str]) -> None:
    tmp, run_id = fitted
    # The checkpoint itself names its run (not only its folder): a copy elsewhere still resumes the run.
    last = next((tmp / "out").rglob("last.ckpt"))
    moved = tmp / "elsewhere" / "copy.ckpt"
    moved.parent.mkdir()
    shutil.copy(last, moved)
    assert checkpoint_run(moved)["run_id"] == run_id
    client = MlflowClient(server.uri)
    first_steps = {m.step for m in client.get_metric_history(run_id, "train/loss")}
    _run(
        [*CLI, "fit", *_tiny_args(tmp, "--trainer.max_epochs=2", "--ckpt_path=last", "--test_after_fit=false")],
        server.uri,
    )
    experiment = client.get_experiment_by_name("server-tests")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id], "a resumed fit must not open a new run"
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["resume.count"] == "1"
    assert run.data.tags["resume.checkpoint"].endswith("last.ckpt")
    steps = {m.step for m in client.get_metric_history(run_id, "train/loss")}
    assert steps > first_steps and min(steps - first_steps) > max(first_steps), (first_steps, steps)
    # The first config stays; the resumed one lies beside it and the changed parameter is named.
    configs = {a.path for a in client.list_artifacts(run_id, "config")}
    assert {"config/config.yaml", "config/config.resume-1.yaml"} <= configs
    assert run.data.params["trainer.max_epochs"] == "1"
    assert "trainer.max_epochs" in run.data.tags["params.changed_on_resume"]
    # Resuming a finished fit trains nothing, so it neither tests nor registers the same model again.
    versions = len(client.search_model_versions("name = 'stress-multitask'"))
    proc = _run([*CLI, "fit", *_tiny_args(tmp, "--trainer.max_epochs=2", "--ckpt_path=last")], server.uri)
    assert "nothing left to train" in proc.stderr + proc.stdout
    assert len(client.search_model_versions("name = 'stress-multitask'")) == versions
    assert client.get_run(run_id).data.tags["resume.count"] == "2"


def _no_port(text: str) -> str:
    """What the user saw, with the test's free port (different each run) as <port> for the bad-input table."""
    return re.sub(r"(127\.0\.0\.1:|\bport )\d+", r"\1<port>", text)


@pytest.mark.parametrize("scheme", ["http", "postgresql"])
def test_unreachable_store_is_one_clear_error_before_any_work(tmp_path: Path, scheme: str, bad_input) -> None:
    port = free_port()
    if scheme == "http":
        dead = shown = f"http://127.0.0.1:{port}"
    else:
        dead = f"postgresql+psycopg2://mlflow:s3cret@127.0.0.1:{port}/mlflow"
        shown = f"postgresql+psycopg2://mlflow:***@127.0.0.1:{port}/mlflow"
    proc = _run([*CLI, "fit", *_tiny_args(tmp_path)], dead, check=False, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"MLflow tracking store {shown} is not reachable" in proc.stderr
    assert "s3cret" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "corpus").exists(), "the corpus was generated before the store was checked"
    case = f"MLflow store ({scheme}) unreachable when `fit` starts"
    bad_input.record("tracking server", case, _no_port(proc.stderr), exit_status=proc.returncode)


# -- the server lost in the middle of a fit ------------------------------------------------------------------------
class _Tiny(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(16, 4, generator=generator), torch.randn(16, 1, generator=generator))
        return DataLoader(data, batch_size=4)  # 4 steps per epoch


class _Outage(Callback):
    """Stops the server after epoch `stop_after`, starts it again after epoch `back_after` (None: never)."""

    def __init__(self, server: TrackingServer, stop_after: int, back_after: int | None) -> None:
        self.server, self.stop_after, self.back_after = server, stop_after, back_after
        self.kept_while_down = 0
        self.error = ""  # the TrackingSyncError a fit that ended with the server away raised

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch == self.stop_after:
            self.server.stop()
        if self.back_after is not None and trainer.current_epoch == self.back_after:
            path = trainer.logger.pending_path
            self.kept_while_down = 0 if path is None else len(_kept_losses(PendingRun.load(path)))
            self.server.start()


def _outage_fit(server: TrackingServer, tmp: Path, back_after: int | None) -> tuple[StressMLFlowLogger, _Outage]:
    logger = StressMLFlowLogger(
        experiment_name="server-outage", tracking_uri=server.uri, log_model=True, spool_dir=str(tmp / "pending")
    )
    outage = _Outage(server, stop_after=1, back_after=back_after)
    trainer = Trainer(
        max_epochs=5,
        logger=logger,
        callbacks=[outage],
        log_every_n_steps=1,
        default_root_dir=str(tmp / "out"),
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    if back_after is None:
        with pytest.raises(TrackingSyncError) as excinfo:
            trainer.fit(_Tiny())
        assert str(tmp / "pending") in str(excinfo.value)
        assert "stress-lightning sync" in str(excinfo.value)
        outage.error = str(excinfo.value)
    else:
        trainer.fit(_Tiny())
    return logger, outage


def _kept_losses(pending: PendingRun) -> list[int]:
    return [row[3] for e in pending.entries if e["kind"] == "metrics" for row in e["metrics"] if row[0] == "train/loss"]


def _loss_steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "train/loss"))


def test_server_lost_mid_fit_metrics_are_sent_when_it_returns(
    running: TrackingServer, tmp_path: Path, bad_input, caplog
) -> None:
    with pytest.warns(UserWarning, match="is unreachable") as lost, caplog.at_level(logging.INFO):
        logger, outage = _outage_fit(running, tmp_path, back_after=3)
    seen = [str(w.message) for w in lost if "is unreachable" in str(w.message)]
    seen += [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()]
    bad_input.record(
        "tracking server", "MLflow server lost after epoch 1, back after epoch 3", _no_port("\n".join(seen))
    )
    assert outage.kept_while_down == 8, "epochs 2 and 3 ran while the server was down: their losses were kept"
    client = MlflowClient(running.uri)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert _loss_steps(client, logger.run_id) == list(range(20)), "every step's loss reached the server, in order"
    assert logger.pending_path is None and not list((tmp_path / "pending").glob("*.jsonl"))
    names = {a.path for a in client.list_artifacts(logger.run_id, "checkpoints")}
    assert "checkpoints/epoch-4-step-20.ckpt" in names and "checkpoints/epoch-4-step-20.yaml" in names


def test_server_lost_until_the_end_keeps_a_local_copy_that_sync_sends(
    running: TrackingServer, tmp_path: Path, bad_input
) -> None:
    with pytest.warns(UserWarning, match="is unreachable") as lost:
        logger, outage = _outage_fit(running, tmp_path, back_after=None)
    seen = [str(w.message) for w in lost if "is unreachable" in str(w.message)] + [outage.error]
    bad_input.record(
        "tracking server", "MLflow server lost after epoch 1 until the fit ends", _no_port("\n".join(seen))
    )
    pending = list((tmp_path / "pending").glob("*.jsonl"))
    assert [p.name for p in pending] == [f"{logger.run_id}.jsonl"]
    kept = PendingRun.load(pending[0])
    kept_steps = _kept_losses(kept)
    assert len(kept_steps) == 12 and kept.entries[-1] == {"kind": "end", "status": "FINISHED"}
    assert any(e["kind"] == "artifact" and e["name"] == "epoch-4-step-20.ckpt" for e in kept.entries)
    running.start()
    client = MlflowClient(running.uri)
    sent_steps = _loss_steps(client, logger.run_id)
    assert sorted(sent_steps + kept_steps) == list(range(20)), "kept and sent steps together: every step once"
    assert client.get_run(logger.run_id).info.status == "RUNNING"
    assert run_command(["sync", str(pending[0])]) == 0
    assert _loss_steps(client, logger.run_id) == list(range(20))
    assert client.get_run(logger.run_id).info.status == "FINISHED"
    assert not pending[0].exists()
    names = {a.path for a in client.list_artifacts(logger.run_id, "checkpoints")}
    assert "checkpoints/epoch-4-step-20.ckpt" in names


# -- the MLflow UI in a real headless browser ----------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS_DIR = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO / "outputs" / "test-artifacts"))


def _chromium(url: str, tmp: Path, output: list[str]) -> subprocess.CompletedProcess:
    """Debian's chromium, headless, a fresh profile, every host name except 127.0.0.1 unresolvable."""
    assert CHROMIUM is not None
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--window-size=1600,3000",
        # The UI is a single-page app: give its scripts and requests virtual time to render before the dump.
        "--virtual-time-budget=30000",
        *output,
        url,
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def two_runs(server: TrackingServer, fitted: tuple[Path, str]) -> tuple[str, list[str]]:
    tmp, first = fitted
    _run([*CLI, "fit", *_tiny_args(tmp, "--seed_everything=1")], server.uri)
    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("server-tests")
    runs = [r.info.run_id for r in client.search_runs([experiment.experiment_id])]
    assert first in runs and len(runs) == 2
    return experiment.experiment_id, runs


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (`apt-get install chromium`; .ci/run does)")
def test_ui_compares_two_runs_with_our_metrics_and_plots(
    server: TrackingServer, two_runs: tuple[str, list[str]], tmp_path: Path
) -> None:
    experiment_id, runs = two_runs
    ids = ",".join(f"%22{r}%22" for r in runs)
    compare = f"{server.uri}/#/compare-runs?runs=[{ids}]&experiments=[%22{experiment_id}%22]"
    dom = _chromium(compare, tmp_path, ["--dump-dom"]).stdout
    for name in ("test/stress_f1", "test/hr_mae_bpm", "val/loss", "export/onnx_max_abs_diff", *runs):
        assert name in dom, f"{name} not on the run comparison page"
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS_DIR / "mlflow_ui_compare_runs.png"
    _chromium(compare, tmp_path, [f"--screenshot={shot}"])
    assert shot.stat().st_size > 10_000
    # The run page shows what the run was trained and tested on (dataset inputs), and the plots render: the UI
    # fetched each image through the server and shows it as a blob.
    run_page = f"{server.uri}/#/experiments/{experiment_id}/runs/{runs[0]}"
    dom = _chromium(run_page, tmp_path, ["--dump-dom"]).stdout
    assert "synthetic/train" in dom, "the Datasets box does not name the training corpus"
    for plot in ("plots/test_expression_confusion.png", "plots/test_hr_bland_altman.png"):
        dom = _chromium(f"{run_page}/artifacts/{plot}", tmp_path, ["--dump-dom"]).stdout
        assert f'<img alt="{plot}" src="blob:' in dom, f"{plot} is not shown by the UI"

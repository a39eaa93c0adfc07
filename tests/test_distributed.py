"""DDP for real on CPU (gloo): a 2-process fit through the `stress-lightning` entry point against a single-process fit
with the same global batch, one checkpoint tested on 1 and on 2 processes, a multi-corpus evaluation where a rank has
no sample of a metric collection, the gathered evaluation outputs, and two processes building one cache folder.

Data sizes are chosen so that a distributed sampler that pads ranks would repeat a clip: 15 val/test clips
(`eval_stride_s` 0.5 on the tiny corpus), evaluated by 2 processes. Training: 18 clips, one step per epoch
(2 x 9 per rank, or 18 on one process), so the two fits see the same samples in the same step whatever the order.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
from lightning.pytorch.strategies import DDPStrategy
from test_mixed import write_swell_csv

from stress_lightning.data.mixed import MixedDataModule
from stress_lightning.models.module import MultiTaskStressModule, _merge_eval_buffers

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "stress_lightning.cli"]
DDP_CPU = ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"]
SMALL_NET = {"spatial_backbone": "conv4", "temporal_backbone": "c3d_small", "rppg_backbone": "rppg_cnn"}
PER_RANK_BATCH = 9

# The single-process fit and the `test` runs need no export or registration: only the run, its metrics and a
# checkpoint (the DDP fit keeps the default callbacks, so export and registration run under DDP).
LIGHT_CALLBACKS = """\
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {monitor: val/loss, mode: min, save_top_k: 1}
    - class_path: stress_lightning.tracking.callbacks.MLflowRunCallback
    - class_path: stress_lightning.tracking.fairness.FairnessCallback
"""


def _env(store: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{store}",
        NO_ALBUMENTATIONS_UPDATE="1",
        PYTHONUNBUFFERED="1",
        # Two processes on few cores: one thread each, or they fight over the cores.
        OMP_NUM_THREADS="1",
    )
    return env


def _run(args: list[str], store: Path) -> str:
    proc = subprocess.run(args, cwd=REPO, env=_env(store), capture_output=True, text=True, timeout=600)
    # tqdm redraws with carriage returns: one line per redraw is easier to count.
    output = (proc.stdout + proc.stderr).replace("\r", "\n")
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{output[-10000:]}")
    return output


def _data_args(tmp: Path, batch_size: int) -> list[str]:
    return [
        "--config",
        "conf/synthetic.yaml",
        "--config",
        "conf/tiny.yaml",
        f"--data.init_args.root={tmp / 'corpus'}",
        f"--data.init_args.cache_dir={tmp / 'cache'}",
        "--data.init_args.eval_stride_s=0.5",
        f"--data.init_args.batch_size={batch_size}",
        "--trainer.limit_test_batches=1.0",
    ]


def _client(store: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")


def _only_run(store: Path):
    client = _client(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def _split_size(output: str, split: str) -> int:
    sizes = {int(n) for n in re.findall(rf"\[data\] synthetic {split}: (\d+) clips", output)}
    assert len(sizes) == 1, sizes
    return sizes.pop()


@pytest.fixture(scope="module")
def fits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The 2-process fit first (the corpus is generated and the cache built inside it), then the single-process fit
    on the same corpus and cache, each with its own MLflow store."""
    tmp = tmp_path_factory.mktemp("ddp")
    light = tmp / "light_callbacks.yaml"
    light.write_text(LIGHT_CALLBACKS)
    ddp = _run(
        [*CLI, "fit", *_data_args(tmp, PER_RANK_BATCH), *DDP_CPU, f"--trainer.default_root_dir={tmp / 'ddp'}"],
        tmp / "ddp.db",
    )
    single = _run(
        [
            *CLI,
            "fit",
            *_data_args(tmp, 2 * PER_RANK_BATCH),
            "--config",
            str(light),
            f"--trainer.default_root_dir={tmp / 'single'}",
        ],
        tmp / "single.db",
    )
    return {"tmp": tmp, "light": light, "ddp": ddp, "single": single}


def test_ddp_fit_one_run_one_registration_cache_built_once(fits: dict) -> None:
    tmp, output = fits["tmp"], fits["ddp"]
    run = _only_run(tmp / "ddp.db")
    assert run.info.status == "FINISHED"
    versions = _client(tmp / "ddp.db").search_model_versions()
    assert len(versions) == 1 and versions[0].run_id == run.info.run_id
    # The corpus was generated and decoded into the cache once (rank 0's prepare_data), not once per rank.
    assert len(re.findall(r"synthetic corpus:\s+0%", output)) == 1
    assert len(re.findall(r"\[data\] synthetic: cached \d+ item", output)) == 1
    assert len(list((tmp / "cache").iterdir())) == 1
    # Both ranks set the data up; every evaluation saw each clip once over the two processes.
    assert len(re.findall(r"\[data\] synthetic test: ", output)) == 2
    n_val, n_test = _split_size(output, "val"), _split_size(output, "test")
    assert n_test % 2 == 1, "an even test split would not show a padding sampler's repeated clip"
    assert f"val: {n_val} samples evaluated over 2 processes" in output
    assert f"test: {n_test} samples evaluated over 2 processes" in output
    assert "evaluated more than once" not in output
    assert "sync_dist=True" not in output  # Lightning's warning about unsynchronised epoch-level values


# What the two fits may differ by. Their weights start equal and both take one step over the same 18 clips, but
# BatchNorm normalises each rank's 9 clips on its own (SyncBatchNorm needs a GPU), so the train-mode outputs, the
# gradients and the running statistics the checkpoint keeps (rank 0's) differ; dropout draws differ by rank; and a
# batch's loss is the mean over its labelled clips, so how clips are grouped into batches moves the epoch loss a
# little. Measured with this config, DDP vs one process:
# - val/test: losses up to 2.7 % apart (val/loss_hr), heart-rate errors up to 4.6 % (val/hr_mae_bpm), scores of a few
#   labelled clips (F1, precision, ...) and Pearson r up to 0.18 (one clip flips a score of 15 by a lot).
# - train (train-mode BatchNorm over 9 clips instead of 18): losses up to 15 %, heart-rate errors up to 39 % (with
#   identical weights and no dropout they still moved by 8.7 bpm), scores up to 0.17.
# The eval bounds are tight enough to catch metrics of one rank's clips only: on this data a loss over either rank's
# half is 4.6-8.1 % off the loss over all clips, and val/hr_mae_bpm 9.7-11 % off. The train bounds catch a rank-count
# error (a sum over ranks instead of a mean doubles a loss). The exact check of the evaluation sync, free of
# BatchNorm differences (one checkpoint), is `test_same_checkpoint_same_test_metrics_on_one_and_two_processes`.
def _allowed_difference(name: str, reference: float) -> float:
    stage, metric = name.split("/", 1)
    metric = metric.rsplit("/", 1)[-1]  # per-group metrics (`test/fairness/gender/female/hr_mae_bpm`) as their kind
    evaluation = stage != "train"
    if metric.startswith("loss"):
        return (0.04 if evaluation else 0.25) * abs(reference)
    if metric in ("hr_mae_bpm", "hr_rmse_bpm"):
        return (0.08 if evaluation else 0.6) * abs(reference)
    return 0.25  # scores in [0, 1] and Pearson r


def test_ddp_fit_metrics_match_single_process_fit(fits: dict) -> None:
    tmp = fits["tmp"]
    ddp = _only_run(tmp / "ddp.db").data.metrics
    single = _only_run(tmp / "single.db").data.metrics

    def evaluated(metrics: dict[str, float]) -> set[str]:
        # train/loss_step is each rank's own running value by design (not synchronised every step).
        return {k for k in metrics if k.startswith(("train/", "val/", "test/")) and k != "train/loss_step"}

    assert evaluated(ddp) == evaluated(single)
    assert {"train/loss", "val/loss", "test/loss", "test/hr_mae_bpm", "test/stress_f1"} <= evaluated(ddp)
    far = {
        name: (ddp[name], single[name])
        for name in sorted(evaluated(ddp))
        if abs(ddp[name] - single[name]) > _allowed_difference(name, single[name])
    }
    assert not far, f"DDP vs single-process metrics beyond tolerance: {far}"


def test_same_checkpoint_same_test_metrics_on_one_and_two_processes(fits: dict) -> None:
    tmp = fits["tmp"]
    checkpoints = sorted((tmp / "ddp").rglob("epoch*.ckpt"))
    assert checkpoints, f"no checkpoint under {tmp / 'ddp'}"
    # Batches of one clip: a batch's loss is the mean over its labelled clips, so the epoch loss depends on how clips
    # are grouped into batches, and one process and two group them alike only one by one.
    common = [
        *CLI,
        "test",
        *_data_args(tmp, 1),
        "--config",
        str(fits["light"]),
        f"--ckpt_path={checkpoints[0]}",
    ]
    one = _run([*common, f"--trainer.default_root_dir={tmp / 'test1'}"], tmp / "test1.db")
    two = _run([*common, *DDP_CPU, f"--trainer.default_root_dir={tmp / 'test2'}"], tmp / "test2.db")
    n_test = _split_size(one, "test")
    assert n_test % 2 == 1
    assert f"test: {n_test} samples evaluated over 2 processes" in two
    assert "evaluated more than once" not in two
    metrics_one = {k: v for k, v in _only_run(tmp / "test1.db").data.metrics.items() if k.startswith("test/")}
    metrics_two = {k: v for k, v in _only_run(tmp / "test2.db").data.metrics.items() if k.startswith("test/")}
    # The fit's own test (after_fit: 2 processes, 9 clips per batch, the same best checkpoint) is a third evaluation;
    # only its losses may differ, by the grouping into batches.
    metrics_fit = {k: v for k, v in _only_run(tmp / "ddp.db").data.metrics.items() if k.startswith("test/")}
    assert "test/loss" in metrics_one and set(metrics_one) == set(metrics_two) == set(metrics_fit)
    # Same weights in eval mode: only float summation order differs (batched convolutions, state reductions).
    for name, value in metrics_one.items():
        assert metrics_two[name] == pytest.approx(value, rel=1e-5, abs=1e-5), name
        if not name.startswith("test/loss"):
            assert metrics_fit[name] == pytest.approx(value, rel=1e-5, abs=1e-5), name


def _rank_buffer(clips: list[int], hr_labelled: list[bool]) -> dict[str, list[np.ndarray]]:
    """What `_collect` keeps on one rank for one batch: HR predictions equal to 10 x the clip index."""
    order = np.asarray(clips, dtype=np.int64)
    mask = np.asarray(hr_labelled)
    return {
        "order": [order],
        "hr_pred_bpm": [10.0 * order[mask]],
        "hr_true_bpm": [10.0 * order[mask]],
        "hr_order": [order[mask]],
    }


def test_gathered_eval_outputs_are_back_in_dataset_order() -> None:
    # Two ranks of an unrepeated sampler: rank 0 has clips 0, 2, 4, rank 1 clips 1, 3; clip 3 has no HR label.
    buffers = [_rank_buffer([0, 2, 4], [True, True, True]), _rank_buffer([1, 3], [True, False])]
    outputs, samples, repeated = _merge_eval_buffers(buffers)
    assert samples == 5 and repeated == 0
    assert outputs["hr_pred_bpm"].tolist() == [0.0, 10.0, 20.0, 40.0]
    assert len(outputs["stress_true"]) == 0  # a task no batch had: empty, still present
    # A padding sampler's repeat (clip 0 again on rank 1) is counted.
    _, samples, repeated = _merge_eval_buffers([_rank_buffer([0, 2], [True] * 2), _rank_buffer([1, 0], [True] * 2)])
    assert samples == 4 and repeated == 1


# -- a multi-corpus evaluation under DDP, with a rank that saw no sample of a collection ----------------------------
def _mixed(tmp: Path) -> MixedDataModule:
    """Two SWELL-KW-like physiology corpora (no video: only the stress head runs, fast), each split of a corpus in one
    batch: in evaluation rank 0 gets corpus a's batch and rank 1 corpus b's, so each per-corpus metric collection is
    updated on one rank only and must still be computed on both (torchmetrics gathers the states collectively)."""
    corpora = {}
    for name, subjects, seed in (("a", 6, 0), ("b", 3, 1)):
        write_swell_csv(tmp / name, subjects=subjects, seed=seed)
        split = {"val_subjects": [f"PP{subjects - 1}"], "test_subjects": [f"PP{subjects}"]}
        corpora[name] = {"corpus": "swell_kw", "root": str(tmp / name), "corpus_options": split, "batch_size": 64}
    return MixedDataModule(corpora, cache_dir=str(tmp / "cache"), progress=False)


def _validate(tmp: Path, devices: int) -> dict[str, float]:
    pl.seed_everything(0)
    mixed = _mixed(tmp)
    module = MultiTaskStressModule(net=SMALL_NET, roi_frames=mixed.roi_frames, corpora=mixed.corpus_names)
    strategy = DDPStrategy(start_method="spawn", timeout=timedelta(seconds=60)) if devices > 1 else "auto"
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (results,) = trainer.validate(module, datamodule=mixed, verbose=False)
    return results


def test_mixed_corpora_metrics_sync_when_a_rank_saw_no_sample_of_a_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the spawned ranks inherit it
    single = _validate(tmp_path / "one", devices=1)
    ddp = _validate(tmp_path / "two", devices=2)
    assert {"val/loss", "val/stress_f1", "val/a/stress_f1", "val/b/stress_f1"} <= set(single)
    assert set(ddp) == set(single)
    # The same batches (the corpus batch sampler deals whole batches to the ranks): the same values.
    for name, value in single.items():
        assert ddp[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


# -- two processes building one cache folder --------------------------------------------------------------------------
BUILDER = """
import sys, time
from pathlib import Path
import numpy as np
from stress_lightning.data.cache import ClipCache, Preprocessing
from stress_lightning.data.corpora.base import Corpus
from stress_lightning.data.items import ImageFile, Item

class Faces(Corpus):
    name = "faces"
    prealigned = True

    def read(self, root):
        return [Item(f"img/{i}", f"S{i}", "train", ImageFile(root / f"{i}.png")) for i in range(4)]

    def load_image(self, item):
        time.sleep(0.5)  # a slow decode: the builds overlap
        return np.full((24, 24, 3), 100, np.uint8)

root = Path(sys.argv[1])
corpus = Faces(on_error="fail")
cache = ClipCache(root / "cache", "faces", "fingerprint", Preprocessing(face_size=16))
(root / f"ready-{sys.argv[2]}").touch()
while not (root / "go").exists():
    time.sleep(0.01)
print("built", cache.build(corpus, corpus.read(root), progress=False).built, flush=True)
"""


def test_concurrent_builders_of_one_cache_decode_each_item_once(tmp_path: Path) -> None:
    # Two jobs (or ranks of two jobs) on one cache folder on shared storage, started at the same moment: one holds the
    # build lock and decodes the 4 images, the other waits, then finds nothing left to build.
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILDER, str(tmp_path), str(k)],
            cwd=REPO,
            env=_env(tmp_path / "unused.db"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    built = sorted(int(out.split()[-1]) for out, _ in outputs)
    assert built == [0, 4], outputs
    assert sum("another process is building this cache" in err for _, err in outputs) == 1, outputs
    (folder,) = (tmp_path / "cache").iterdir()
    assert sorted(p.name for p in (folder / "stills").glob("chunk_*.json")) == ["chunk_00000.json"]


def test_export_and_registry_skip_under_a_sharded_strategy_instead_of_hanging(tmp_path: Path) -> None:
    """Under FSDP the in-memory model is sharded: rank 0 running it alone would wait forever in a gather. The export
    and registry callbacks step aside with a warning naming the checkpoint; the provenance callback still logs."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy

    from stress_lightning.export.callback import ExportCallback
    from stress_lightning.tracking.callbacks import MLflowRunCallback, RegistryCallback, sharded_strategy
    from stress_lightning.tracking.store import StressMLFlowLogger

    logger = StressMLFlowLogger(experiment_name="sharded", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    trainer = SimpleNamespace(
        is_global_zero=True,
        loggers=[logger],
        # Built without __init__: Lightning refuses FSDP on a machine without CUDA.
        strategy=FSDPStrategy.__new__(FSDPStrategy),
        checkpoint_callback=SimpleNamespace(best_model_path="outputs/x/best.ckpt"),
    )
    assert sharded_strategy(trainer) == "FSDPStrategy"
    for callback in (ExportCallback(), RegistryCallback()):
        with pytest.warns(UserWarning, match=r"skipped under FSDPStrategy.*--ckpt_path outputs/x/best.ckpt"):
            assert callback._run(trainer) is None
    assert MLflowRunCallback()._run(trainer) is not None
    trainer.strategy = DDPStrategy()
    assert sharded_strategy(trainer) is None
    assert ExportCallback()._run(trainer) is not None

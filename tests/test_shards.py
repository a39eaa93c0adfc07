"""Clip shards (litdata) on the tiny synthetic config: written through `data shards`, they stream back the cache's
samples bit for bit, parts merge into the single write, the stream shuffles across shards, resumes mid-epoch (also
through Lightning's fit loop), splits exactly across 2 DDP processes, trains a CLI fit, and bad input is named."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from stress_lightning.commands import run as run_command
from stress_lightning.commands.data import build_datamodule
from stress_lightning.data.datamodules import ClipDataModule
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.shards import (
    MANIFEST,
    ShardedClipDataset,
    ShardError,
    ShardLoader,
    merge_parts,
    read_manifest,
    shard_loader,
    write_shards,
)
from stress_lightning.data.transforms import face_train_transform

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["conf/synthetic.yaml", "conf/tiny.yaml"]


def _overrides(tmp: Path) -> list[str]:
    return [f"--data.init_args.root={tmp / 'corpus'}", f"--data.init_args.cache_dir={tmp / 'cache'}"]


def _config_args(tmp: Path) -> list[str]:
    return [*(arg for path in CONFIGS for arg in ("--config", str(REPO / path))), *_overrides(tmp)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The tiny config's corpus and cache, and its shards written by the CLI (2 writers, ~2 samples a chunk)."""
    tmp = tmp_path_factory.mktemp("shards")
    out = tmp / "set"
    code = run_command(
        ["data", "shards", *_config_args(tmp), "--out", str(out), "--workers", "2", "--chunk-bytes", "250KB", "--quiet"]
    )
    assert code == 0
    configs = [str(REPO / path) for path in CONFIGS]
    reference = build_datamodule(configs, [*_overrides(tmp), "--data.init_args.augment=false"])
    reference.progress = False
    reference.setup("fit")
    return SimpleNamespace(tmp=tmp, url=out, reference=reference, manifest=read_manifest(out))


def _by_index(samples) -> dict[int, dict[str, torch.Tensor]]:
    return {int(s["clip_index"]): s for s in samples}


def _assert_same_sample(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        assert torch.equal(got[key], value), key


def _epoch(loader) -> list[int]:
    return [int(i) for batch in loader for i in batch["clip_index"]]


# -- writing and reading back --------------------------------------------------------------------------------------
def test_manifest_records_corpus_taxonomy_geometry_and_counts(tiny: SimpleNamespace) -> None:
    ref, manifest = tiny.reference, tiny.manifest
    assert manifest["corpus"] == "synthetic" and manifest["fingerprint"] == ref.fingerprint
    assert manifest["taxonomy"] == {"expression_classes": ref.expression_classes, "stress_levels": ref.stress_levels}
    assert manifest["geometry"] == {
        "fps": 25.0,
        "roi_frames": 100,
        "face_frames": 8,
        "face_span_s": 1.4,
        "face_size": 32,
        "roi_size": 8,
    }
    for split, dataset in ref.datasets.items():
        entry = manifest["splits"][split]
        assert entry["samples"] == len(dataset) == entry["clips"] and entry["stills"] == 0
        assert entry["subjects"] == sorted({it.subject_id for it in dataset.items})
        assert sum(entry["expression"].values()) == int(dataset.labels.expression_mask.sum())
    chunks = json.loads((tiny.url / "train" / "index.json").read_text())["chunks"]
    assert len(chunks) >= 6  # ~2 samples a chunk: a stream over many shards


def test_round_trip_is_bit_for_bit(tiny: SimpleNamespace) -> None:
    for split, dataset in tiny.reference.datasets.items():
        sharded = ShardedClipDataset(str(tiny.url), split, shuffle=False)
        got = _by_index(sharded[i] for i in range(len(sharded)))
        assert sorted(got) == list(range(len(dataset)))
        for index, sample in got.items():
            _assert_same_sample(sample, dataset[index])


def test_augmentation_is_applied_when_reading_as_on_the_cache(tiny: SimpleNamespace) -> None:
    """Training on shards and on the cache draw the same augmented samples from the same random state."""
    ref = tiny.reference
    cached = ref.datasets["train"]
    cached.face_transform, cached.roi_augment = face_train_transform("default"), True
    try:
        sharded = ShardedClipDataset(
            str(tiny.url), "train", shuffle=False, face_transform=cached.face_transform, roi_augment=True
        )
        for i in range(len(sharded)):
            torch.manual_seed(i)
            got = sharded[i]
            torch.manual_seed(i)
            _assert_same_sample(got, cached[int(got["clip_index"])])
        torch.manual_seed(0)
        plain = ShardedClipDataset(str(tiny.url), "train", shuffle=False)[0]
        assert not torch.equal(plain["frames"], sharded[0]["frames"])  # the augmentation did act
    finally:
        cached.face_transform, cached.roi_augment = None, False


def test_parts_written_apart_and_merged_equal_one_write(tiny: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "parts"
    for i in range(3):
        write_shards(tiny.reference, out, part=(i, 3), chunk_bytes="250KB", compression="zstd", progress=False)
    assert sorted(p.name for p in (out / "parts").iterdir()) == [f"part-{i}-of-3.json" for i in range(3)]
    with pytest.raises(ShardError, match="missing: its parts were never merged"):
        read_manifest(out)
    counts = merge_parts(out, progress=False)
    assert counts == {split: len(d) for split, d in tiny.reference.datasets.items()}
    manifest = read_manifest(out)
    assert not (out / "parts").exists() and not list(out.glob("*/part-*"))
    for split, entry in manifest["splits"].items():
        ranges = [p["range"] for p in entry["parts"]]
        assert ranges[0][0] == 0 and ranges[-1][1] == entry["samples"] and len(ranges) == 3
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        merged = _by_index(ShardedClipDataset(str(out), split, shuffle=False))
        single = _by_index(ShardedClipDataset(str(tiny.url), split, shuffle=False))
        assert sorted(merged) == sorted(single)
        for index, sample in single.items():
            _assert_same_sample(merged[index], sample)
    keep = {k: v for k, v in tiny.manifest.items() if k not in ("splits", "storage")}
    assert {k: v for k, v in manifest.items() if k not in ("splits", "storage")} == keep


def test_a_missing_part_is_named(tiny: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "gap"
    for i in (0, 2):
        write_shards(tiny.reference, out, splits=["val"], part=(i, 3), progress=False)
    with pytest.raises(ShardError, match=r"part-1-of-3\.json.*missing part\(s\) \[1\] of 3"):
        merge_parts(out, progress=False)


# -- streaming ---------------------------------------------------------------------------------------------------
def test_the_stream_shuffles_across_shards_each_epoch(tiny: SimpleNamespace) -> None:
    total = tiny.manifest["splits"]["train"]["samples"]
    written = _epoch(shard_loader(ShardedClipDataset(str(tiny.url), "train", shuffle=False), 4, 0))
    # Stored in a seeded random order: a chunk is not a run of consecutive clips of one session.
    assert sorted(written) == list(range(total)) and written != sorted(written)
    assert tiny.manifest["splits"]["train"]["write_order"] == {"shuffled": True, "seed": 0}
    sizes = [c["chunk_size"] for c in json.loads((tiny.url / "train" / "index.json").read_text())["chunks"]]
    chunk_of = {clip: int(np.searchsorted(np.cumsum(sizes), pos, side="right")) for pos, clip in enumerate(written)}

    def epochs(seed: int, n: int = 2) -> list[list[int]]:
        loader = shard_loader(ShardedClipDataset(str(tiny.url), "train", shuffle=True, seed=seed), 4, 0)
        return [_epoch(loader) for _ in range(n)]

    first, second = epochs(0)
    for order in (first, second):
        assert sorted(order) == list(range(total))  # every sample once per epoch
        assert order != written
        visited = [chunk_of[clip] for clip in order]
        chunks = [c for k, c in enumerate(visited) if k == 0 or c != visited[k - 1]]
        assert chunks != sorted(chunks)  # the chunks themselves come in another order
    assert first != second and epochs(1, 1)[0] != first
    assert epochs(0) == [first, second]  # the same seed, the same orders


@pytest.mark.parametrize("workers", [0, 2])
def test_the_loader_resumes_mid_epoch(tiny: SimpleNamespace, workers: int) -> None:
    def loader() -> ShardLoader:
        return shard_loader(ShardedClipDataset(str(tiny.url), "train", shuffle=True, seed=3), 2, workers)

    full = _epoch(loader())
    first = loader()
    seen = []
    for k, batch in enumerate(first):
        seen += batch["clip_index"].tolist()
        if k == 2:
            break
    state = first.state_dict()
    second = loader()
    second.load_state_dict(state)
    rest = _epoch(second)
    assert seen + rest == full and len(set(seen + rest)) == len(full)
    assert sorted(_epoch(second)) == sorted(full)  # the next epoch is whole again


class _Recorder(pl.LightningModule):
    """Records the clips each training step sees; sizes its schedule from the trainer as the real module does (that
    builds the training loader before a checkpoint's state is restored)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["clip_index"].tolist())
        return (self.weight * batch["hr_bpm"].mean()).sum()

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.0)
        self.total_steps = int(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)}


def test_a_fit_resumed_mid_epoch_continues_the_epoch(tiny: SimpleNamespace, tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    def datamodule() -> ClipDataModule:
        # The corpus root does not exist: with shards nothing reads it.
        return ClipDataModule(
            root=str(tmp_path / "absent"),
            shards=str(tiny.url),
            clip_seconds=4.0,
            face_size=32,
            batch_size=4,
            num_workers=2,
            augment=False,
            progress=False,
        )

    def trainer(**kwargs) -> pl.Trainer:
        return pl.Trainer(
            default_root_dir=tmp_path,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            **kwargs,
        )

    full = _Recorder()
    trainer(max_epochs=2, enable_checkpointing=False).fit(full, datamodule())
    interrupted = _Recorder()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3)
    trainer(max_steps=3, callbacks=[checkpoint]).fit(interrupted, datamodule())
    resumed = _Recorder()
    trainer(max_epochs=2, enable_checkpointing=False).fit(
        resumed, datamodule(), ckpt_path=str(next((tmp_path / "ckpt").glob("*.ckpt")))
    )
    assert len(interrupted.seen) == 3 and len(full.seen) == 8
    # The interrupted epoch goes on where it stopped (no batch skipped or repeated), the next one is the same too.
    assert interrupted.seen + resumed.seen == full.seen
    assert not (tmp_path / "absent").exists()


# One DDP rank: a process of its own that imports only what it uses (a spawned copy of this module would import
# pytest, Lightning and the fixtures first).
DDP_RANK = """
import json, sys
from pathlib import Path
import torch.distributed as dist
from stress_lightning.data.shards import ShardedClipDataset, shard_loader

rank, world, url, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world)
result = {}
for split, shuffle, drop_last in (("train", True, None), ("val", False, False)):
    loader = shard_loader(ShardedClipDataset(url, split, shuffle=shuffle, drop_last=drop_last), 2, 0)
    result[split] = {"len": len(loader), "epochs": [[b["clip_index"].tolist() for b in loader] for _ in "ab"]}
Path(out, f"rank{rank}.json").write_text(json.dumps(result))
dist.destroy_process_group()
"""


def test_ddp_ranks_split_each_epoch_exactly(tiny: SimpleNamespace, tmp_path: Path) -> None:
    """2 processes (gloo): litdata hands each rank its own samples, the same number of training batches on each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = [
        subprocess.Popen([sys.executable, "-c", DDP_RANK, str(r), "2", str(tiny.url), str(tmp_path)], env=env)
        for r in range(2)
    ]
    assert [p.wait(timeout=300) for p in ranks] == [0, 0]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    total = {s: tiny.manifest["splits"][s]["samples"] for s in ("train", "val")}
    for epoch in range(2):
        train = [r["train"]["epochs"][epoch] for r in ranks]
        assert len(train[0]) == len(train[1]) == ranks[0]["train"]["len"] == ranks[1]["train"]["len"]
        assert all(len(b) == 2 for batches in train for b in batches)  # whole batches only
        seen = [i for batches in train for b in batches for i in b]
        assert len(seen) == len(set(seen)) and total["train"] - len(seen) < 2 * 2  # dropped: less than a batch a rank
        val = [i for r in ranks for b in r["val"]["epochs"][epoch] for i in b]
        assert sorted(val) == list(range(total["val"]))  # evaluation: every sample exactly once
    assert ranks[0]["train"]["epochs"][0] != ranks[0]["train"]["epochs"][1]


# -- the datamodule and the CLI ------------------------------------------------------------------------------------
def test_the_datamodule_streams_shards_without_the_corpus(tiny: SimpleNamespace, tmp_path: Path) -> None:
    from lightning.fabric.utilities.data import has_iterable_dataset

    dm = ClipDataModule(
        root=str(tmp_path / "absent"),
        cache_dir=str(tmp_path / "cache"),
        shards=str(tiny.url),
        clip_seconds=4.0,
        face_size=32,
        batch_size=4,
        progress=False,
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.fingerprint == tiny.manifest["fingerprint"] and set(dm.datasets) == {"train", "val", "test"}
    assert dm.stats["val"].clips == tiny.manifest["splits"]["val"]["samples"]
    train, val = dm.train_dataloader(), dm.val_dataloader()
    # Lightning adds a DistributedSampler only to loaders over map-style datasets: litdata splits this one itself.
    assert isinstance(train, ShardLoader) and has_iterable_dataset(train) and has_iterable_dataset(val)
    batch = next(iter(train))
    assert batch["frames"].shape == (4, 8, 3, 32, 32) and batch["roi"].shape == (4, 100, 3, 8, 8)
    assert _epoch(val) == list(range(tiny.manifest["splits"]["val"]["samples"]))  # in order, all of it
    # Under DDP litdata deals evaluation batches to the ranks: batches shrink so that each rank gets one.
    dm.trainer = SimpleNamespace(world_size=4)
    assert dm.val_dataloader().batch_size == 1 and dm.train_dataloader().batch_size == 4
    assert not (tmp_path / "absent").exists() and not (tmp_path / "cache").exists()


def test_fit_through_the_cli_on_shards(tiny: SimpleNamespace, tmp_path: Path, store_uri: str) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "PYTHONUNBUFFERED": "1"}
    args = [arg for path in CONFIGS for arg in ("--config", path)]
    proc = subprocess.run(
        [sys.executable, "-m", "stress_lightning.cli", "fit", *args]
        + [
            f"--data.init_args.shards={tiny.url}",
            f"--data.init_args.root={tmp_path / 'absent'}",
            f"--data.init_args.cache_dir={tmp_path / 'cache'}",
            f"--trainer.default_root_dir={tmp_path / 'out'}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    from mlflow import MlflowClient

    client = MlflowClient(store_uri)
    runs = client.search_runs([client.get_experiment_by_name("stress-lightning").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.tags["data.fingerprint"] == tiny.manifest["fingerprint"]
    assert "test/loss" in run.data.metrics and "train/loss" in run.data.metrics
    assert run.data.params["data.init_args.shards"] == str(tiny.url)
    assert not (tmp_path / "absent").exists() and not (tmp_path / "cache").exists()
    # The MLflow dataset inputs point at the shard set, not at the corpus folder this machine does not have.
    sources = {json.loads(d.dataset.source)["uri"] for d in run.inputs.dataset_inputs}
    assert sources == {str(Path(tiny.url).resolve())}


def test_the_cli_names_usage_mistakes(tiny: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    config = _config_args(tiny.tmp)
    cases = {
        "--config FILE is required": ["--out", "x"],
        "--part '3/2'": [*config, "--out", "x", "--part", "3/2"],
        "--part 'half'": [*config, "--out", "x", "--part", "half"],
        "--merge takes only --out": ["--merge", "--out", "x", "--part", "0/2"],
        "--compression 'lz4'": [*config, "--out", "x", "--compression", "lz4"],
        "--chunk-bytes 'lots'": [*config, "--out", "x", "--chunk-bytes", "lots"],
        "--workers 0": [*config, "--out", "x", "--workers", "0"],
        "unrecognized argument '--trainer.max_epochs=1'": [*config, "--out", "x", "--trainer.max_epochs=1"],
    }
    for expected, argv in cases.items():
        with pytest.raises(SystemExit) as exc:
            run_command(["data", "shards", *argv])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "error:" in err and expected in err, (expected, err)
    assert run_command(["data", "shards", "--merge", "--out", str(tiny.tmp / "nothing")]) == 1
    assert "no parts to merge" in capsys.readouterr().err
    assert run_command(["data", "shards", *config, "--out", str(tiny.url), "--splits", "val", "--quiet"]) == 1
    assert "already holds shards" in capsys.readouterr().err


# -- bad input -----------------------------------------------------------------------------------------------------
def test_a_shard_set_that_does_not_fit_the_run_is_named(tiny: SimpleNamespace, tmp_path: Path) -> None:
    def setup(url: Path, **kwargs) -> None:
        options = {"clip_seconds": 4.0, "face_size": 32, "progress": False, **kwargs}
        ClipDataModule(root=str(tmp_path / "absent"), shards=str(url), **options).setup("fit")

    with pytest.raises(ShardError, match=r"expression_classes .*data\.init_args\.expression_classes"):
        setup(tiny.url, expression_classes=["happy", "neutral"])
    with pytest.raises(ShardError, match=r"stress_levels"):
        setup(tiny.url, stress_levels=["low", "high"])
    with pytest.raises(ShardError, match=r"face_size=32, the run has face_size=48"):
        setup(tiny.url, face_size=48)
    with pytest.raises(ShardError, match=r"roi_frames=100, the run has roi_frames=150"):
        setup(tiny.url, clip_seconds=6.0)
    with pytest.raises(ShardError, match=r"detector='mediapipe', the run has detector='haar'"):
        setup(tiny.url, detector="haar")
    with pytest.raises(ShardError, match=rf"{MANIFEST}: missing"):
        setup(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(tiny.url, broken)
    (broken / MANIFEST).write_text("{not json")
    with pytest.raises(ShardError, match="not valid JSON"):
        setup(broken)
    manifest = dict(tiny.manifest, version=99)
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="format version 99"):
        setup(broken)
    manifest = json.loads(json.dumps(tiny.manifest))
    manifest["splits"]["val"]["samples"] += 1
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=r"val: holds \d+ samples, the manifest says \d+"):
        setup(broken)
    with pytest.raises(ShardError, match="balanced_sampling"):
        setup(tiny.url, balanced_sampling=True)


def test_still_images_round_trip(tmp_path: Path) -> None:
    import test_corpora_images as images  # its FER-2013 writer (a module import: its tests are not collected again)

    rows = [
        (str(i % 7), usage, images.pixel_string(i)) for i, usage in enumerate(["Training"] * 6 + ["PublicTest"] * 3)
    ]
    images.write_fer_csv(tmp_path / "fer" / "fer2013.csv", rows)
    dm = ClipDataModule(
        corpus="fer2013",
        root=str(tmp_path / "fer"),
        cache_dir=str(tmp_path / "cache"),
        clip_seconds=4.0,
        face_size=32,
        augment=False,
        progress=False,
        workers=1,
    )
    assert write_shards(dm, tmp_path / "set", progress=False) == {"train": 6, "val": 3}
    manifest = read_manifest(tmp_path / "set")
    assert manifest["splits"]["train"]["stills"] == 6 and manifest["splits"]["train"]["clips"] == 0
    for split in ("train", "val"):
        got = _by_index(ShardedClipDataset(str(tmp_path / "set"), split, shuffle=False))
        assert sorted(got) == list(range(len(dm.datasets[split])))
        for index, sample in got.items():
            _assert_same_sample(sample, dm.datasets[split][index])
            assert sample["still"] and not sample["roi_mask"] and not sample["roi"].any()


def test_physiology_only_corpora_are_not_sharded(tmp_path: Path) -> None:
    import test_swell_kw as swell  # its SWELL-KW writer

    root = tmp_path / "swell_kw"
    swell.write_csv(root / "physiology_features.csv", swell.protocol_rows())
    dm = ClipDataModule(corpus="swell_kw", root=str(root), cache_dir=str(tmp_path / "cache"), progress=False)
    with pytest.raises(CorpusError, match="physiology records only"):
        write_shards(dm, tmp_path / "set", progress=False)
    assert not (tmp_path / "set").exists()


# -- object storage ------------------------------------------------------------------------------------------------
def test_streams_from_s3(tiny: SimpleNamespace, tmp_path: Path) -> None:
    """An S3 endpoint over plain http (moto's server, as a local MinIO would be): manifest and chunks come back."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e .[dev])")
    import boto3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        options = {
            "endpoint_url": f"http://127.0.0.1:{port}",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "region_name": "us-east-1",
        }
        s3 = boto3.client("s3", **options)
        s3.create_bucket(Bucket="clips")
        for path in tiny.url.rglob("*"):
            if path.is_file():
                s3.upload_file(str(path), "clips", f"tiny/{path.relative_to(tiny.url).as_posix()}")
        assert read_manifest("s3://clips/tiny", options)["fingerprint"] == tiny.manifest["fingerprint"]
        with pytest.raises(ShardError, match=r"s3://clips/nothing/shards\.json: missing"):
            read_manifest("s3://clips/nothing", options)
        local = _by_index(ShardedClipDataset(str(tiny.url), "val", shuffle=False))
        for workers in (0, 2):
            remote = ShardedClipDataset(
                "s3://clips/tiny",
                "val",
                shuffle=False,
                storage_options=options,
                cache_dir=str(tmp_path / f"c{workers}"),
            )
            got = {}
            for batch in shard_loader(remote, 2, workers):
                for k, index in enumerate(batch["clip_index"].tolist()):
                    got[index] = {key: value[k] for key, value in batch.items()}
            assert sorted(got) == sorted(local)
            for index, sample in local.items():
                _assert_same_sample(got[index], sample)
    finally:
        server.stop()


def test_write_refuses_an_object_store_url(tiny: SimpleNamespace) -> None:
    with pytest.raises(ShardError, match="local or shared folder"):
        write_shards(tiny.reference, "s3://bucket/prefix", progress=False)

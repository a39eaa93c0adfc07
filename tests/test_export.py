"""ONNX export and parity, TensorRT availability, and the ExportCallback on a real Trainer.test."""

from __future__ import annotations

import json
import os
import stat
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from mlflow import MlflowClient
from torch.utils.data import DataLoader, TensorDataset

from stress_lightning.data.taxonomy import BASIC_EXPRESSIONS as EXPRESSION_NAMES
from stress_lightning.data.taxonomy import STRESS_LEVELS as STRESS_NAMES
from stress_lightning.export.callback import ExportCallback
from stress_lightning.export.onnx import (
    FP16_ATOL,
    FP16_GATED_OUTPUTS,
    FP16_RTOL,
    OnnxParityError,
    check_expression_parity,
    check_onnx_parity,
    check_parity,
    convert_fp16,
    export_expression_onnx,
    export_onnx,
    onnx_session,
    read_spec_json,
)
from stress_lightning.export.tensorrt import (
    TensorRTRunner,
    build_engine,
    build_tensorrt_engine,
    build_with_trtexec,
    check_profiles,
    stream_profiles,
    tensorrt_available,
    trtexec_command,
)
from stress_lightning.inference.integrity import CHECKSUMS_TAG, UnverifiedModelWarning, sha256_file
from stress_lightning.inference.loading import onnx_spec, resolve_model
from stress_lightning.inference.spec import ModelSpec
from stress_lightning.models.net import MultiTaskNet
from stress_lightning.tracking.callbacks import MLflowRunCallback, RegistryCallback
from stress_lightning.tracking.registry import EXPORT_SHA256_TAGS, ModelRegistry
from stress_lightning.tracking.store import StressMLFlowLogger

ROI_FRAMES = 64
FACE_FRAMES = 4
FACE_SIZE = 32
ROI_SIZE = 8


def tiny_net(seed: int = 0) -> MultiTaskNet:
    torch.manual_seed(seed)
    return MultiTaskNet(
        spatial_backbone="conv4", temporal_backbone="c3d_small", rppg_backbone="rppg_cnn", roi_frames=ROI_FRAMES
    ).eval()


def clips(batch_size: int, seed: int = 0, face_size: int = FACE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(ROI_FRAMES, dtype=torch.float32) / 25.0
    # A 72 bpm pulse on top of noise, so the spectral heart rate is not sitting on a flat spectrum.
    pulse = 0.003 * torch.sin(2 * torch.pi * 1.2 * t)[None, :, None, None, None]
    frames = torch.rand(batch_size, FACE_FRAMES, 3, face_size, face_size, generator=gen)
    roi = 0.5 + pulse + 0.002 * torch.rand(batch_size, ROI_FRAMES, 3, ROI_SIZE, ROI_SIZE, generator=gen)
    return frames, roi


def test_onnx_export_is_one_file_with_named_io_and_dynamic_batch(tmp_path: Path) -> None:
    net = tiny_net()
    path = export_onnx(net, clips(1), tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no external weights
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["frames", "roi"]
    assert [o.name for o in model.graph.output] == list(MultiTaskNet.OUTPUT_NAMES)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    for batch_size in (1, 3):
        diffs = check_parity(net, path, clips(batch_size, seed=batch_size), atol=1e-3)
        assert set(diffs) == set(MultiTaskNet.OUTPUT_NAMES)
        assert max(diffs.values()) <= 1e-3
    hr = onnx_session(path).run(["hr_bpm"], {k: v.numpy() for k, v in zip(("frames", "roi"), clips(3), strict=True)})
    assert hr[0].shape == (3,)


def test_onnx_dynamic_spatial_accepts_other_face_sizes(tmp_path: Path) -> None:
    net = tiny_net()
    path = export_onnx(net, clips(1), tmp_path / "model.onnx", dynamic_spatial=True)
    diffs = check_parity(net, path, clips(2, face_size=48), atol=1e-3)
    assert max(diffs.values()) <= 1e-3


def test_parity_failure_names_the_outputs_and_bound(tmp_path: Path) -> None:
    net = tiny_net()
    path = export_onnx(net, clips(1), tmp_path / "model.onnx")
    drifted = tiny_net(seed=1)  # same architecture, other weights: the file no longer matches
    with pytest.raises(OnnxParityError, match=r"differ by more than atol=0\.001.*expression_logits="):
        check_parity(drifted, path, clips(2), atol=1e-3)


def test_export_rejects_a_net_without_the_export_contract(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="OUTPUT_NAMES and forward_tuple"):
        export_onnx(torch.nn.Linear(2, 2), clips(1), tmp_path / "x.onnx")


def tiny_spec(**overrides) -> ModelSpec:
    geometry = {"fps": 25.0, "roi_frames": ROI_FRAMES, "face_frames": FACE_FRAMES, "face_size": FACE_SIZE}
    return ModelSpec(**{**geometry, "roi_size": ROI_SIZE, **overrides})


def test_expression_graph_matches_pytorch_and_the_full_graph(tmp_path: Path) -> None:
    net = tiny_net()
    path = export_expression_onnx(net, clips(1)[0], tmp_path / "expression.onnx")
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["frames"]
    assert [o.name for o in model.graph.output] == ["expression_logits", "expression_probs"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for batch_size in (1, 3):
        diffs = check_expression_parity(net, path, clips(batch_size, seed=batch_size)[0], atol=1e-4)
        assert set(diffs) == {"expression_logits", "expression_probs"} and max(diffs.values()) <= 1e-4

    # The stream swaps the full graph for this one on every frame: the answers must be the same.
    full = export_onnx(net, clips(1), tmp_path / "model.onnx")
    frames, roi = clips(2, seed=5)
    (full_probs,) = onnx_session(full).run(["expression_probs"], {"frames": frames.numpy(), "roi": roi.numpy()})
    (probs,) = onnx_session(path).run(["expression_probs"], {"frames": frames.numpy()})
    np.testing.assert_allclose(probs, full_probs, atol=1e-6)

    with pytest.raises(OnnxParityError, match=r"expression\.onnx: ONNX and PyTorch outputs differ.*expression_logits="):
        check_expression_parity(tiny_net(seed=1), path, frames, atol=1e-4)


def test_fp16_variant_is_half_precision_inside_float32_outside(tmp_path: Path) -> None:
    net = tiny_net()
    fp32 = export_onnx(net, clips(1), tmp_path / "model.onnx", spec_json=tiny_spec().to_json())
    fp16 = convert_fp16(fp32, tmp_path / "model_fp16.onnx")
    model = onnx.load(str(fp16))
    float_type = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [float_type] * 2
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {float_type}
    weights = [t for t in model.graph.initializer if t.dims and np.prod(t.dims) > 16]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert fp16.stat().st_size < 0.6 * fp32.stat().st_size
    assert read_spec_json(fp16) == tiny_spec().to_json()  # the metadata survives the conversion

    for batch_size in (1, 2):
        inputs = clips(batch_size, seed=batch_size)
        diffs = check_parity(net, fp16, inputs, atol=FP16_ATOL, rtol=FP16_RTOL)
        # Really half precision: far from float32 agreement, within the FP16 bound.
        assert max(diffs.values()) > 1e-4
        feed = {"frames": inputs[0].numpy(), "roi": inputs[1].numpy()}
        assert check_onnx_parity(fp32, fp16, feed).keys() == diffs.keys()
    with pytest.raises(OnnxParityError, match="model_fp16.onnx"):
        check_parity(net, fp16, clips(2), atol=1e-6, rtol=0.0)


def test_spec_metadata_round_trip_and_mismatch(tmp_path: Path) -> None:
    net = tiny_net()
    spec = tiny_spec(expression_names=("a", "b", "c", "d", "e", "f", "g"), face_margin=0.2)
    full = export_onnx(net, clips(1), tmp_path / "model.onnx", spec_json=spec.to_json())
    expression = export_expression_onnx(net, clips(1)[0], tmp_path / "expression.onnx", spec_json=spec.to_json())
    for path in (full, expression):
        assert ModelSpec.from_json(read_spec_json(path)) == spec
        assert onnx_spec(path) == spec  # what the stream's loader reads
    assert read_spec_json(export_onnx(net, clips(1), tmp_path / "bare.onnx")) is None

    with pytest.raises(ValueError, match="roi_frames=200 but the input has 64"):
        export_onnx(net, clips(1), tmp_path / "x.onnx", spec_json=tiny_spec(roi_frames=200).to_json())
    with pytest.raises(ValueError, match="face_size=64 but the input has 32"):
        export_expression_onnx(net, clips(1)[0], tmp_path / "y.onnx", spec_json=tiny_spec(face_size=64).to_json())


def test_tensorrt_skipped_with_a_reason_here(tmp_path: Path) -> None:
    available, reason = tensorrt_available()
    if available:
        pytest.skip(f"TensorRT is usable here ({reason}); the skip path is not reachable")
    assert "tensorrt" in reason.lower() or "cuda" in reason.lower()
    with pytest.raises(RuntimeError, match="cannot build a TensorRT engine"):
        build_tensorrt_engine(tmp_path / "missing.onnx", tmp_path / "x.engine")
    with pytest.raises(RuntimeError, match="cannot run a TensorRT engine: " + reason[:20]):
        TensorRTRunner(tmp_path / "x.engine")


def test_build_engine_names_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    available, reason = tensorrt_available()
    if available:
        pytest.skip(f"TensorRT is usable here ({reason}); the missing-TensorRT path is not reachable")
    monkeypatch.setenv("PATH", str(tmp_path))  # no trtexec either
    profiles = stream_profiles(FACE_FRAMES, FACE_SIZE, ROI_FRAMES, ROI_SIZE)
    with pytest.raises(RuntimeError, match="tensorrt is not installed.*trtexec` is not on PATH"):
        build_engine(tmp_path / "model.onnx", tmp_path / "x.engine", profiles)
    with pytest.raises(RuntimeError, match="`trtexec` is not on PATH"):
        build_engine(tmp_path / "model.onnx", tmp_path / "x.engine", profiles, builder="trtexec")
    with pytest.raises(ValueError, match="builder must be"):
        build_engine(tmp_path / "model.onnx", tmp_path / "x.engine", profiles, builder="tvm")


def test_stream_profiles_cover_batch_one_to_max() -> None:
    profiles = stream_profiles(face_frames=8, face_size=64, roi_frames=200, roi_size=8, max_batch=4)
    assert profiles == {
        "frames": ((1, 8, 3, 64, 64), (1, 8, 3, 64, 64), (4, 8, 3, 64, 64)),
        "roi": ((1, 200, 3, 8, 8), (1, 200, 3, 8, 8), (4, 200, 3, 8, 8)),
    }
    assert list(stream_profiles(8, 64, None, None)) == ["frames"]  # the expression graph
    with pytest.raises(ValueError, match="opt_batch <= max_batch"):
        stream_profiles(8, 64, 200, 8, max_batch=2, opt_batch=4)
    with pytest.raises(ValueError, match="face_size=0"):
        stream_profiles(8, 0, 200, 8)
    with pytest.raises(ValueError, match=r"input_shapes\['roi'\]: need min <= opt <= max"):
        check_profiles({"roi": ((2, 200), (1, 200), (4, 200))})
    with pytest.raises(ValueError, match="ranks differ"):
        check_profiles({"frames": ((1, 3), (1, 3, 3), (2, 3))})


def test_trtexec_command_line(tmp_path: Path) -> None:
    profiles = stream_profiles(face_frames=8, face_size=64, roi_frames=200, roi_size=8, max_batch=4)
    command = trtexec_command("m.onnx", "m.engine", profiles, timing_cache="t.cache", workspace_bytes=1 << 30)
    assert command == [
        "trtexec",
        "--onnx=m.onnx",
        "--saveEngine=m.engine",
        "--fp16",
        "--timingCacheFile=t.cache",
        "--minShapes=frames:1x8x3x64x64,roi:1x200x3x8x8",
        "--optShapes=frames:1x8x3x64x64,roi:1x200x3x8x8",
        "--maxShapes=frames:4x8x3x64x64,roi:4x200x3x8x8",
        "--memPoolSize=workspace:1024M",
        "--skipInference",
    ]
    plain = trtexec_command("m.onnx", "m.engine", profiles, fp16=False, workspace_bytes=None)
    assert "--fp16" not in plain and not any(a.startswith(("--timingCacheFile", "--memPoolSize")) for a in plain)


def _stub_trtexec(folder: Path, body: str) -> Path:
    """A stand-in executable named trtexec (no TensorRT here): it checks what `build_with_trtexec` hands it."""
    exe = folder / "trtexec"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_build_with_trtexec_runs_the_command_and_reports_its_log(tmp_path: Path) -> None:
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"onnx")
    profiles = stream_profiles(FACE_FRAMES, FACE_SIZE, ROI_FRAMES, ROI_SIZE)
    # Writes the engine named by --saveEngine, and its arguments beside it.
    ok = _stub_trtexec(
        tmp_path,
        'for a in "$@"; do echo "$a" >> "$(dirname "$0")/args.txt"; case "$a" in --saveEngine=*) '
        'echo engine > "${a#--saveEngine=}";; esac; done',
    )
    engine = build_with_trtexec(onnx_path, tmp_path / "out" / "m.engine", profiles, trtexec=str(ok))
    assert engine.read_text() == "engine\n"
    assert (tmp_path / "args.txt").read_text().splitlines() == trtexec_command(
        onnx_path, engine, profiles, trtexec=str(ok)
    )[1:]

    failing = tmp_path / "bad"
    failing.mkdir()
    bad = _stub_trtexec(failing, 'echo "[E] Error[4]: IShuffleLayer: reshape failed" >&2; exit 1')
    with pytest.raises(RuntimeError, match=r"status 1 .*no engine written.*\n.*IShuffleLayer: reshape failed"):
        build_with_trtexec(onnx_path, tmp_path / "x.engine", profiles, trtexec=str(bad))
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        build_with_trtexec(tmp_path / "nope.onnx", tmp_path / "x.engine", profiles, trtexec=str(ok))
    assert os.access(ok, os.X_OK)


class _TinyStressModule(LightningModule):
    """The LightningModule side of the callback contract, on random labelled clips."""

    def __init__(self, stress_f1: float, roi_frames: int = ROI_FRAMES) -> None:
        super().__init__()
        # The geometry the model spec (ONNX metadata) is built from, as MultiTaskStressModule saves it.
        self.save_hyperparameters(
            {"fps": 25.0, "roi_frames": roi_frames, "face_frames": FACE_FRAMES, "face_size": FACE_SIZE, "roi_size": 8}
        )
        self.net = tiny_net()
        self.expression_names = list(EXPRESSION_NAMES)
        self.stress_names = list(STRESS_NAMES)
        self.stress_f1 = stress_f1
        self.last_eval_outputs: dict[str, dict[str, np.ndarray]] = {}

    def example_input(self, batch_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        return clips(batch_size)

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        frames, roi, expression, stress, hr_bpm = batch
        out = self.net(frames, roi)
        self.log("test/stress_f1", self.stress_f1)
        self.last_eval_outputs["test"] = {
            "expression_pred": out["expression_logits"].argmax(1).numpy(),
            "expression_true": expression.numpy(),
            "stress_pred": out["stress_logits"].argmax(1).numpy(),
            "stress_true": stress.numpy(),
            "hr_pred_bpm": out["hr_bpm"].numpy(),
            "hr_true_bpm": hr_bpm.numpy(),
        }


def _test_loader() -> DataLoader:
    frames, roi = clips(6, seed=3)
    gen = torch.Generator().manual_seed(4)
    expression = torch.randint(0, len(EXPRESSION_NAMES), (6,), generator=gen)
    stress = torch.randint(0, len(STRESS_NAMES), (6,), generator=gen)
    hr_bpm = 60 + 30 * torch.rand(6, generator=gen)
    return DataLoader(TensorDataset(frames, roi, expression, stress, hr_bpm), batch_size=6)


def test_callbacks_export_register_and_tag_the_run(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store'}/mlflow.db"
    logger = StressMLFlowLogger(experiment_name="export-test", tracking_uri=uri, run_name="cb")
    trainer = Trainer(
        logger=logger,
        callbacks=[MLflowRunCallback(), ExportCallback(), RegistryCallback()],
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.test(_TinyStressModule(stress_f1=0.5), dataloaders=_test_loader())

    client = MlflowClient(uri)
    run = client.get_run(logger.run_id)
    tags = run.data.tags
    assert tags["export.onnx.status"] == "ok", tags.get("export.onnx.reason")
    assert tags["export.tensorrt.status"] == ("ok" if tensorrt_available()[0] else "skipped")
    assert tags["export.tensorrt.reason"]
    assert len(tags["git.commit"]) == 40 or tags["git.commit"] == "unknown"
    assert tags["export.fp16.status"] == "ok", tags.get("export.fp16.reason")
    assert 1e-6 < float(tags["export.fp16.max_abs_diff"]) <= FP16_ATOL + FP16_RTOL * 200
    # One parity metric (worst FP32 output of both graphs); per-output parity lives in the table, not in charts.
    export_metrics = {k for k in run.data.metrics if k.startswith("export")}
    timing = {f"export/tensorrt_{k}" for k in ("p50_ms", "p99_ms", "fps")} if tensorrt_available()[0] else set()
    assert export_metrics == {"export/onnx_max_abs_diff"} | timing
    assert 0.0 <= run.data.metrics["export/onnx_max_abs_diff"] <= 1e-3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "export")}
    assert {"export/model.onnx", "export/expression.onnx", "export/model_fp16.onnx", "export/parity.json"} <= artifacts
    assert {"path": "export/parity.json", "type": "table"} in json.loads(tags["mlflow.loggedArtifacts"])
    table = client.load_table(run.info.experiment_id, "export/parity.json", run_ids=[run.info.run_id])
    assert not table.duplicated(["graph", "precision", "output"]).any()
    expected = {
        ("model", "fp32"): list(MultiTaskNet.OUTPUT_NAMES),
        ("expression", "fp32"): ["expression_logits", "expression_probs"],
        ("model", "fp16"): list(MultiTaskNet.OUTPUT_NAMES),
    }
    if tensorrt_available()[0]:
        expected[("model", "tensorrt-fp16")] = list(MultiTaskNet.OUTPUT_NAMES)
    assert {k: list(g["output"]) for k, g in table.groupby(["graph", "precision"], sort=False)} == expected
    assert np.isfinite(table[["max_abs_diff", "tolerance"]].to_numpy(float)).all()
    assert (table["global_step"] == 0).all()
    fp32 = table[table["precision"] == "fp32"]
    assert fp32["enforced"].all() and fp32["gates_promotion"].all() and not table["gates_promotion"].all()
    # log_table writes 10 decimal places (pandas' to_json default): far finer than any tolerance here.
    assert fp32["max_abs_diff"].max() == pytest.approx(run.data.metrics["export/onnx_max_abs_diff"], abs=1e-10)
    enforced = table[table["enforced"]]
    assert enforced["passed"].all() and (enforced["max_abs_diff"] <= enforced["tolerance"]).all()
    fp16 = table[table["precision"] == "fp16"]
    assert set(fp16.loc[fp16["enforced"], "output"]) == set(FP16_GATED_OUTPUTS)
    fp16_worst = fp16.loc[fp16["enforced"], "max_abs_diff"].max()
    assert fp16_worst == pytest.approx(float(tags["export.fp16.max_abs_diff"]), rel=1e-5, abs=1e-9)
    # The bound scales with the reference output: hr_bpm (~60-200) gets a looser one than a probability.
    by_output = fp32.set_index("output")["tolerance"]
    assert by_output["hr_bpm"] > by_output["stress_probs"] >= 1e-3
    local = Path(client.download_artifacts(run.info.run_id, "export", str(tmp_path / "dl")))
    expected_spec = tiny_spec()
    for name in ("model.onnx", "expression.onnx", "model_fp16.onnx"):
        assert onnx_spec(local / name) == expected_spec
        # Each exported file's SHA-256 is a run tag (the registry's record of it, apart from the artifact store).
        assert tags[EXPORT_SHA256_TAGS[name]] == sha256_file(local / name)
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {f"plots/test_{n}.png" for n in ("expression_confusion", "stress_confusion", "hr_trace")} <= plots
    assert "plots/test_hr_bland_altman.png" in plots

    registry = ModelRegistry(client=client)
    assert registry.get_alias_version("challenger") == tags["registry.version"] == "1"
    assert registry.get_alias_version("champion") == "1"
    version_tags = registry.get_version("1").tags
    assert version_tags["promotion.decision"] == "champion"
    # The version carries the export digests and its model's checksum record; it loads checked against both.
    assert version_tags["export.onnx.sha256"] == tags["export.onnx.sha256"]
    recorded = json.loads(version_tags[CHECKSUMS_TAG])
    assert {"MLmodel", "artifacts/checksums.json", "stress_multitask_model.py"} <= set(recorded)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedModelWarning)
        loaded = resolve_model("models:/stress-multitask@champion", tracking_uri=uri)
    # The ONNX graphs the model carries are the ones the export callback checked and recorded.
    assert sha256_file(loaded.onnx_path) == tags["export.onnx.sha256"]
    assert sha256_file(loaded.expression_onnx_path) == tags["export.expression_onnx.sha256"]
    assert json.loads(json.dumps(version_tags))["promotion.metric"] == "test/stress_f1"


def test_callbacks_without_mlflow_logger_only_warn(tmp_path: Path) -> None:
    trainer = Trainer(
        logger=False,
        callbacks=[ExportCallback(), RegistryCallback()],
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with pytest.warns(UserWarning, match="no MLFlowLogger"):
        trainer.test(_TinyStressModule(stress_f1=0.5), dataloaders=_test_loader())


def test_callback_records_a_spec_that_does_not_fit_the_net(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store'}/mlflow.db"
    logger = StressMLFlowLogger(experiment_name="export-test", tracking_uri=uri, run_name="bad-spec")
    trainer = Trainer(
        logger=logger,
        callbacks=[ExportCallback(tensorrt=False)],
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    # The hyperparameters claim 200 ROI frames, the net takes 64: the ONNX file would mislead the stream.
    with pytest.warns(UserWarning, match="onnx export failed"):
        trainer.test(_TinyStressModule(stress_f1=0.5, roi_frames=200), dataloaders=_test_loader())
    tags = MlflowClient(uri).get_run(logger.run_id).data.tags
    assert tags["export.onnx.status"] == "failed"
    assert "roi_frames=200 but the input has 64" in tags["export.onnx.reason"]
    assert tags["export.fp16.status"] == tags["export.tensorrt.status"] == "skipped"

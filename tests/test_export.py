"""ONNX export and parity, TensorRT availability, and the ExportCallback on a real Trainer.test."""

from __future__ import annotations

import json
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
from stress_lightning.export.onnx import OnnxParityError, check_parity, export_onnx, onnx_session
from stress_lightning.export.tensorrt import build_tensorrt_engine, tensorrt_available
from stress_lightning.models.net import MultiTaskNet
from stress_lightning.tracking.callbacks import MLflowRunCallback, RegistryCallback
from stress_lightning.tracking.registry import ModelRegistry
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


def test_tensorrt_skipped_with_a_reason_here(tmp_path: Path) -> None:
    available, reason = tensorrt_available()
    if available:
        pytest.skip(f"TensorRT is usable here ({reason}); the skip path is not reachable")
    assert "tensorrt" in reason.lower() or "cuda" in reason.lower()
    with pytest.raises(RuntimeError, match="cannot build a TensorRT engine"):
        build_tensorrt_engine(tmp_path / "missing.onnx", tmp_path / "x.engine")


class _TinyStressModule(LightningModule):
    """The LightningModule side of the callback contract, on random labelled clips."""

    def __init__(self, stress_f1: float) -> None:
        super().__init__()
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
    assert 0.0 <= run.data.metrics["export/onnx_max_abs_diff"] <= 1e-3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "export")}
    assert "export/model.onnx" in artifacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {f"plots/test_{n}.png" for n in ("expression_confusion", "stress_confusion", "hr_trace")} <= plots
    assert "plots/test_hr_bland_altman.png" in plots

    registry = ModelRegistry(client=client)
    assert registry.get_alias_version("challenger") == tags["registry.version"] == "1"
    assert registry.get_alias_version("champion") == "1"
    version_tags = registry.get_version("1").tags
    assert version_tags["promotion.decision"] == "champion"
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

"""ExportCallback: after `test`, export ONNX, check it against PyTorch, build TensorRT where possible.

What it leaves on the MLflow run (read by RegistryCallback's promotion gate and by reviewers):
- artifact `export/model.onnx` (and `export/model_fp16.engine` when TensorRT ran);
- metrics `export/onnx_max_abs_diff` (worst output) and `export/onnx_max_abs_diff/<output>`;
- tags `export.onnx.status` = ok | failed, `export.onnx.reason`, `export.tensorrt.status` = ok | failed |
  skipped, `export.tensorrt.reason`.
A failed export is recorded (tags + warning) rather than raised, so the run keeps its test results and the
registry gate refuses promotion; `fail_on_error=True` raises instead.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from stress_lightning.export.onnx import DEFAULT_OPSET, check_parity, export_onnx
from stress_lightning.export.tensorrt import build_tensorrt_engine, tensorrt_available
from stress_lightning.tracking.callbacks import RunAwareCallback

ARTIFACT_DIR = "export"
_TAG_VALUE_LIMIT = 5000  # stay below MLflow's tag value limit with room for a long parity message


def _shape_ranges(example: tuple[torch.Tensor, torch.Tensor], max_batch: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    # TensorRT profiles for every dynamic axis: the batch ranges 1..max_batch, the rest stay at the example's.
    ranges = {}
    for name, tensor in zip(("frames", "roi"), example, strict=True):
        rest = tuple(tensor.shape[1:])
        ranges[name] = ((1, *rest), (1, *rest), (max_batch, *rest))
    return ranges


class ExportCallback(RunAwareCallback):
    """Export `pl_module.net` after test (global rank 0 only) and record the outcome on the MLflow run.

    Args:
        atol, rtol: bound on the max abs difference between onnxruntime and PyTorch, per output:
            `atol + rtol * max|output|`.
        opset: ONNX opset.
        parity_batch_sizes: batch sizes the parity check runs at (>1 exercises the dynamic batch axis).
        dynamic_spatial: also make the frames' height/width dynamic (every built-in backbone pools globally).
        tensorrt: build a TensorRT FP16 engine when TensorRT and a CUDA device are available.
        tensorrt_max_batch: largest batch in the engine's optimisation profile.
        fail_on_error: raise on a failed export or parity check instead of recording it.
    """

    def __init__(
        self,
        atol: float = 1e-3,
        # 1e-3 relative: the soft-argmax heart rate (temperature 0.05 over a log spectrum) and the HRV head read
        # from it amplify float32 rounding; a trained synthetic model differed by up to 1.6e-4 of hr_bpm
        # (0.009 bpm) between onnxruntime and PyTorch. Export bugs give errors orders of magnitude larger.
        rtol: float = 1e-3,
        opset: int = DEFAULT_OPSET,
        parity_batch_sizes: tuple[int, ...] = (1, 2),
        dynamic_spatial: bool = True,
        tensorrt: bool = True,
        tensorrt_max_batch: int = 8,
        fail_on_error: bool = False,
    ) -> None:
        super().__init__()
        if atol <= 0:
            raise ValueError(f"ExportCallback: atol must be positive, got {atol}")
        self.atol = atol
        self.rtol = rtol
        self.opset = opset
        self.parity_batch_sizes = tuple(parity_batch_sizes)
        self.dynamic_spatial = dynamic_spatial
        self.tensorrt = tensorrt
        self.tensorrt_max_batch = tensorrt_max_batch
        self.fail_on_error = fail_on_error

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        run = self._run(trainer)
        if run is None:
            return
        client, run_id = run
        with tempfile.TemporaryDirectory(prefix="stress_export_") as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            example = tuple(t.cpu() for t in pl_module.example_input(batch_size=1))
            try:
                export_onnx(pl_module.net, example, onnx_path, opset=self.opset, dynamic_spatial=self.dynamic_spatial)
                worst: dict[str, float] = {}
                for batch_size in self.parity_batch_sizes:
                    inputs = tuple(t.cpu() for t in pl_module.example_input(batch_size=batch_size))
                    for name, diff in check_parity(
                        pl_module.net, onnx_path, inputs, atol=self.atol, rtol=self.rtol
                    ).items():
                        worst[name] = max(diff, worst.get(name, 0.0))
            except Exception as err:
                # Recorded on the run (blocking promotion) and warned; re-raised when asked to.
                reason = f"{type(err).__name__}: {err}"
                client.set_tag(run_id, "export.onnx.status", "failed")
                client.set_tag(run_id, "export.onnx.reason", reason[:_TAG_VALUE_LIMIT])
                client.set_tag(run_id, "export.tensorrt.status", "skipped")
                client.set_tag(run_id, "export.tensorrt.reason", "ONNX export failed")
                if self.fail_on_error:
                    raise
                rank_zero_warn(f"ExportCallback: ONNX export failed, the model will not be promoted: {reason}")
                return

            client.log_metric(run_id, "export/onnx_max_abs_diff", max(worst.values()))
            for name, diff in worst.items():
                client.log_metric(run_id, f"export/onnx_max_abs_diff/{name}", diff)
            client.log_artifact(run_id, str(onnx_path), ARTIFACT_DIR)
            client.set_tag(run_id, "export.onnx.status", "ok")
            client.set_tag(
                run_id,
                "export.onnx.reason",
                f"max abs diff {max(worst.values()):.3g} within atol {self.atol:g} + rtol {self.rtol:g} x |output| "
                f"at batch sizes "
                f"{list(self.parity_batch_sizes)}, opset {self.opset}",
            )
            rank_zero_info(f"ExportCallback: ONNX parity ok, max abs diff {max(worst.values()):.3g}")
            self._tensorrt(client, run_id, onnx_path, example)

    def _tensorrt(self, client, run_id: str, onnx_path: Path, example: tuple[torch.Tensor, torch.Tensor]) -> None:
        available, reason = tensorrt_available()
        if not self.tensorrt or not available:
            client.set_tag(run_id, "export.tensorrt.status", "skipped")
            client.set_tag(run_id, "export.tensorrt.reason", reason if self.tensorrt else "disabled (tensorrt=False)")
            rank_zero_info(f"ExportCallback: TensorRT skipped: {reason if self.tensorrt else 'disabled'}")
            return
        engine_path = onnx_path.with_name("model_fp16.engine")
        try:
            build_tensorrt_engine(
                onnx_path,
                engine_path,
                fp16=True,
                max_batch=self.tensorrt_max_batch,
                input_shapes=_shape_ranges(example, self.tensorrt_max_batch),
            )
        except Exception as err:
            # Same policy as ONNX: record, warn, and only raise when asked to.
            message = f"{type(err).__name__}: {err}"
            client.set_tag(run_id, "export.tensorrt.status", "failed")
            client.set_tag(run_id, "export.tensorrt.reason", message[:_TAG_VALUE_LIMIT])
            if self.fail_on_error:
                raise
            rank_zero_warn(f"ExportCallback: TensorRT build failed: {message}")
            return
        client.log_artifact(run_id, str(engine_path), ARTIFACT_DIR)
        client.set_tag(run_id, "export.tensorrt.status", "ok")
        client.set_tag(run_id, "export.tensorrt.reason", f"FP16 engine built with {reason}")

"""ExportCallback: after `test`, export ONNX (full and expression graphs, FP16 variant), check them against PyTorch,
build and check a TensorRT engine where possible.

What it leaves on the MLflow run (read by RegistryCallback's promotion gate and by reviewers):
- artifacts `export/model.onnx`, `export/expression.onnx`, `export/model_fp16.onnx` (with `fp16=True`) and
  `export/model_fp16.engine` when TensorRT ran; every ONNX file carries the model spec in its metadata
  (`stress_lightning.spec`), so it alone is enough to run the stream;
- metrics `export/onnx_max_abs_diff` (worst output of the full graph), `export/onnx_max_abs_diff/<output>`,
  `export/expression_onnx_max_abs_diff`, `export/onnx_fp16_max_abs_diff` (and `/<output>`), and with TensorRT
  `export/tensorrt_max_abs_diff`, `export/tensorrt_p50_ms`, `export/tensorrt_p99_ms`, `export/tensorrt_fps`;
- tags `export.onnx.status` = ok | failed (both FP32 graphs), `export.onnx.reason`, `export.fp16.status` = ok |
  failed | skipped, `export.fp16.reason`, `export.tensorrt.status` = ok | failed | skipped, `export.tensorrt.reason`.
A failed export is recorded (tags + warning) rather than raised, so the run keeps its test results and the
registry gate refuses promotion; `fail_on_error=True` raises instead. The FP16 variant and TensorRT do not gate
promotion: they are deployment options, recorded for whoever deploys.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from mlflow import MlflowClient

from stress_lightning.export.onnx import (
    DEFAULT_OPSET,
    FP16_ATOL,
    FP16_GATED_OUTPUTS,
    FP16_RTOL,
    check_expression_parity,
    check_parity,
    convert_fp16,
    export_expression_onnx,
    export_onnx,
)
from stress_lightning.export.tensorrt import (
    build_engine,
    check_engine_parity,
    stream_profiles,
    tensorrt_available,
    time_engine,
    trtexec_path,
)
from stress_lightning.tracking.callbacks import RunAwareCallback

ARTIFACT_DIR = "export"
_TAG_VALUE_LIMIT = 5000  # stay below MLflow's tag value limit with room for a long parity message


def module_spec_json(pl_module: LightningModule) -> str:
    """The model spec (`inference.spec.ModelSpec`) of a live module as JSON, for the ONNX metadata."""
    from stress_lightning.inference.spec import spec_from_module

    return spec_from_module(pl_module).to_json()


def _merge_worst(worst: dict[str, float], diffs: dict[str, float]) -> None:
    for name, diff in diffs.items():
        worst[name] = max(diff, worst.get(name, 0.0))


class ExportCallback(RunAwareCallback):
    """Export `pl_module.net` after test (global rank 0 only) and record the outcome on the MLflow run.

    Args:
        atol, rtol: bound on the max abs difference between onnxruntime and PyTorch, per output:
            `atol + rtol * max|output|`.
        opset: ONNX opset.
        parity_batch_sizes: batch sizes the parity check runs at (>1 exercises the dynamic batch axis).
        dynamic_spatial: also make the frames' height/width dynamic (every built-in backbone pools globally).
        fp16: also write `model_fp16.onnx` (FP16 weights and arithmetic, float32 inputs and outputs) and check it
            against PyTorch within `fp16_atol` + `fp16_rtol` x |output| (see `export.onnx.FP16_ATOL`).
        tensorrt: build a TensorRT FP16 engine (Python API, or `trtexec` on PATH) when TensorRT and a CUDA device
            are available, check it against onnxruntime and time it at batch 1.
        tensorrt_max_batch: largest batch in the engine's optimisation profile.
        tensorrt_timing_cache: timing cache file reused across builds (loaded when it exists, then rewritten).
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
        fp16: bool = True,
        fp16_atol: float = FP16_ATOL,
        fp16_rtol: float = FP16_RTOL,
        tensorrt: bool = True,
        tensorrt_max_batch: int = 8,
        tensorrt_timing_cache: str | None = None,
        fail_on_error: bool = False,
    ) -> None:
        super().__init__()
        if atol <= 0 or fp16_atol <= 0:
            raise ValueError(f"ExportCallback: atol and fp16_atol must be positive, got {atol} and {fp16_atol}")
        if not parity_batch_sizes or min(parity_batch_sizes) < 1:
            raise ValueError(f"ExportCallback: parity_batch_sizes must be positive, got {parity_batch_sizes}")
        self.atol = atol
        self.rtol = rtol
        self.opset = opset
        self.parity_batch_sizes = tuple(parity_batch_sizes)
        self.dynamic_spatial = dynamic_spatial
        self.fp16 = fp16
        self.fp16_atol = fp16_atol
        self.fp16_rtol = fp16_rtol
        self.tensorrt = tensorrt
        self.tensorrt_max_batch = tensorrt_max_batch
        self.tensorrt_timing_cache = tensorrt_timing_cache
        self.fail_on_error = fail_on_error

    def _inputs(self, pl_module: LightningModule, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        frames, roi = pl_module.example_input(batch_size=batch_size)
        return frames.cpu(), roi.cpu()

    def _failed(self, client: MlflowClient, run_id: str, stage: str, err: Exception) -> None:
        # Recorded on the run and warned; re-raised when asked to.
        reason = f"{type(err).__name__}: {err}"
        client.set_tag(run_id, f"export.{stage}.status", "failed")
        client.set_tag(run_id, f"export.{stage}.reason", reason[:_TAG_VALUE_LIMIT])
        if self.fail_on_error:
            raise err
        rank_zero_warn(f"ExportCallback: {stage} export failed: {reason}")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        run = self._run(trainer)
        if run is None:
            return
        client, run_id = run
        with tempfile.TemporaryDirectory(prefix="stress_export_") as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            expression_path = Path(tmp) / "expression.onnx"
            example = self._inputs(pl_module, 1)
            try:
                spec_json = module_spec_json(pl_module)
                export_onnx(
                    pl_module.net,
                    example,
                    onnx_path,
                    opset=self.opset,
                    dynamic_spatial=self.dynamic_spatial,
                    spec_json=spec_json,
                )
                export_expression_onnx(
                    pl_module.net,
                    example[0],
                    expression_path,
                    opset=self.opset,
                    dynamic_spatial=self.dynamic_spatial,
                    spec_json=spec_json,
                )
                worst: dict[str, float] = {}
                worst_expression: dict[str, float] = {}
                for batch_size in self.parity_batch_sizes:
                    inputs = self._inputs(pl_module, batch_size)
                    _merge_worst(worst, check_parity(pl_module.net, onnx_path, inputs, self.atol, self.rtol))
                    _merge_worst(
                        worst_expression,
                        check_expression_parity(pl_module.net, expression_path, inputs[0], self.atol, self.rtol),
                    )
            except Exception as err:
                client.set_tag(run_id, "export.fp16.status", "skipped")
                client.set_tag(run_id, "export.fp16.reason", "ONNX export failed")
                client.set_tag(run_id, "export.tensorrt.status", "skipped")
                client.set_tag(run_id, "export.tensorrt.reason", "ONNX export failed")
                self._failed(client, run_id, "onnx", err)
                rank_zero_warn("ExportCallback: the model will not be promoted (export.onnx.status=failed)")
                return

            client.log_metric(run_id, "export/onnx_max_abs_diff", max(worst.values()))
            for name, diff in worst.items():
                client.log_metric(run_id, f"export/onnx_max_abs_diff/{name}", diff)
            client.log_metric(run_id, "export/expression_onnx_max_abs_diff", max(worst_expression.values()))
            client.log_artifact(run_id, str(onnx_path), ARTIFACT_DIR)
            client.log_artifact(run_id, str(expression_path), ARTIFACT_DIR)
            client.set_tag(run_id, "export.onnx.status", "ok")
            client.set_tag(
                run_id,
                "export.onnx.reason",
                f"max abs diff {max(worst.values()):.3g} (expression graph {max(worst_expression.values()):.3g}) "
                f"within atol {self.atol:g} + rtol {self.rtol:g} x |output| at batch sizes "
                f"{list(self.parity_batch_sizes)}, opset {self.opset}",
            )
            rank_zero_info(f"ExportCallback: ONNX parity ok, max abs diff {max(worst.values()):.3g}")
            self._fp16(client, run_id, pl_module, onnx_path)
            self._tensorrt(client, run_id, pl_module, onnx_path)

    def _fp16(self, client: MlflowClient, run_id: str, pl_module: LightningModule, onnx_path: Path) -> None:
        if not self.fp16:
            client.set_tag(run_id, "export.fp16.status", "skipped")
            client.set_tag(run_id, "export.fp16.reason", "disabled (fp16=False)")
            return
        fp16_path = onnx_path.with_name("model_fp16.onnx")
        worst: dict[str, float] = {}
        try:
            convert_fp16(onnx_path, fp16_path)
            for batch_size in self.parity_batch_sizes:
                inputs = self._inputs(pl_module, batch_size)
                _merge_worst(
                    worst,
                    check_parity(pl_module.net, fp16_path, inputs, self.fp16_atol, self.fp16_rtol, FP16_GATED_OUTPUTS),
                )
        except Exception as err:
            self._failed(client, run_id, "fp16", err)
            return
        # The headline figure is over the gated (consumer-facing) outputs; every output is logged below.
        gated_worst = max(worst[n] for n in FP16_GATED_OUTPUTS if n in worst)
        client.log_metric(run_id, "export/onnx_fp16_max_abs_diff", gated_worst)
        for name, diff in worst.items():
            client.log_metric(run_id, f"export/onnx_fp16_max_abs_diff/{name}", diff)
        client.log_artifact(run_id, str(fp16_path), ARTIFACT_DIR)
        client.set_tag(run_id, "export.fp16.status", "ok")
        client.set_tag(
            run_id,
            "export.fp16.reason",
            f"FP16 weights and arithmetic, float32 inputs/outputs; max abs diff {gated_worst:.3g} against "
            f"PyTorch FP32 within atol {self.fp16_atol:g} + rtol {self.fp16_rtol:g} x |output| on "
            f"{', '.join(FP16_GATED_OUTPUTS)} (onnxruntime CPU)",
        )

    def _tensorrt(self, client: MlflowClient, run_id: str, pl_module: LightningModule, onnx_path: Path) -> None:
        available, reason = tensorrt_available()
        if not self.tensorrt or not available:
            why = "disabled (tensorrt=False)" if not self.tensorrt else reason
            if self.tensorrt and trtexec_path() is not None:
                # An engine that cannot be checked against onnxruntime or timed is not logged as a deliverable.
                why += "; trtexec is on PATH, but without the TensorRT runtime its engine could not be checked"
            client.set_tag(run_id, "export.tensorrt.status", "skipped")
            client.set_tag(run_id, "export.tensorrt.reason", why)
            rank_zero_info(f"ExportCallback: TensorRT skipped: {why}")
            return
        engine_path = onnx_path.with_name("model_fp16.engine")
        try:
            frames, roi = self._inputs(pl_module, 1)
            profiles = stream_profiles(
                face_frames=frames.shape[1],
                face_size=frames.shape[3],
                roi_frames=roi.shape[1],
                roi_size=roi.shape[3],
                max_batch=self.tensorrt_max_batch,
            )
            _, builder = build_engine(
                onnx_path, engine_path, profiles, fp16=True, timing_cache=self.tensorrt_timing_cache
            )
            inputs = {"frames": frames.numpy(), "roi": roi.numpy()}
            diffs = check_engine_parity(engine_path, onnx_path, inputs, self.fp16_atol, self.fp16_rtol)
            timing = time_engine(engine_path, inputs)
        except Exception as err:
            self._failed(client, run_id, "tensorrt", err)
            return
        client.log_metric(run_id, "export/tensorrt_max_abs_diff", max(diffs.values()))
        for key in ("p50_ms", "p99_ms", "fps"):
            client.log_metric(run_id, f"export/tensorrt_{key}", timing[key])
        client.log_artifact(run_id, str(engine_path), ARTIFACT_DIR)
        client.set_tag(run_id, "export.tensorrt.status", "ok")
        client.set_tag(
            run_id,
            "export.tensorrt.reason",
            f"FP16 engine built with {builder}; max abs diff {max(diffs.values()):.3g} against onnxruntime FP32; "
            f"batch 1 p50 {timing['p50_ms']:.3g} ms, p99 {timing['p99_ms']:.3g} ms",
        )

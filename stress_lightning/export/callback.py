"""ExportCallback: after `test`, export ONNX (full and expression graphs, FP16 variant), check them against PyTorch,
build and check a TensorRT engine where possible.

What it leaves on the MLflow run (read by RegistryCallback's promotion gate and by reviewers):
- artifacts `export/model.onnx`, `export/expression.onnx`, `export/model_fp16.onnx` (with `fp16=True`) and
  `export/model_fp16.engine` when TensorRT ran; every ONNX file carries the model spec in its metadata
  (`stress_lightning.spec`), so it alone is enough to run the stream. The SHA-256 of each logged file is a run
  tag (`EXPORT_SHA256_TAGS`: `export.onnx.sha256`, ...), copied onto the registered version with the other export
  tags; RegistryCallback checks the graphs it carries into the model against them;
- the parity table `export/parity.json` (`MlflowClient.log_table`, shown as a table in the UI's artifact view):
  one row per graph (model | expression), precision (fp32 | fp16 | tensorrt-fp16) and output with `max_abs_diff`
  (null when not finite), `tolerance` (`atol + rtol * max|reference output|` over the parity inputs), `passed`,
  `enforced` (a breach fails that export stage), `gates_promotion` (the stage is the one RegistryCallback's default
  gate reads), `reference` (what it was compared with), `atol`, `rtol` and `global_step` (of the exported weights:
  testing the same run again appends rows, as log_table does, rather than replacing them);
- one parity metric, `export/onnx_max_abs_diff`: the worst output of both FP32 graphs. Per-output figures are in
  the table rather than metrics, which the run page would draw as a chart each (in sections by name prefix). With
  TensorRT, the timing metrics `export/tensorrt_p50_ms`, `export/tensorrt_p99_ms`, `export/tensorrt_fps`;
- tags `export.onnx.status` = ok | failed (both FP32 graphs), `export.onnx.reason`, `export.fp16.status` = ok |
  failed | skipped, `export.fp16.reason`, `export.fp16.max_abs_diff` (worst enforced FP16 output), and
  `export.tensorrt.status` = ok | failed | skipped, `export.tensorrt.reason`.
A failed export is recorded (tags + warning) rather than raised, so the run keeps its test results and the
registry gate refuses promotion; `fail_on_error=True` raises instead. The FP16 variant and TensorRT do not gate
promotion: they are deployment options, recorded for whoever deploys.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from mlflow import MlflowClient

from stress_lightning.export.onnx import (
    DEFAULT_OPSET,
    EXPRESSION_OUTPUT_NAMES,
    FP16_ATOL,
    FP16_GATED_OUTPUTS,
    FP16_RTOL,
    check_expression_parity,
    check_parity,
    convert_fp16,
    export_expression_onnx,
    export_onnx,
    output_names,
    run_onnx,
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
from stress_lightning.tracking.registry import EXPORT_SHA256_TAGS

ARTIFACT_DIR = "export"
PARITY_TABLE = f"{ARTIFACT_DIR}/parity.json"
_TAG_VALUE_LIMIT = 5000  # stay below MLflow's tag value limit with room for a long parity message

Inputs = tuple[torch.Tensor, torch.Tensor]


def module_spec_json(pl_module: LightningModule) -> str:
    """The model spec (`inference.spec.ModelSpec`) of a live module as JSON, for the ONNX metadata."""
    from stress_lightning.inference.spec import spec_from_module

    return spec_from_module(pl_module).to_json()


def _merge_worst(worst: dict[str, float], diffs: Mapping[str, float]) -> None:
    for name, diff in diffs.items():
        worst[name] = max(diff, worst.get(name, 0.0))


def _magnitudes(names: Sequence[str], outputs: Sequence[torch.Tensor | np.ndarray]) -> dict[str, float]:
    return {name: float(np.max(np.abs(np.asarray(out)))) for name, out in zip(names, outputs, strict=True)}


def reference_scales(net: torch.nn.Module, batches: Sequence[Inputs]) -> dict[str, dict[str, float]]:
    """max|output| of PyTorch (CPU, eval) over `batches`, per graph ("model", "expression") and output: the scale
    of the parity bound `atol + rtol * max|output|` that the checks apply."""
    reference = copy.deepcopy(net).to("cpu").eval()
    scales: dict[str, dict[str, float]] = {"model": {}, "expression": {}}
    with torch.no_grad():
        for frames, roi in batches:
            _merge_worst(scales["model"], _magnitudes(output_names(net), reference.forward_tuple(frames, roi)))
            _merge_worst(
                scales["expression"], _magnitudes(EXPRESSION_OUTPUT_NAMES, reference.forward_expression(frames))
            )
    return scales


def parity_rows(
    graph: str,
    precision: str,
    reference: str,
    diffs: Mapping[str, float],
    scale: Mapping[str, float],
    atol: float,
    rtol: float,
    *,
    enforced: Collection[str] | None,
    gates_promotion: bool,
    global_step: int,
) -> list[dict[str, Any]]:
    """Rows of the parity table for one checked graph; `enforced=None` means every output is held to the bound.

    `tolerance` uses the largest reference magnitude over the parity inputs, while the checks bound each batch
    size by its own: an enforced output that got through is within it, and `passed` of an output that is not
    enforced (only reported) may be lenient by the spread of magnitudes between batch sizes."""
    rows = []
    for name, diff in diffs.items():
        tolerance = atol + rtol * scale[name]
        rows.append(
            {
                "graph": graph,
                "precision": precision,
                "output": name,
                "max_abs_diff": diff if np.isfinite(diff) else None,
                "tolerance": tolerance,
                "passed": bool(diff <= tolerance),
                "enforced": enforced is None or name in enforced,
                "gates_promotion": gates_promotion,
                "reference": reference,
                "atol": atol,
                "rtol": rtol,
                "global_step": global_step,
            }
        )
    return rows


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

    runs_model = True

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

    def _inputs(self, pl_module: LightningModule, batch_size: int) -> Inputs:
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

    @staticmethod
    def _log_file(client: MlflowClient, run_id: str, path: Path) -> None:
        from stress_lightning.inference.integrity import sha256_file

        client.log_artifact(run_id, str(path), ARTIFACT_DIR)
        client.set_tag(run_id, EXPORT_SHA256_TAGS[path.name], sha256_file(path))

    @staticmethod
    def _log_parity(client: MlflowClient, run_id: str, rows: list[dict[str, Any]]) -> None:
        # Each stage appends its rows as soon as it is checked, so a later stage's failure keeps them.
        client.log_table(run_id, data=pd.DataFrame(rows), artifact_file=PARITY_TABLE)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        run = self._run(trainer)
        if run is None:
            return
        client, run_id = run
        step = trainer.global_step
        with tempfile.TemporaryDirectory(prefix="stress_export_") as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            expression_path = Path(tmp) / "expression.onnx"
            batches = [self._inputs(pl_module, batch_size) for batch_size in self.parity_batch_sizes]
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
                for inputs in batches:
                    _merge_worst(worst, check_parity(pl_module.net, onnx_path, inputs, self.atol, self.rtol))
                    _merge_worst(
                        worst_expression,
                        check_expression_parity(pl_module.net, expression_path, inputs[0], self.atol, self.rtol),
                    )
                scales = reference_scales(pl_module.net, batches)
            except Exception as err:
                client.set_tag(run_id, "export.fp16.status", "skipped")
                client.set_tag(run_id, "export.fp16.reason", "ONNX export failed")
                client.set_tag(run_id, "export.tensorrt.status", "skipped")
                client.set_tag(run_id, "export.tensorrt.reason", "ONNX export failed")
                self._failed(client, run_id, "onnx", err)
                rank_zero_warn("ExportCallback: the model will not be promoted (export.onnx.status=failed)")
                return

            # Every FP32 output is held to the bound, and export.onnx.status is what the registry gate reads.
            rows = [
                row
                for graph, diffs in (("model", worst), ("expression", worst_expression))
                for row in parity_rows(
                    graph,
                    "fp32",
                    "pytorch-fp32",
                    diffs,
                    scales[graph],
                    self.atol,
                    self.rtol,
                    enforced=None,
                    gates_promotion=True,
                    global_step=step,
                )
            ]
            self._log_parity(client, run_id, rows)
            worst_fp32 = max(max(worst.values()), max(worst_expression.values()))
            client.log_metric(run_id, "export/onnx_max_abs_diff", worst_fp32)
            self._log_file(client, run_id, onnx_path)
            self._log_file(client, run_id, expression_path)
            client.set_tag(run_id, "export.onnx.status", "ok")
            client.set_tag(
                run_id,
                "export.onnx.reason",
                f"max abs diff {max(worst.values()):.3g} (expression graph {max(worst_expression.values()):.3g}) "
                f"within atol {self.atol:g} + rtol {self.rtol:g} x |output| at batch sizes "
                f"{list(self.parity_batch_sizes)}, opset {self.opset}; per output: {PARITY_TABLE}",
            )
            rank_zero_info(f"ExportCallback: ONNX parity ok, max abs diff {worst_fp32:.3g}")
            self._fp16(client, run_id, pl_module, onnx_path, batches, scales["model"], step)
            self._tensorrt(client, run_id, pl_module, onnx_path, step)

    def _fp16(
        self,
        client: MlflowClient,
        run_id: str,
        pl_module: LightningModule,
        onnx_path: Path,
        batches: Sequence[Inputs],
        scale: Mapping[str, float],
        step: int,
    ) -> None:
        if not self.fp16:
            client.set_tag(run_id, "export.fp16.status", "skipped")
            client.set_tag(run_id, "export.fp16.reason", "disabled (fp16=False)")
            return
        fp16_path = onnx_path.with_name("model_fp16.onnx")
        worst: dict[str, float] = {}
        try:
            convert_fp16(onnx_path, fp16_path)
            for inputs in batches:
                _merge_worst(
                    worst,
                    check_parity(pl_module.net, fp16_path, inputs, self.fp16_atol, self.fp16_rtol, FP16_GATED_OUTPUTS),
                )
        except Exception as err:
            self._failed(client, run_id, "fp16", err)
            return
        self._log_parity(
            client,
            run_id,
            parity_rows(
                "model",
                "fp16",
                "pytorch-fp32",
                worst,
                scale,
                self.fp16_atol,
                self.fp16_rtol,
                enforced=FP16_GATED_OUTPUTS,
                gates_promotion=False,
                global_step=step,
            ),
        )
        # The headline figure is over the enforced (consumer-facing) outputs; every output is in the table.
        gated_worst = max(worst[n] for n in FP16_GATED_OUTPUTS if n in worst)
        self._log_file(client, run_id, fp16_path)
        client.set_tag(run_id, "export.fp16.status", "ok")
        client.set_tag(run_id, "export.fp16.max_abs_diff", f"{gated_worst:.6g}")
        client.set_tag(
            run_id,
            "export.fp16.reason",
            f"FP16 weights and arithmetic, float32 inputs/outputs; max abs diff {gated_worst:.3g} against "
            f"PyTorch FP32 within atol {self.fp16_atol:g} + rtol {self.fp16_rtol:g} x |output| on "
            f"{', '.join(FP16_GATED_OUTPUTS)} (onnxruntime CPU)",
        )

    def _tensorrt(
        self, client: MlflowClient, run_id: str, pl_module: LightningModule, onnx_path: Path, step: int
    ) -> None:
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
            # The engine is checked against onnxruntime FP32: the bound's scale is that reference's outputs.
            reference = run_onnx(onnx_path, inputs)
            scale = _magnitudes(list(reference), list(reference.values()))
        except Exception as err:
            self._failed(client, run_id, "tensorrt", err)
            return
        self._log_parity(
            client,
            run_id,
            parity_rows(
                "model",
                "tensorrt-fp16",
                "onnxruntime-fp32",
                diffs,
                scale,
                self.fp16_atol,
                self.fp16_rtol,
                enforced=FP16_GATED_OUTPUTS,
                gates_promotion=False,
                global_step=step,
            ),
        )
        for key in ("p50_ms", "p99_ms", "fps"):
            client.log_metric(run_id, f"export/tensorrt_{key}", timing[key])
        self._log_file(client, run_id, engine_path)
        client.set_tag(run_id, "export.tensorrt.status", "ok")
        client.set_tag(
            run_id,
            "export.tensorrt.reason",
            f"FP16 engine built with {builder}; max abs diff {max(diffs.values()):.3g} against onnxruntime FP32; "
            f"batch 1 p50 {timing['p50_ms']:.3g} ms, p99 {timing['p99_ms']:.3g} ms",
        )

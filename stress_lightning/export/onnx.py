"""ONNX export of a MultiTaskNet, an FP16 variant, and parity checks against PyTorch with onnxruntime (CPU).

Two graphs per model: `model.onnx` (every head, inputs `frames` and `roi`) and `expression.onnx` (the spatial and
temporal streams and the expression head, input `frames`), which the stream runs on every frame while the full
graph runs once per pulse window. Both carry the model spec (clip geometry, face pipeline, class names) as the
metadata entry `inference.spec.ONNX_SPEC_KEY`, so an ONNX file alone is enough to run the stream.

The legacy TorchScript exporter (`dynamo=False`) writes the whole model into one file with no extra
dependency; the dynamo exporter needs onnxscript and writes external weights by default.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

INPUT_NAMES: tuple[str, str] = ("frames", "roi")
EXPRESSION_OUTPUT_NAMES: tuple[str, str] = ("expression_logits", "expression_probs")
DEFAULT_OPSET = 17
# FP16 parity bound, `atol + rtol * max|output|`. Measured on the trained default model (EfficientNet-B0 + C3D +
# rPPG CNN, 704 steps on the synthetic corpus; 16 cached synthetic clips), FP16 vs FP32 under onnxruntime CPU:
# hr_bpm 0.25 bpm (of ~94), rmssd_ms 0.34 (of 54), stress_logits 0.058 (of 4.5), expression_logits 0.017 (of 4.5),
# pulse 0.0063 (of 3.6), probabilities <= 0.0084, argmax unchanged. Half precision keeps ~3 significant digits
# through ~100 layers; keeping the rPPG input normalisation or the spectral heart rate in FP32 did not shrink the
# errors (they come from the convolutions), so the whole graph is converted. The bound leaves >= 1.6x headroom on
# every output and still catches overflow (inf/NaN) or a mis-cast tensor, which err by whole units.
FP16_ATOL = 0.05
FP16_RTOL = 0.01
# What the FP16 bound gates: the outputs a consumer reads. A second trained default model (make fit, 891 steps)
# differed by 0.083 on `pulse` (unit-variance waveform) and 0.118 on `stress_logits` with unchanged classes and
# probabilities within the bound: intermediate outputs are reported (metrics, export_report.json), not gated.
FP16_GATED_OUTPUTS: tuple[str, ...] = ("expression_probs", "stress_probs", "hr_bpm", "rmssd_ms", "lf_hf_ratio")


class OnnxParityError(RuntimeError):
    """The ONNX model's outputs differ from PyTorch's by more than the allowed bound."""


class _TupleOutputs(nn.Module):
    # ONNX needs a flat tuple of outputs in a fixed order; the net's dict forward is kept for training code.
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, frames: torch.Tensor, roi: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.net.forward_tuple(frames, roi))


class _ExpressionOutputs(nn.Module):
    # The expression path alone: (expression_logits, expression_probs) from frames.
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, probs = self.net.forward_expression(frames)
        return logits, probs


def output_names(net: nn.Module) -> tuple[str, ...]:
    """The net's fixed output order (`OUTPUT_NAMES`), checked to exist."""
    names = getattr(net, "OUTPUT_NAMES", None)
    if not names or not hasattr(net, "forward_tuple"):
        raise TypeError(
            f"{type(net).__name__} cannot be exported: it needs OUTPUT_NAMES and forward_tuple(frames, roi) "
            "(the MultiTaskNet contract)"
        )
    return tuple(names)


def _check_expression_contract(net: nn.Module) -> None:
    if not hasattr(net, "forward_expression"):
        raise TypeError(
            f"{type(net).__name__} cannot export its expression graph: it needs forward_expression(frames) -> "
            "(expression_logits, expression_probs) (the MultiTaskNet contract)"
        )


def _cpu_eval_copy(net: nn.Module) -> nn.Module:
    # Export and compare on a CPU copy so a training module (maybe on GPU, maybe in train mode) is untouched.
    return copy.deepcopy(net).to("cpu").eval()


def _as_frames(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    frames = torch.as_tensor(frames).detach().to("cpu", torch.float32)
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be [B,Tf,3,H,W], got {tuple(frames.shape)}")
    return frames


def _as_cpu_tensors(example_inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    if len(example_inputs) != 2:
        raise ValueError(f"example_inputs must be (frames, roi), got {len(example_inputs)} tensors")
    frames, roi = (torch.as_tensor(t).detach().to("cpu", torch.float32) for t in example_inputs)
    if frames.ndim != 5 or roi.ndim != 5:
        raise ValueError(
            f"example_inputs: frames must be [B,Tf,3,H,W] and roi [B,Tr,3,R,R], got {tuple(frames.shape)} "
            f"and {tuple(roi.shape)}"
        )
    return frames, roi


def _check_spec_geometry(spec_json: str, frames: torch.Tensor, roi: torch.Tensor | None) -> None:
    """The spec written into the file must describe the example the graph is traced with: the stream feeds the
    graph what the spec says (with `dynamic_spatial` the graph accepts other face sizes, the stream does not)."""
    try:
        spec = json.loads(spec_json)
    except json.JSONDecodeError as err:
        raise ValueError(f"spec_json is not valid JSON ({err})") from err
    if not isinstance(spec, dict):
        raise ValueError("spec_json must be a JSON object (ModelSpec.to_json())")
    expected = {"face_frames": frames.shape[1], "face_size": frames.shape[3]}
    if roi is not None:
        expected.update(roi_frames=roi.shape[1], roi_size=roi.shape[3])
    wrong = [f"{k}={spec.get(k)!r} but the input has {v}" for k, v in expected.items() if spec.get(k) != v]
    if wrong:
        raise ValueError(f"the model spec does not match the example input: {'; '.join(wrong)}")


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter announces its own deprecation on every call; that choice is deliberate here.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        # The input-shape checks are Python conditions the tracer rightly freezes; they are not data flow.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(input_names),
            output_names=list(names),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )


def export_onnx(
    net: nn.Module,
    example_inputs: Sequence[torch.Tensor],
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    dynamic_spatial: bool = False,
    spec_json: str | None = None,
) -> Path:
    """Export `net` to one ONNX file with inputs `frames`, `roi` and outputs `net.OUTPUT_NAMES`.

    The batch axis is dynamic for every input and output; `dynamic_spatial=True` also frees the height and
    width of `frames` (only valid when the spatial stream pools adaptively). `spec_json` (`ModelSpec.to_json()`)
    is stored as the metadata entry `stress_lightning.spec`; it must agree with the example's geometry.
    """
    names = output_names(net)
    frames, roi = _as_cpu_tensors(example_inputs)
    if spec_json is not None:
        _check_spec_geometry(spec_json, frames, roi)
    path = Path(path)
    dynamic_axes: dict[str, dict[int, str]] = {"frames": {0: "batch"}, "roi": {0: "batch"}}
    if dynamic_spatial:
        dynamic_axes["frames"].update({3: "height", 4: "width"})
    dynamic_axes.update({name: {0: "batch"} for name in names})
    _export(_TupleOutputs(_cpu_eval_copy(net)).eval(), (frames, roi), path, INPUT_NAMES, names, dynamic_axes, opset)
    if spec_json is not None:
        write_spec(path, spec_json)
    return path


def export_expression_onnx(
    net: nn.Module,
    frames_example: torch.Tensor,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    dynamic_spatial: bool = False,
    spec_json: str | None = None,
) -> Path:
    """Export `net.forward_expression` to one ONNX file: input `frames` [B,Tf,3,H,W] (dynamic batch; dynamic
    height and width with `dynamic_spatial`), outputs `expression_logits` and `expression_probs`."""
    _check_expression_contract(net)
    frames = _as_frames(frames_example)
    if spec_json is not None:
        _check_spec_geometry(spec_json, frames, None)
    path = Path(path)
    dynamic_axes: dict[str, dict[int, str]] = {"frames": {0: "batch"}}
    if dynamic_spatial:
        dynamic_axes["frames"].update({3: "height", 4: "width"})
    dynamic_axes.update({name: {0: "batch"} for name in EXPRESSION_OUTPUT_NAMES})
    module = _ExpressionOutputs(_cpu_eval_copy(net)).eval()
    _export(module, (frames,), path, ("frames",), EXPRESSION_OUTPUT_NAMES, dynamic_axes, opset)
    if spec_json is not None:
        write_spec(path, spec_json)
    return path


# -- metadata ---------------------------------------------------------------------------------------------------
def _spec_key() -> str:
    # Imported late: the inference package may import this module (its ONNX runner), and the key has one home.
    from stress_lightning.inference.spec import ONNX_SPEC_KEY

    return ONNX_SPEC_KEY


def write_metadata(path: str | Path, props: Mapping[str, str]) -> None:
    """Set (or replace) `metadata_props` entries of an ONNX file in place; other entries are kept."""
    import onnx

    model = onnx.load(str(path))
    merged = {p.key: p.value for p in model.metadata_props}
    merged.update({key: str(value) for key, value in props.items()})
    onnx.helper.set_model_props(model, merged)
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The `metadata_props` of an ONNX file (weights are not read)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def write_spec(path: str | Path, spec_json: str) -> None:
    """Store `spec_json` (`ModelSpec.to_json()`) in the ONNX file's metadata under `stress_lightning.spec`."""
    write_metadata(path, {_spec_key(): spec_json})


def read_spec_json(path: str | Path) -> str | None:
    """The model spec JSON stored in an ONNX file, or None when it has none."""
    return read_metadata(path).get(_spec_key())


# -- FP16 -------------------------------------------------------------------------------------------------------
def convert_fp16(onnx_in: str | Path, onnx_out: str | Path) -> Path:
    """Write an FP16 copy of an FP32 ONNX file: weights and arithmetic in half precision, inputs and outputs
    still float32 (Cast nodes at the edges, so callers feed the same arrays). The metadata is kept.

    Uses onnxruntime's converter (`onnxruntime.transformers.float16`, shipped in the onnxruntime wheel).
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    if not onnx_in.is_file():
        raise FileNotFoundError(f"{onnx_in}: ONNX file not found")
    model = onnx.load(str(onnx_in))
    props = {p.key: p.value for p in model.metadata_props}
    half = convert_float_to_float16(model, keep_io_types=True)
    if props and {p.key: p.value for p in half.metadata_props} != props:
        onnx.helper.set_model_props(half, props)
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(half, str(onnx_out))
    return onnx_out


# -- running and comparing --------------------------------------------------------------------------------------
def onnx_session(
    onnx_path: str | Path, intra_op_threads: int | None = None, spinning: bool = True
):  # -> ort.InferenceSession
    """An onnxruntime CPU session on the exported file. `spinning=False` lets idle worker threads sleep instead of
    busy-waiting: what a process that shares its cores with a decoder and a face tracker needs (the stream)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])


def run_onnx(onnx_path: str | Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of the ONNX file on `inputs` (name -> float32 array), by name, with onnxruntime CPU."""
    session = onnx_session(onnx_path)
    names = [o.name for o in session.get_outputs()]
    wanted = [i.name for i in session.get_inputs()]
    missing = [n for n in wanted if n not in inputs]
    if missing:
        raise ValueError(f"{onnx_path}: inputs {missing} not given (the graph takes {wanted})")
    feed = {n: np.ascontiguousarray(inputs[n], dtype=np.float32) for n in wanted}
    return dict(zip(names, session.run(names, feed), strict=True))


def compare_outputs(
    expected: Mapping[str, np.ndarray],
    got: Mapping[str, np.ndarray],
    atol: float,
    rtol: float,
    where: str,
    label: str = "ONNX and PyTorch",
    gated: Collection[str] | None = None,
) -> dict[str, float]:
    """Max abs difference per output of `expected`; raises OnnxParityError naming each output beyond
    `atol + rtol * max|expected|` (or not finite): float32 rounding grows with magnitude, and `hr_bpm` is ~100
    where probabilities are <= 1. `where` names the file (or engine) checked, `label` the two sides. With
    `gated`, only those outputs are held to the bound (every output is still measured and returned)."""
    missing = [name for name in expected if name not in got]
    if missing:
        raise OnnxParityError(f"{where}: outputs {missing} missing (has {sorted(got)})")
    diffs: dict[str, float] = {}
    bounds: dict[str, float] = {}
    batch = None
    for name, ref in expected.items():
        ref = np.asarray(ref)
        out = np.asarray(got[name])
        batch = ref.shape[0] if ref.ndim else batch
        bounds[name] = atol + rtol * (float(np.max(np.abs(ref))) if ref.size else 0.0)
        if ref.shape != out.shape:
            raise OnnxParityError(f"{where}: output {name!r} has shape {out.shape}, expected {ref.shape} ({label})")
        diff = np.abs(ref.astype(np.float64) - out.astype(np.float64))
        diffs[name] = float(np.max(diff)) if diff.size else 0.0
        if not np.isfinite(diff).all():
            diffs[name] = float("inf")
    failing = {name: d for name, d in diffs.items() if not d <= bounds[name] and (gated is None or name in gated)}
    if failing:
        detail = ", ".join(f"{name}={d:.3g} (bound {bounds[name]:.3g})" for name, d in failing.items())
        raise OnnxParityError(
            f"{where}: {label} outputs differ by more than atol={atol:g} + rtol={rtol:g} x max|output| "
            f"(batch {batch}): {detail}"
        )
    return diffs


def _parity(
    reference: Callable[[], Sequence[torch.Tensor]],
    names: Sequence[str],
    onnx_path: str | Path,
    inputs: Mapping[str, np.ndarray],
    atol: float,
    rtol: float,
    gated: Collection[str] | None = None,
) -> dict[str, float]:
    with torch.no_grad():
        expected = {name: t.detach().numpy() for name, t in zip(names, reference(), strict=True)}
    got = run_onnx(onnx_path, inputs)
    if list(got) != list(names):
        raise OnnxParityError(f"{onnx_path}: ONNX outputs {list(got)} do not match the net's {list(names)}")
    return compare_outputs(expected, got, atol, rtol, str(onnx_path), gated=gated)


def check_parity(
    net: nn.Module,
    onnx_path: str | Path,
    example_inputs: Sequence[torch.Tensor],
    atol: float = 1e-3,
    rtol: float = 1e-3,
    gated: Collection[str] | None = None,
) -> dict[str, float]:
    """Max abs difference per output between PyTorch (CPU, eval) and onnxruntime (CPU) on `example_inputs` for
    the full graph (`model.onnx`, or its FP16 variant with the looser `FP16_ATOL`/`FP16_RTOL`).

    Raises OnnxParityError naming each output whose difference exceeds `atol + rtol * max|output|` (or that is
    not finite).
    """
    names = output_names(net)
    frames, roi = _as_cpu_tensors(example_inputs)
    reference_net = _cpu_eval_copy(net)
    return _parity(
        lambda: reference_net.forward_tuple(frames, roi),
        names,
        onnx_path,
        {"frames": frames.numpy(), "roi": roi.numpy()},
        atol,
        rtol,
        gated,
    )


def check_expression_parity(
    net: nn.Module,
    onnx_path: str | Path,
    frames: torch.Tensor,
    atol: float = 1e-3,
    rtol: float = 1e-3,
) -> dict[str, float]:
    """As `check_parity`, for the expression graph (`expression.onnx`) against `net.forward_expression`."""
    _check_expression_contract(net)
    frames = _as_frames(frames)
    reference_net = _cpu_eval_copy(net)
    return _parity(
        lambda: reference_net.forward_expression(frames),
        EXPRESSION_OUTPUT_NAMES,
        onnx_path,
        {"frames": frames.numpy()},
        atol,
        rtol,
    )


def check_onnx_parity(
    reference_onnx: str | Path,
    candidate_onnx: str | Path,
    inputs: Mapping[str, np.ndarray],
    atol: float = FP16_ATOL,
    rtol: float = FP16_RTOL,
    gated: Collection[str] | None = FP16_GATED_OUTPUTS,
) -> dict[str, float]:
    """Max abs difference per output of `candidate_onnx` against `reference_onnx`, both under onnxruntime CPU:
    the FP16 check when only the FP32 ONNX file (no PyTorch weights) is at hand."""
    expected = run_onnx(reference_onnx, inputs)
    got = run_onnx(candidate_onnx, inputs)
    return compare_outputs(expected, got, atol, rtol, str(candidate_onnx), f"its and {reference_onnx}'s", gated)


def example_clips(
    batch_size: int,
    face_frames: int,
    face_size: int,
    roi_frames: int,
    roi_size: int,
    fps: float,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs for parity checks: random face frames, and a skin ROI at mid intensity carrying a 72 bpm pulse of
    0.3 % (a real rPPG amplitude) under sensor noise, so the spectral heart rate reads a peak rather than a flat
    noise spectrum whose soft-argmax would be ill-conditioned."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(roi_frames, dtype=torch.float32) / float(fps)
    pulse = 0.003 * torch.sin(2 * torch.pi * 1.2 * t)[None, :, None, None, None]
    frames = torch.rand(batch_size, face_frames, 3, face_size, face_size, generator=gen)
    roi = 0.5 + pulse + 0.002 * torch.rand(batch_size, roi_frames, 3, roi_size, roi_size, generator=gen)
    return frames, roi

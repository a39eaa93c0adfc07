"""ONNX export of a MultiTaskNet and a parity check against PyTorch with onnxruntime (CPU).

The legacy TorchScript exporter (`dynamo=False`) writes the whole model into one file with no extra
dependency; the dynamo exporter needs onnxscript and writes external weights by default.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

INPUT_NAMES: tuple[str, str] = ("frames", "roi")
DEFAULT_OPSET = 17


class OnnxParityError(RuntimeError):
    """The ONNX model's outputs differ from PyTorch's by more than the allowed bound."""


class _TupleOutputs(nn.Module):
    # ONNX needs a flat tuple of outputs in a fixed order; the net's dict forward is kept for training code.
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, frames: torch.Tensor, roi: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.net.forward_tuple(frames, roi))


def output_names(net: nn.Module) -> tuple[str, ...]:
    """The net's fixed output order (`OUTPUT_NAMES`), checked to exist."""
    names = getattr(net, "OUTPUT_NAMES", None)
    if not names or not hasattr(net, "forward_tuple"):
        raise TypeError(
            f"{type(net).__name__} cannot be exported: it needs OUTPUT_NAMES and forward_tuple(frames, roi) "
            "(the MultiTaskNet contract)"
        )
    return tuple(names)


def _cpu_eval_copy(net: nn.Module) -> nn.Module:
    # Export and compare on a CPU copy so a training module (maybe on GPU, maybe in train mode) is untouched.
    return copy.deepcopy(net).to("cpu").eval()


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


def export_onnx(
    net: nn.Module,
    example_inputs: Sequence[torch.Tensor],
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    dynamic_spatial: bool = False,
) -> Path:
    """Export `net` to one ONNX file with inputs `frames`, `roi` and outputs `net.OUTPUT_NAMES`.

    The batch axis is dynamic for every input and output; `dynamic_spatial=True` also frees the height and
    width of `frames` (only valid when the spatial stream pools adaptively).
    """
    names = output_names(net)
    frames, roi = _as_cpu_tensors(example_inputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    dynamic_axes: dict[str, dict[int, str]] = {"frames": {0: "batch"}, "roi": {0: "batch"}}
    if dynamic_spatial:
        dynamic_axes["frames"].update({3: "height", 4: "width"})
    dynamic_axes.update({name: {0: "batch"} for name in names})

    wrapper = _TupleOutputs(_cpu_eval_copy(net)).eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter announces its own deprecation on every call; that choice is deliberate here.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        # The input-shape checks are Python conditions the tracer rightly freezes; they are not data flow.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper,
            (frames, roi),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(names),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    return path


def onnx_session(onnx_path: str | Path, intra_op_threads: int | None = None):  # -> ort.InferenceSession
    """An onnxruntime CPU session on the exported file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])


def check_parity(
    net: nn.Module,
    onnx_path: str | Path,
    example_inputs: Sequence[torch.Tensor],
    atol: float = 1e-3,
    rtol: float = 1e-3,
) -> dict[str, float]:
    """Max abs difference per output between PyTorch (CPU, eval) and onnxruntime (CPU) on `example_inputs`.

    Raises OnnxParityError naming each output whose difference exceeds `atol + rtol * max|output|` (or that is
    not finite): float32 rounding grows with magnitude, and `hr_bpm` is ~100 where probabilities are <= 1.
    """
    names = output_names(net)
    frames, roi = _as_cpu_tensors(example_inputs)
    reference_net = _cpu_eval_copy(net)
    with torch.no_grad():
        expected = [t.detach().numpy() for t in reference_net.forward_tuple(frames, roi)]
    session = onnx_session(onnx_path)
    onnx_outputs = session.get_outputs()
    if [o.name for o in onnx_outputs] != list(names):
        raise OnnxParityError(
            f"{onnx_path}: ONNX outputs {[o.name for o in onnx_outputs]} do not match OUTPUT_NAMES {list(names)}"
        )
    got = session.run(list(names), {"frames": frames.numpy(), "roi": roi.numpy()})

    diffs: dict[str, float] = {}
    bounds: dict[str, float] = {}
    for name, ref, out in zip(names, expected, got, strict=True):
        bounds[name] = atol + rtol * (float(np.max(np.abs(ref))) if ref.size else 0.0)
        if ref.shape != out.shape:
            raise OnnxParityError(f"{onnx_path}: output {name!r} has shape {out.shape}, PyTorch gives {ref.shape}")
        diff = np.abs(ref.astype(np.float64) - out.astype(np.float64))
        diffs[name] = float(np.max(diff)) if diff.size else 0.0
        if not np.isfinite(diff).all():
            diffs[name] = float("inf")

    failing = {name: d for name, d in diffs.items() if not d <= bounds[name]}
    if failing:
        detail = ", ".join(f"{name}={d:.3g} (bound {bounds[name]:.3g})" for name, d in failing.items())
        raise OnnxParityError(
            f"{onnx_path}: ONNX and PyTorch outputs differ by more than atol={atol:g} + rtol={rtol:g} x max|output| "
            f"(batch {frames.shape[0]}): {detail}"
        )
    return diffs

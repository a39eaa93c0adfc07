"""The network behind the stream: PyTorch eager or ONNX Runtime, behind one small interface.

`expression(frames)` runs the expression path alone (spatial + temporal streams and head) and `full(frames, roi)`
every head; the stream calls the first on every frame and the second once per pulse update. ONNX Runtime runs
`expression.onnx` for the first when the export wrote one, else the whole graph with a neutral ROI (the expression
outputs do not depend on the ROI, so the answer is the same, only slower).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch

from stress_lightning.inference.loading import LoadedModel

Backend = Literal["auto", "onnx", "torch"]


class Runner(Protocol):
    name: str

    def expression(self, frames: np.ndarray) -> np.ndarray:
        """frames [B, Tf, 3, S, S] float32 in [0, 1] -> expression probabilities [B, C]."""

    def full(self, frames: np.ndarray, roi: np.ndarray) -> dict[str, np.ndarray]:
        """frames [B, Tf, 3, S, S], roi [B, Tr, 3, R, R] -> every output of the network by name."""


class TorchRunner:
    """PyTorch eager on CPU, under `inference_mode`."""

    name = "torch"

    def __init__(self, net: torch.nn.Module, threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.net = net.eval()

    def expression(self, frames: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            _, probs = self.net.forward_expression(torch.from_numpy(frames))
        return probs.numpy()

    def full(self, frames: np.ndarray, roi: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = self.net(torch.from_numpy(frames), torch.from_numpy(roi))
        return {k: v.float().numpy() for k, v in out.items()}


class OnnxRunner:
    """ONNX Runtime on CPU (`model.onnx`, and `expression.onnx` for the per-frame path when present)."""

    name = "onnx"

    def __init__(
        self, onnx_path: Path, expression_path: Path | None, roi_shape: tuple[int, ...], threads: int | None = None
    ) -> None:
        from stress_lightning.export.onnx import onnx_session

        # No spinning: on 2 cores ORT's busy-waiting threads took the cores from PyAV and Face Mesh, and the default
        # model ran at 31 frames/s instead of 64 (benchmarks/results/stream.md, onnx:2 vs onnx:2:nospin).
        self.session = onnx_session(onnx_path, threads, spinning=False)
        self.expression_session = (
            onnx_session(expression_path, threads, spinning=False) if expression_path is not None else None
        )
        self.outputs = [o.name for o in self.session.get_outputs()]
        missing = [n for n in ("expression_probs", "hr_bpm", "stress_probs") if n not in self.outputs]
        if missing:
            raise ValueError(f"{onnx_path}: the ONNX graph lacks outputs {missing} (has {self.outputs})")
        self._neutral_roi = np.full((1, *roi_shape), 0.5, np.float32)

    def expression(self, frames: np.ndarray) -> np.ndarray:
        if self.expression_session is not None:
            return self.expression_session.run(["expression_probs"], {"frames": frames})[0]
        roi = np.broadcast_to(self._neutral_roi, (frames.shape[0], *self._neutral_roi.shape[1:]))
        return self.session.run(["expression_probs"], {"frames": frames, "roi": np.ascontiguousarray(roi)})[0]

    def full(self, frames: np.ndarray, roi: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.outputs, {"frames": frames, "roi": roi})
        return dict(zip(self.outputs, values, strict=True))


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def make_runner(loaded: LoadedModel, backend: Backend = "auto", threads: int | None = None) -> Runner:
    """ONNX Runtime when the model has an ONNX file (and `backend` allows it), else PyTorch eager."""
    spec = loaded.spec
    roi_shape = (spec.roi_frames, 3, spec.roi_size, spec.roi_size)
    if backend not in ("auto", "onnx", "torch"):
        raise ValueError(f"backend must be 'auto', 'onnx' or 'torch', got {backend!r}")
    if backend == "onnx" or (backend == "auto" and loaded.onnx_path is not None and onnxruntime_available()):
        if loaded.onnx_path is None:
            raise ValueError(f"{loaded.source}: backend 'onnx' asked for, but the model has no ONNX file")
        return OnnxRunner(loaded.onnx_path, loaded.expression_onnx_path, roi_shape, threads)
    if loaded.net is None:
        raise ValueError(f"{loaded.source}: backend 'torch' asked for, but only an ONNX file was loaded")
    return TorchRunner(loaded.net, threads)

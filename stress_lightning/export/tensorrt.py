"""TensorRT engine from the exported ONNX file (TensorRT 10 Python API), FP16 with a dynamic batch profile.

TensorRT is an optional extra (`pip install stress-lightning[tensorrt]` on a CUDA host); `tensorrt_available`
says why it cannot run here so callers can record the reason instead of failing.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import torch

ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def tensorrt_available() -> tuple[bool, str]:
    """(True, version) when `tensorrt` imports and a CUDA device is visible, else (False, what is missing)."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as err:
        return False, (
            f"tensorrt is not installed ({err}); install the extra `stress-lightning[tensorrt]` on a CUDA host"
        )
    if not torch.cuda.is_available():
        return False, f"tensorrt {trt.__version__} imports but no CUDA device is visible to torch"
    return True, f"tensorrt {trt.__version__} on {torch.cuda.get_device_name(0)}"


def _batch_profile(shape: tuple[int, ...], name: str, min_batch: int, opt_batch: int, max_batch: int) -> ShapeRange:
    if any(d < 0 for d in shape[1:]):
        raise ValueError(
            f"ONNX input {name!r} has dynamic non-batch dimensions {shape}; pass input_shapes={{{name!r}: "
            "(min, opt, max)}} to build_tensorrt_engine"
        )
    rest = tuple(shape[1:])
    return (min_batch, *rest), (opt_batch, *rest), (max_batch, *rest)


def build_tensorrt_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    fp16: bool = True,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 8,
    workspace_bytes: int = 1 << 30,
    input_shapes: Mapping[str, ShapeRange] | None = None,
) -> Path:
    """Parse `onnx_path`, build a serialized engine (FP16 when asked) and write it to `engine_path`.

    One optimisation profile covers batch sizes min_batch..max_batch (opt_batch is tuned for); inputs with
    other dynamic axes need explicit `input_shapes[name] = (min, opt, max)`.
    """
    available, reason = tensorrt_available()
    if not available:
        raise RuntimeError(f"cannot build a TensorRT engine: {reason}")
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(f"batch profile must satisfy 1 <= min <= opt <= max, got {min_batch}/{opt_batch}/{max_batch}")
    import tensorrt as trt

    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file {onnx_path} does not exist")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch; the creation flag is gone.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise RuntimeError(
                f"tensorrt {trt.__version__} has no BuilderFlag.FP16 (weakly typed precision was removed); "
                "use TensorRT 10.x for FP16 builds from an FP32 ONNX file"
            )
        config.set_flag(trt.BuilderFlag.FP16)

    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        if input_shapes is not None and tensor.name in input_shapes:
            low, opt, high = input_shapes[tensor.name]
        else:
            low, opt, high = _batch_profile(tuple(tensor.shape), tensor.name, min_batch, opt_batch, max_batch)
        profile.set_shape(tensor.name, low, opt, high)
    config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    return engine_path

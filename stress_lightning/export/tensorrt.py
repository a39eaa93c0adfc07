"""TensorRT FP16 engines from the exported ONNX file, a parity check against onnxruntime and a timing.

Build with the TensorRT 10 Python API (`build_tensorrt_engine`) or with NVIDIA's `trtexec` when it is on PATH
(`build_with_trtexec`); `build_engine` picks one. Both reuse a timing cache file (loaded when it exists, written
after the build; it only shortens later builds on the same GPU and TensorRT version) and one optimisation
profile per input covering the stream's shapes (`stream_profiles`: batch 1..max_batch, tuned for batch 1, which
is what the stream runs). `TensorRTRunner` runs an engine with the TensorRT runtime and torch CUDA tensors for
its inputs and outputs (no pycuda); `check_engine_parity` and `time_engine` use it.

TensorRT is an optional extra (`pip install stress-lightning[tensorrt]` on a CUDA host); `tensorrt_available`
says why it cannot run here so callers can record the reason instead of failing.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from stress_lightning.export.onnx import FP16_ATOL, FP16_GATED_OUTPUTS, FP16_RTOL, compare_outputs, run_onnx

ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
Builder = Literal["auto", "python", "trtexec"]
TRTEXEC = "trtexec"
DEFAULT_WORKSPACE_BYTES = 1 << 30


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


def trtexec_path() -> str | None:
    """The `trtexec` executable on PATH, or None."""
    return shutil.which(TRTEXEC)


# -- optimisation profiles --------------------------------------------------------------------------------------
def stream_profiles(
    face_frames: int,
    face_size: int,
    roi_frames: int | None,
    roi_size: int | None,
    max_batch: int = 8,
    opt_batch: int = 1,
) -> dict[str, ShapeRange]:
    """(min, opt, max) shapes of the stream's inputs: frames [1..max_batch, Tf, 3, S, S] and, unless `roi_frames`
    is None (the expression graph), roi [1..max_batch, Tr, 3, R, R]; tuned for `opt_batch` (the stream runs 1)."""
    sizes = {"face_frames": face_frames, "face_size": face_size}
    if roi_frames is not None or roi_size is not None:
        sizes.update(roi_frames=roi_frames, roi_size=roi_size)
    bad = [f"{k}={v!r}" for k, v in sizes.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1]
    if bad:
        raise ValueError(f"stream_profiles: sizes must be positive integers, got {', '.join(bad)}")
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"stream_profiles: need 1 <= opt_batch <= max_batch, got {opt_batch} and {max_batch}")
    shapes = {"frames": (face_frames, 3, face_size, face_size)}
    if "roi_frames" in sizes:
        shapes["roi"] = (roi_frames, 3, roi_size, roi_size)
    return {name: ((1, *rest), (opt_batch, *rest), (max_batch, *rest)) for name, rest in shapes.items()}


def check_profiles(input_shapes: Mapping[str, ShapeRange]) -> dict[str, ShapeRange]:
    """Validate (min, opt, max) per input: equal ranks, every dimension >= 1 and min <= opt <= max."""
    if not input_shapes:
        raise ValueError("input_shapes: at least one input needs a (min, opt, max) shape range")
    checked: dict[str, ShapeRange] = {}
    for name, shapes in input_shapes.items():
        if len(shapes) != 3:
            raise ValueError(f"input_shapes[{name!r}]: need (min, opt, max) shapes, got {len(shapes)} entries")
        low, opt, high = (tuple(int(d) for d in s) for s in shapes)
        if not len(low) == len(opt) == len(high):
            raise ValueError(f"input_shapes[{name!r}]: min/opt/max ranks differ: {low}, {opt}, {high}")
        if min(low) < 1:
            raise ValueError(f"input_shapes[{name!r}]: every dimension must be >= 1, got min {low}")
        if not all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True)):
            raise ValueError(f"input_shapes[{name!r}]: need min <= opt <= max per dimension, got {low}, {opt}, {high}")
        checked[name] = (low, opt, high)
    return checked


def _batch_profile(shape: tuple[int, ...], name: str, min_batch: int, opt_batch: int, max_batch: int) -> ShapeRange:
    if any(d < 0 for d in shape[1:]):
        raise ValueError(
            f"ONNX input {name!r} has dynamic non-batch dimensions {shape}; pass input_shapes={{{name!r}: "
            "(min, opt, max)}} to build_tensorrt_engine"
        )
    rest = tuple(shape[1:])
    return (min_batch, *rest), (opt_batch, *rest), (max_batch, *rest)


# -- building ---------------------------------------------------------------------------------------------------
def _write_atomic(path: Path, data: bytes) -> None:
    # A build interrupted mid-write must not leave a truncated engine or cache that the next run would trust.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def build_tensorrt_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    fp16: bool = True,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 8,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    input_shapes: Mapping[str, ShapeRange] | None = None,
    timing_cache: str | Path | None = None,
) -> Path:
    """Parse `onnx_path` with the TensorRT Python API, build a serialized engine (FP16 when asked) and write it to
    `engine_path`.

    One optimisation profile: `input_shapes[name] = (min, opt, max)` where given (see `stream_profiles`), else
    batch sizes min_batch..max_batch (tuned for opt_batch) with the other dimensions fixed by the ONNX file.
    `timing_cache`: a file loaded when it exists and (re)written after the build.
    """
    available, reason = tensorrt_available()
    if not available:
        raise RuntimeError(f"cannot build a TensorRT engine: {reason}")
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(f"batch profile must satisfy 1 <= min <= opt <= max, got {min_batch}/{opt_batch}/{max_batch}")
    shapes = check_profiles(input_shapes) if input_shapes is not None else {}
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

    cache_path = Path(timing_cache) if timing_cache is not None else None
    if cache_path is not None:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        # A cache from another GPU or TensorRT version is refused (False); start a fresh one rather than fail.
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            warnings.warn(
                f"timing cache {cache_path} does not match this GPU/TensorRT; starting a new one", stacklevel=2
            )
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    unknown = sorted(set(shapes) - {t.name for t in inputs})
    if unknown:
        raise ValueError(f"input_shapes: {onnx_path} has no inputs {unknown} (it has {[t.name for t in inputs]})")
    profile = builder.create_optimization_profile()
    for tensor in inputs:
        if tensor.name in shapes:
            low, opt, high = shapes[tensor.name]
        else:
            low, opt, high = _batch_profile(tuple(tensor.shape), tensor.name, min_batch, opt_batch, max_batch)
        profile.set_shape(tensor.name, low, opt, high)
    config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    _write_atomic(engine_path, bytes(serialized))
    if cache_path is not None:
        _write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    return engine_path


def _dims(shapes: Mapping[str, tuple[int, ...]]) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in shape)}" for name, shape in shapes.items())


def trtexec_command(
    onnx_path: str | Path,
    engine_path: str | Path,
    input_shapes: Mapping[str, ShapeRange],
    fp16: bool = True,
    timing_cache: str | Path | None = None,
    workspace_bytes: int | None = DEFAULT_WORKSPACE_BYTES,
    trtexec: str = TRTEXEC,
) -> list[str]:
    """The `trtexec` command line that builds the same engine as `build_tensorrt_engine` (and skips trtexec's own
    benchmark: `time_engine` times the engine afterwards, the same way for both builders)."""
    shapes = check_profiles(input_shapes)
    command = [str(trtexec), f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if fp16:
        command.append("--fp16")
    if timing_cache is not None:
        command.append(f"--timingCacheFile={timing_cache}")
    command += [
        f"--minShapes={_dims({n: s[0] for n, s in shapes.items()})}",
        f"--optShapes={_dims({n: s[1] for n, s in shapes.items()})}",
        f"--maxShapes={_dims({n: s[2] for n, s in shapes.items()})}",
    ]
    if workspace_bytes is not None:
        if workspace_bytes < 1 << 20:
            raise ValueError(f"workspace_bytes must be at least 1 MiB, got {workspace_bytes}")
        command.append(f"--memPoolSize=workspace:{workspace_bytes >> 20}M")
    command.append("--skipInference")
    return command


def build_with_trtexec(
    onnx_path: str | Path,
    engine_path: str | Path,
    input_shapes: Mapping[str, ShapeRange],
    fp16: bool = True,
    timing_cache: str | Path | None = None,
    workspace_bytes: int | None = DEFAULT_WORKSPACE_BYTES,
    trtexec: str | None = None,
    timeout_s: float = 1800.0,
) -> Path:
    """Build the engine by running `trtexec` (found on PATH unless given); the error carries the tail of its log."""
    exe = trtexec or trtexec_path()
    if exe is None:
        raise RuntimeError("cannot build a TensorRT engine with trtexec: `trtexec` is not on PATH")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file {onnx_path} does not exist")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    command = trtexec_command(onnx_path, engine_path, input_shapes, fp16, timing_cache, workspace_bytes, exe)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f"trtexec could not build {engine_path} from {onnx_path}: {err}") from err
    if done.returncode != 0 or not engine_path.is_file():
        log = (done.stdout + done.stderr).strip().splitlines()
        tail = "\n".join(log[-20:])
        raise RuntimeError(
            f"trtexec exited with status {done.returncode} building {engine_path} from {onnx_path}"
            f"{'' if engine_path.is_file() else ' (no engine written)'}:\n{tail}"
        )
    return engine_path


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    input_shapes: Mapping[str, ShapeRange],
    fp16: bool = True,
    timing_cache: str | Path | None = None,
    builder: Builder = "auto",
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
) -> tuple[Path, str]:
    """Build with the Python API when TensorRT imports on a CUDA host, else with `trtexec` when it is on PATH
    (`builder` forces one). Returns (engine path, a line naming the builder and version)."""
    if builder not in ("auto", "python", "trtexec"):
        raise ValueError(f"builder must be 'auto', 'python' or 'trtexec', got {builder!r}")
    available, reason = tensorrt_available()
    exe = trtexec_path()
    if builder == "python" or (builder == "auto" and available):
        path = build_tensorrt_engine(
            onnx_path,
            engine_path,
            fp16=fp16,
            workspace_bytes=workspace_bytes,
            input_shapes=input_shapes,
            timing_cache=timing_cache,
        )
        return path, f"TensorRT Python API, {reason}"
    if builder == "trtexec" or exe is not None:
        path = build_with_trtexec(onnx_path, engine_path, input_shapes, fp16, timing_cache, workspace_bytes, exe)
        return path, f"trtexec ({exe})"
    raise RuntimeError(f"cannot build a TensorRT engine: {reason}; and `trtexec` is not on PATH")


# -- running ----------------------------------------------------------------------------------------------------
def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {
        "FLOAT": torch.float32,
        "HALF": torch.float16,
        "BF16": torch.bfloat16,
        "INT8": torch.int8,
        "UINT8": torch.uint8,
        "INT32": torch.int32,
        "INT64": torch.int64,
        "BOOL": torch.bool,
    }
    for name, torch_dtype in table.items():
        if getattr(trt.DataType, name, None) == dtype:
            return torch_dtype
    raise TypeError(f"no torch dtype for TensorRT tensor type {dtype}")


class TensorRTRunner:
    """A deserialized engine with one execution context; inputs and outputs are torch CUDA tensors.

    `runner({"frames": ..., "roi": ...})` copies the inputs to the GPU (no copy when they are already CUDA tensors
    of the engine's dtype), enqueues the engine and returns the outputs by name, still on the GPU and ordered on
    torch's current stream: `.cpu()` (or `torch.cuda.synchronize()`) waits for them.
    """

    def __init__(self, engine_path: str | Path, device: int = 0) -> None:
        available, reason = tensorrt_available()
        if not available:
            raise RuntimeError(f"cannot run a TensorRT engine: {reason}")
        import tensorrt as trt

        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise FileNotFoundError(f"TensorRT engine {self.engine_path} does not exist")
        self.device = torch.device("cuda", device)
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise RuntimeError(
                f"{self.engine_path}: TensorRT cannot deserialize it (built by another TensorRT version or for "
                "another GPU?)"
            )
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self._live: list[torch.Tensor] = []  # tensors the enqueued work reads or writes; kept alive until the next call

    def profile(self, name: str) -> ShapeRange:
        """(min, opt, max) shapes of input `name` in the engine's profile 0."""
        low, opt, high = self.engine.get_tensor_profile_shape(name, 0)
        return tuple(low), tuple(opt), tuple(high)

    def __call__(self, inputs: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, torch.Tensor]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ValueError(f"{self.engine_path}: inputs {missing} not given (the engine takes {self.input_names})")
        live: list[torch.Tensor] = []
        with torch.cuda.device(self.device):
            for name in self.input_names:
                tensor = torch.as_tensor(inputs[name]).to(self.device, self.dtypes[name]).contiguous()
                low, _, high = self.profile(name)
                shape = tuple(tensor.shape)
                if len(shape) != len(low) or not all(a <= d <= b for a, d, b in zip(low, shape, high, strict=True)):
                    raise ValueError(
                        f"{self.engine_path}: input {name!r} has shape {shape}, outside the engine's profile "
                        f"{low}..{high}"
                    )
                self.context.set_input_shape(name, shape)
                self.context.set_tensor_address(name, tensor.data_ptr())
                live.append(tensor)
            outputs: dict[str, torch.Tensor] = {}
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                out = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
                self.context.set_tensor_address(name, out.data_ptr())
                outputs[name] = out
            # Its own stream (TensorRT syncs extra on the legacy default stream), ordered after the input copies
            # made on torch's current stream; the current stream then waits for the outputs.
            current = torch.cuda.current_stream(self.device)
            self.stream.wait_stream(current)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"{self.engine_path}: TensorRT execution failed (see the TensorRT log above)")
            current.wait_stream(self.stream)
        self._live = live + list(outputs.values())
        return outputs


def check_engine_parity(
    engine_path: str | Path,
    onnx_path: str | Path,
    inputs: Mapping[str, np.ndarray],
    atol: float = FP16_ATOL,
    rtol: float = FP16_RTOL,
) -> dict[str, float]:
    """Max abs difference per output of the engine against the FP32 ONNX file under onnxruntime CPU; raises
    OnnxParityError beyond `atol + rtol * max|output|` (FP16 bounds by default: the engine runs in half precision)."""
    expected = run_onnx(onnx_path, inputs)
    runner = TensorRTRunner(engine_path)
    got = {name: t.float().cpu().numpy() for name, t in runner(inputs).items()}
    return compare_outputs(
        expected, got, atol, rtol, str(engine_path), "TensorRT and onnxruntime", gated=FP16_GATED_OUTPUTS
    )


def time_engine(
    engine_path: str | Path,
    inputs: Mapping[str, np.ndarray | torch.Tensor],
    warmup: int = 20,
    iterations: int = 200,
) -> dict[str, float]:
    """Latency of the engine on `inputs` already on the GPU (host-device copies excluded, as for a stream that
    decodes into GPU memory): each iteration enqueues and waits. Returns batch, p50_ms, p99_ms, mean_ms and fps
    (samples per second at that latency)."""
    if warmup < 0 or iterations < 1:
        raise ValueError(f"need warmup >= 0 and iterations >= 1, got {warmup} and {iterations}")
    runner = TensorRTRunner(engine_path)
    on_device = {
        n: torch.as_tensor(inputs[n]).to(runner.device, runner.dtypes[n]).contiguous() for n in runner.input_names
    }
    for _ in range(warmup):
        runner(on_device)
    torch.cuda.synchronize(runner.device)
    times_ms = []
    for _ in range(iterations):
        start = time.perf_counter()
        runner(on_device)
        torch.cuda.synchronize(runner.device)
        times_ms.append((time.perf_counter() - start) * 1e3)
    batch = int(next(iter(on_device.values())).shape[0])
    mean = float(np.mean(times_ms))
    return {
        "batch": batch,
        "p50_ms": float(np.percentile(times_ms, 50)),
        "p99_ms": float(np.percentile(times_ms, 99)),
        "mean_ms": mean,
        "fps": batch * 1e3 / mean,
    }

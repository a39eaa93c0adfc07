"""Export: ONNX (full and expression graphs, FP16 variant, onnxruntime parity checks), TensorRT FP16 engines
(Python API or trtexec, parity and timing), and the export callback."""

from stress_lightning.export.onnx import (
    FP16_ATOL,
    FP16_RTOL,
    OnnxParityError,
    check_expression_parity,
    check_onnx_parity,
    check_parity,
    convert_fp16,
    export_expression_onnx,
    export_onnx,
    read_spec_json,
    write_spec,
)
from stress_lightning.export.tensorrt import (
    TensorRTRunner,
    build_engine,
    build_tensorrt_engine,
    build_with_trtexec,
    check_engine_parity,
    stream_profiles,
    tensorrt_available,
    time_engine,
    trtexec_command,
)

__all__ = [
    "FP16_ATOL",
    "FP16_RTOL",
    "OnnxParityError",
    "TensorRTRunner",
    "build_engine",
    "build_tensorrt_engine",
    "build_with_trtexec",
    "check_engine_parity",
    "check_expression_parity",
    "check_onnx_parity",
    "check_parity",
    "convert_fp16",
    "export_expression_onnx",
    "export_onnx",
    "read_spec_json",
    "stream_profiles",
    "tensorrt_available",
    "time_engine",
    "trtexec_command",
    "write_spec",
]

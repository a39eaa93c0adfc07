"""Export: ONNX (with an onnxruntime parity check), TensorRT FP16 engines, and the export callback."""

from stress_lightning.export.onnx import OnnxParityError, check_parity, export_onnx
from stress_lightning.export.tensorrt import build_tensorrt_engine, tensorrt_available

__all__ = ["OnnxParityError", "build_tensorrt_engine", "check_parity", "export_onnx", "tensorrt_available"]

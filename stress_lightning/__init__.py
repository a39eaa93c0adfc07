"""stress-lightning: one multi-task face-video model (expression, rPPG heart rate and HRV, stress)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_model"]


def __getattr__(name: str) -> Any:
    # `stress_lightning.load_model` without importing torch, mediapipe and MLflow on `import stress_lightning`.
    if name == "load_model":
        from stress_lightning.inference.api import load_model

        return load_model
    raise AttributeError(f"module 'stress_lightning' has no attribute {name!r}")

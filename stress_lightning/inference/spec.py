"""What a trained model needs to be fed from raw video: its clip geometry, face pipeline and class names.

A `ModelSpec` travels with every form of the model (checkpoint hyperparameters, the registered MLflow model's
`spec.json`, the ONNX file's metadata), so inference repeats the preprocessing the model was trained with: the
same clip rate, face window, crop size and margin, ROI grid and face detector.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from stress_lightning.data.taxonomy import BASIC_EXPRESSIONS, STRESS_LEVELS

ONNX_SPEC_KEY = "stress_lightning.spec"
SPEC_VERSION = 1


@dataclass(frozen=True)
class ModelSpec:
    """Clip geometry (`fps`, `roi_frames`, `face_frames` over `face_span_s`, `face_size`, `roi_size`), face pipeline
    (`face_margin`, `detector`, `detect_every`) and class names of a trained model."""

    fps: float = 25.0
    roi_frames: int = 200
    face_frames: int = 8
    face_span_s: float = 1.4
    face_size: int = 64
    roi_size: int = 8
    face_margin: float = 0.1
    detector: str = "mediapipe"
    detect_every: int = 10
    expression_names: tuple[str, ...] = tuple(BASIC_EXPRESSIONS)
    stress_names: tuple[str, ...] = tuple(STRESS_LEVELS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "expression_names", tuple(str(n) for n in self.expression_names))
        object.__setattr__(self, "stress_names", tuple(str(n) for n in self.stress_names))
        problems = []
        if not self.fps > 0:
            problems.append(f"fps must be positive, got {self.fps}")
        for name in ("roi_frames", "face_frames", "face_size", "roi_size", "detect_every"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.roi_size % 2:
            problems.append(f"roi_size must be even, got {self.roi_size}")
        if self.face_span_s < 0:
            problems.append(f"face_span_s must be >= 0, got {self.face_span_s}")
        if self.detector not in ("mediapipe", "haar"):
            problems.append(f"detector must be 'mediapipe' or 'haar', got {self.detector!r}")
        if not self.expression_names or not self.stress_names:
            problems.append("expression_names and stress_names must not be empty")
        if problems:
            raise ValueError("model spec: " + "; ".join(problems))

    @property
    def window_s(self) -> float:
        """The pulse window (the rPPG stream's input) in seconds."""
        return self.roi_frames / self.fps

    def face_offsets(self) -> list[int]:
        """Sample offsets of the face window, relative to its centre, at the clip rate (as `data.clips.ClipSpec`)."""
        from stress_lightning.data.clips import ClipSpec

        spec = ClipSpec(fps=self.fps, face_frames=self.face_frames, face_span_s=self.face_span_s)
        return [int(v) for v in spec.face_offsets()]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["expression_names"] = list(self.expression_names)
        data["stress_names"] = list(self.stress_names)
        data["version"] = SPEC_VERSION
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "model spec") -> ModelSpec:
        """From `to_dict()` output; unknown keys (from a newer version) are an error naming `source`."""
        known = {f.name for f in fields(cls)}
        body = {k: v for k, v in data.items() if k != "version"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ValueError(f"{source}: unknown model spec keys {unknown} (known: {sorted(known)})")
        try:
            return cls(**body)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model spec") -> ModelSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}: model spec is not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f"{source}: model spec must be a JSON object")
        return cls.from_dict(data, source)


def spec_from_hparams(hparams: Mapping[str, Any], source: str = "checkpoint") -> ModelSpec:
    """The spec of a `MultiTaskStressModule` from its hyperparameters (a checkpoint's `hyper_parameters`)."""
    face = dict(hparams.get("face_pipeline") or {})
    expression: Sequence[str] = hparams.get("expression_classes") or BASIC_EXPRESSIONS
    stress: Sequence[str] = hparams.get("stress_levels") or STRESS_LEVELS
    defaults = ModelSpec()
    return ModelSpec.from_dict(
        {
            "fps": float(hparams.get("fps", defaults.fps)),
            "roi_frames": int(hparams.get("roi_frames", defaults.roi_frames)),
            "face_frames": int(hparams.get("face_frames", defaults.face_frames)),
            "face_size": int(hparams.get("face_size", defaults.face_size)),
            "roi_size": int(hparams.get("roi_size", defaults.roi_size)),
            "face_span_s": float(face.get("face_span_s", defaults.face_span_s)),
            "face_margin": float(face.get("face_margin", defaults.face_margin)),
            "detector": str(face.get("detector", defaults.detector)),
            "detect_every": int(face.get("detect_every", defaults.detect_every)),
            "expression_names": list(expression),
            "stress_names": list(stress),
        },
        source,
    )


def spec_from_module(module: Any) -> ModelSpec:
    """The spec of a live `MultiTaskStressModule` (its hyperparameters and class names)."""
    hparams = dict(module.hparams)
    hparams["expression_classes"] = list(module.expression_names)
    hparams["stress_levels"] = list(module.stress_names)
    return spec_from_hparams(hparams, type(module).__name__)

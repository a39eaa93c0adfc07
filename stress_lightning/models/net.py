"""The multi-task network: spatial + temporal streams -> expression; rPPG stream -> pulse, HR, HRV; all -> stress.

Every constructor argument is a plain type (str, int, float, bool, dict of those), so LightningCLI/jsonargparse
can configure it from YAML and MLflow can rebuild it from the JSON of `MultiTaskNet.config`.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, ClassVar

import torch
from torch import nn

import stress_lightning.models.backbones  # noqa: F401  (registers the built-in backbones)
import stress_lightning.models.heads  # noqa: F401  (registers the built-in heads)
from stress_lightning.models.backbones.rppg import SpectralHeartRate
from stress_lightning.models.heads import HR_CENTER_BPM, LF_HF_SCALE, RMSSD_SCALE_MS, spectrum_statistics
from stress_lightning.models.registry import HEADS, RPPG_BACKBONES, SPATIAL_BACKBONES, TEMPORAL_BACKBONES


class MultiTaskNet(nn.Module):
    """Face clip + skin ROI video -> expression, pulse, heart rate, HRV and stress (see docs/ARCHITECTURE.md).

    Args:
        spatial_backbone, spatial_kwargs: registered spatial backbone (runs on the centre frame) and its kwargs.
        temporal_backbone, temporal_kwargs: registered temporal backbone (runs on all Tf frames).
        rppg_backbone, rppg_kwargs: registered rPPG backbone (runs on the ROI video).
        expression_head, hrv_head, stress_head (+ `_kwargs`): registered heads. The network fills in the
            input sizes, class counts and `dropout` unless the kwargs set them.
        num_expressions, num_stress: class counts.
        fps: ROI frame rate; roi_frames: ROI length Tr. The DFT basis is built for exactly this length.
        hr_min_bpm, hr_max_bpm, hr_resolution_bpm: the heart-rate band and its bin spacing.
        hr_temperature: soft-argmax temperature on the log band spectrum.
        dropout: default dropout of the heads.
    """

    OUTPUT_NAMES: ClassVar[tuple[str, ...]] = (
        "expression_logits",
        "expression_probs",
        "pulse",
        "pulse_spectrum",
        "hr_bpm",
        "rmssd_ms",
        "lf_hf_ratio",
        "stress_logits",
        "stress_probs",
    )
    INPUT_NAMES: ClassVar[tuple[str, ...]] = ("frames", "roi")

    def __init__(
        self,
        spatial_backbone: str = "efficientnet_b0",
        spatial_kwargs: dict[str, Any] | None = None,
        temporal_backbone: str = "c3d_small",
        temporal_kwargs: dict[str, Any] | None = None,
        rppg_backbone: str = "rppg_cnn",
        rppg_kwargs: dict[str, Any] | None = None,
        expression_head: str = "expression_mlp",
        expression_head_kwargs: dict[str, Any] | None = None,
        hrv_head: str = "hrv_mlp",
        hrv_head_kwargs: dict[str, Any] | None = None,
        stress_head: str = "stress_mlp",
        stress_head_kwargs: dict[str, Any] | None = None,
        num_expressions: int = 7,
        num_stress: int = 3,
        fps: float = 25.0,
        roi_frames: int = 200,
        hr_min_bpm: float = 40.0,
        hr_max_bpm: float = 180.0,
        hr_resolution_bpm: float = 1.0,
        hr_temperature: float = 0.05,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self._config: dict[str, Any] = copy.deepcopy(
            {
                "spatial_backbone": spatial_backbone,
                "spatial_kwargs": dict(spatial_kwargs or {}),
                "temporal_backbone": temporal_backbone,
                "temporal_kwargs": dict(temporal_kwargs or {}),
                "rppg_backbone": rppg_backbone,
                "rppg_kwargs": dict(rppg_kwargs or {}),
                "expression_head": expression_head,
                "expression_head_kwargs": dict(expression_head_kwargs or {}),
                "hrv_head": hrv_head,
                "hrv_head_kwargs": dict(hrv_head_kwargs or {}),
                "stress_head": stress_head,
                "stress_head_kwargs": dict(stress_head_kwargs or {}),
                "num_expressions": int(num_expressions),
                "num_stress": int(num_stress),
                "fps": float(fps),
                "roi_frames": int(roi_frames),
                "hr_min_bpm": float(hr_min_bpm),
                "hr_max_bpm": float(hr_max_bpm),
                "hr_resolution_bpm": float(hr_resolution_bpm),
                "hr_temperature": float(hr_temperature),
                "dropout": float(dropout),
            }
        )
        cfg = self._config
        self.num_expressions = cfg["num_expressions"]
        self.num_stress = cfg["num_stress"]
        self.roi_frames = cfg["roi_frames"]

        self.spatial = SPATIAL_BACKBONES.build(spatial_backbone, **cfg["spatial_kwargs"])
        self.temporal = TEMPORAL_BACKBONES.build(temporal_backbone, **cfg["temporal_kwargs"])
        self.rppg = RPPG_BACKBONES.build(rppg_backbone, **cfg["rppg_kwargs"])
        self.heart_rate = SpectralHeartRate(
            fps=cfg["fps"],
            n_samples=cfg["roi_frames"],
            min_bpm=cfg["hr_min_bpm"],
            max_bpm=cfg["hr_max_bpm"],
            resolution_bpm=cfg["hr_resolution_bpm"],
            temperature=cfg["hr_temperature"],
        )
        self.expression_head = HEADS.build(
            expression_head,
            **{
                "spatial_dim": self.spatial.out_dim,
                "temporal_dim": self.temporal.out_dim,
                "num_classes": self.num_expressions,
                "dropout": cfg["dropout"],
                **cfg["expression_head_kwargs"],
            },
        )
        self.hrv_head = HEADS.build(
            hrv_head, **{"rppg_dim": self.rppg.out_dim, "dropout": cfg["dropout"], **cfg["hrv_head_kwargs"]}
        )
        self.stress_head = HEADS.build(
            stress_head,
            **{
                "num_expressions": self.num_expressions,
                "rppg_dim": self.rppg.out_dim,
                "context_dim": self.temporal.out_dim,
                "num_classes": self.num_stress,
                "dropout": cfg["dropout"],
                **cfg["stress_head_kwargs"],
            },
        )

    @property
    def config(self) -> dict[str, Any]:
        """The constructor kwargs (JSON-serialisable); `MultiTaskNet.from_config(net.config)` rebuilds it."""
        return copy.deepcopy(self._config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MultiTaskNet:
        """Build a network from a `config` dict; an unknown key is an error naming it."""
        if not isinstance(config, dict):
            raise TypeError(f"MultiTaskNet config must be a dict, got {type(config).__name__}")
        known = set(cls.default_config())
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"MultiTaskNet config has unknown keys {unknown}; known keys: {sorted(known)}")
        return cls(**config)

    @staticmethod
    def default_config() -> dict[str, Any]:
        """The default constructor kwargs, without building a network."""
        params = inspect.signature(MultiTaskNet.__init__).parameters
        return {name: p.default for name, p in params.items() if name != "self"}

    @property
    def bins_bpm(self) -> torch.Tensor:
        """Frequencies of the `pulse_spectrum` bins in bpm, [K]."""
        return self.heart_rate.bins_bpm

    def forward(
        self,
        frames: torch.Tensor,
        roi: torch.Tensor,
        personal: torch.Tensor | None = None,
        personal_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """frames [B, Tf, 3, H, W], roi [B, Tr, 3, R, R], both in [0, 1] -> dict with `OUTPUT_NAMES` keys.

        `personal` [B, P] / `personal_mask` [B, P]: the person's physiology relative to their own baseline
        (`data.personal`), for the stress head; None where no baseline is known (the exported graph)."""
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"MultiTaskNet: frames must be [B, Tf, 3, H, W], got {tuple(frames.shape)}")
        if roi.ndim != 5 or roi.shape[2] != 3 or roi.shape[1] != self.roi_frames:
            raise ValueError(
                f"MultiTaskNet: roi must be [B, {self.roi_frames}, 3, R, R] (roi_frames={self.roi_frames}), "
                f"got {tuple(roi.shape)}"
            )
        centre = frames[:, frames.shape[1] // 2]
        temporal_features = self.temporal(frames)
        expression_logits = self.expression_head(self.spatial(centre), temporal_features)
        expression_probs = torch.softmax(expression_logits, dim=1)

        pulse, rppg_features = self.rppg(roi)
        hr_bpm, pulse_spectrum = self.heart_rate(pulse)
        # HRV is read from the spectrum shape but must not reshape the pulse: only the spectral loss does.
        statistics = spectrum_statistics(pulse_spectrum.detach(), self.bins_bpm, hr_bpm.detach())
        rmssd_ms, lf_hf_ratio = self.hrv_head(rppg_features, statistics)

        stress_logits = self.stress_head(
            expression_probs,
            hr_bpm,
            rmssd_ms,
            lf_hf_ratio,
            rppg_features,
            context_features=temporal_features,
            personal=personal,
            personal_mask=personal_mask,
        )
        return {
            "expression_logits": expression_logits,
            "expression_probs": expression_probs,
            "pulse": pulse,
            "pulse_spectrum": pulse_spectrum,
            "hr_bpm": hr_bpm,
            "rmssd_ms": rmssd_ms,
            "lf_hf_ratio": lf_hf_ratio,
            "stress_logits": stress_logits,
            "stress_probs": torch.softmax(stress_logits, dim=1),
        }

    def stress_from_personal(self, personal: torch.Tensor, personal_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stress from person-relative physiology alone, for samples without video (SWELL-KW): the visual and
        rPPG streams do not run and their inputs to the stress head are flagged absent.

        Returns `stress_logits` and `stress_probs`.
        """
        batch = personal.shape[0]
        zeros = personal.new_zeros
        stress_logits = self.stress_head(
            # Placeholders at the typical values (finite through the head's logs); the head zeroes them.
            zeros(batch, self.num_expressions),
            zeros(batch).fill_(HR_CENTER_BPM),
            zeros(batch).fill_(RMSSD_SCALE_MS),
            zeros(batch).fill_(LF_HF_SCALE),
            zeros(batch, self.rppg.out_dim),
            context_features=zeros(batch, self.temporal.out_dim),
            personal=personal,
            personal_mask=personal_mask,
            video_mask=torch.zeros(batch, dtype=torch.bool, device=personal.device),
        )
        return {"stress_logits": stress_logits, "stress_probs": torch.softmax(stress_logits, dim=1)}

    def forward_expression(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The expression path alone (spatial + temporal streams, expression head): frames [B, Tf, 3, H, W] ->
        (expression_logits, expression_probs). The stream runs it on every frame and the whole network only when a
        pulse window is due; it equals `forward(...)["expression_probs"]`, which does not depend on the ROI."""
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"MultiTaskNet: frames must be [B, Tf, 3, H, W], got {tuple(frames.shape)}")
        centre = frames[:, frames.shape[1] // 2]
        logits = self.expression_head(self.spatial(centre), self.temporal(frames))
        return logits, torch.softmax(logits, dim=1)

    def forward_tuple(self, frames: torch.Tensor, roi: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`forward` as a tuple in `OUTPUT_NAMES` order, for ONNX/TensorRT export."""
        outputs = self.forward(frames, roi)
        return tuple(outputs[name] for name in self.OUTPUT_NAMES)

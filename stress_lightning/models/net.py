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
from stress_lightning.models.registry import (
    BODY_BACKBONES,
    HEADS,
    RPPG_BACKBONES,
    SPATIAL_BACKBONES,
    TEMPORAL_BACKBONES,
    Registry,
)

STREAMS: tuple[str, ...] = ("spatial", "temporal", "rppg")
STRESS_INPUTS: tuple[str, ...] = ("expression", "hrv", "rppg_features", "context")
BODY_FUSIONS: tuple[str, ...] = ("avg", "max")
# Outputs that only exist with the rPPG stream.
PHYSIOLOGY_OUTPUTS: tuple[str, ...] = ("pulse", "pulse_spectrum", "hr_bpm", "rmssd_ms", "lf_hf_ratio")
# Auxiliary supervision of the face and body expression classifiers when they are fused late.
BODY_AUX_WEIGHT = 0.5


def _build(registry: Registry, name: str, kwargs: dict[str, Any], num_classes: int) -> nn.Module:
    """Build a registered entry, passing the expression class count to constructors that take `num_classes`
    (backbones with their own auxiliary classifiers, e.g. SISTCM's multi-stage supervision)."""
    constructor = registry.get(name)
    try:
        accepts = "num_classes" in inspect.signature(constructor).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        accepts = False
    if accepts and "num_classes" not in kwargs:
        kwargs = {**kwargs, "num_classes": num_classes}
    return registry.build(name, **kwargs)


def _subset(name: str, given: list[str] | tuple[str, ...] | None, known: tuple[str, ...]) -> tuple[str, ...]:
    values = tuple(known if given is None else given)
    unknown = sorted(set(values) - set(known))
    if unknown or len(set(values)) != len(values):
        raise ValueError(f"MultiTaskNet: {name} must be distinct names out of {list(known)}, got {list(values)}")
    return tuple(v for v in known if v in values)


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
        hr_taper, hr_taper_alpha: the window of the spectral heart rate over the clip ("hann", or "tukey" with its
            tapered fraction; see `SpectralHeartRate`).
        dropout: default dropout of the heads.
        streams: the streams built, out of "spatial", "temporal", "rppg" (the ablations). Without "rppg" the net
            has no pulse, heart-rate or HRV outputs (`output_names` lists what it has) and the stress head reads no
            physiology. At least one of "spatial" and "temporal" is needed for expression.
        stress_inputs: what the stress head reads, out of "expression" (probabilities), "hrv" (the net's HR, RMSSD
            and LF/HF), "rppg_features", "context" (the temporal stream's features).
        body_backbone, body_kwargs: an optional registered body backbone (OpenPose BODY_25 keypoints); its own
            linear expression classifier is fused late with the face's (`body_fusion`: "avg" or "max" of the two
            probability vectors) for samples that carry keypoints; the face alone decides for the others (and in
            the exported graph, whose inputs are frames and roi).
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
        hr_taper: str = "hann",
        hr_taper_alpha: float = 0.25,
        dropout: float = 0.3,
        streams: list[str] | None = None,
        stress_inputs: list[str] | None = None,
        body_backbone: str | None = None,
        body_kwargs: dict[str, Any] | None = None,
        body_fusion: str = "avg",
    ) -> None:
        super().__init__()
        chosen_streams = _subset("streams", streams, STREAMS)
        chosen_inputs = _subset("stress_inputs", stress_inputs, STRESS_INPUTS)
        if not {"spatial", "temporal"} & set(chosen_streams):
            raise ValueError(f"MultiTaskNet: streams {list(chosen_streams)} has neither 'spatial' nor 'temporal'")
        if body_fusion not in BODY_FUSIONS:
            raise ValueError(f"MultiTaskNet: body_fusion must be one of {list(BODY_FUSIONS)}, got {body_fusion!r}")
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
                "hr_taper": hr_taper,
                "hr_taper_alpha": float(hr_taper_alpha),
                "dropout": float(dropout),
                "streams": list(chosen_streams),
                "stress_inputs": list(chosen_inputs),
                "body_backbone": body_backbone,
                "body_kwargs": dict(body_kwargs or {}),
                "body_fusion": body_fusion,
            }
        )
        cfg = self._config
        self.num_expressions = cfg["num_expressions"]
        self.num_stress = cfg["num_stress"]
        self.roi_frames = cfg["roi_frames"]

        self.streams = chosen_streams
        self.body_fusion = body_fusion
        n_expr = self.num_expressions
        self.spatial = (
            _build(SPATIAL_BACKBONES, spatial_backbone, cfg["spatial_kwargs"], n_expr)
            if "spatial" in chosen_streams
            else None
        )
        self.temporal = (
            _build(TEMPORAL_BACKBONES, temporal_backbone, cfg["temporal_kwargs"], n_expr)
            if "temporal" in chosen_streams
            else None
        )
        has_rppg = "rppg" in chosen_streams
        self.rppg = _build(RPPG_BACKBONES, rppg_backbone, cfg["rppg_kwargs"], n_expr) if has_rppg else None
        self.heart_rate = (
            SpectralHeartRate(
                fps=cfg["fps"],
                n_samples=cfg["roi_frames"],
                min_bpm=cfg["hr_min_bpm"],
                max_bpm=cfg["hr_max_bpm"],
                resolution_bpm=cfg["hr_resolution_bpm"],
                temperature=cfg["hr_temperature"],
                taper=cfg["hr_taper"],
                taper_alpha=cfg["hr_taper_alpha"],
            )
            if has_rppg
            else None
        )
        self.spatial_dim = int(self.spatial.out_dim) if self.spatial is not None else 0
        self.temporal_dim = int(self.temporal.out_dim) if self.temporal is not None else 0
        self.rppg_dim = int(self.rppg.out_dim) if self.rppg is not None else 0
        self.expression_head = HEADS.build(
            expression_head,
            **{
                "spatial_dim": self.spatial_dim,
                "temporal_dim": self.temporal_dim,
                "num_classes": n_expr,
                "dropout": cfg["dropout"],
                **cfg["expression_head_kwargs"],
            },
        )
        self.hrv_head = (
            HEADS.build(hrv_head, **{"rppg_dim": self.rppg_dim, "dropout": cfg["dropout"], **cfg["hrv_head_kwargs"]})
            if has_rppg
            else None
        )
        stress_kwargs = dict(cfg["stress_head_kwargs"])
        # The ablations switch inputs off here, whatever the head's own defaults.
        stress_kwargs["use_expression"] = "expression" in chosen_inputs
        stress_kwargs["use_physiology"] = "hrv" in chosen_inputs and has_rppg
        if "rppg_features" not in chosen_inputs or not has_rppg:
            stress_kwargs["rppg_projection_dim"] = 0
        if "context" not in chosen_inputs or self.temporal is None:
            stress_kwargs["context_projection_dim"] = 0
        self.stress_head = HEADS.build(
            stress_head,
            **{
                "num_expressions": n_expr,
                "rppg_dim": max(self.rppg_dim, 1),
                "context_dim": max(self.temporal_dim, 1),
                "num_classes": self.num_stress,
                "dropout": cfg["dropout"],
                **stress_kwargs,
            },
        )
        self.body = _build(BODY_BACKBONES, body_backbone, cfg["body_kwargs"], n_expr) if body_backbone else None
        self.body_classifier = (
            nn.Sequential(nn.Dropout(cfg["dropout"]), nn.Linear(self.body.out_dim, n_expr))
            if self.body is not None
            else None
        )
        # Outputs of this instance, in the fixed order (a net without the rPPG stream has no physiology outputs).
        self.OUTPUT_NAMES = tuple(n for n in type(self).OUTPUT_NAMES if has_rppg or n not in PHYSIOLOGY_OUTPUTS)

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
        if self.heart_rate is None:
            raise AttributeError("MultiTaskNet: built without the rPPG stream, it has no pulse spectrum")
        return self.heart_rate.bins_bpm

    def aux_loss_weights(self) -> dict[str, float]:
        """Weights of the auxiliary expression logits in the outputs (`aux/<name>`): a temporal backbone's
        multi-stage supervision (`aux_loss_weights` of backbones with `forward_aux`) and, with a body stream, the
        face and body classifiers before their late fusion (`aux/face`, `aux/body`: supervised where keypoints
        exist)."""
        weights = {f"aux/{k}": float(v) for k, v in getattr(self.temporal, "aux_loss_weights", {}).items()}
        if self.body is not None:
            weights.update({"aux/face": BODY_AUX_WEIGHT, "aux/body": BODY_AUX_WEIGHT})
        return weights

    def aux_mask_keys(self) -> dict[str, str]:
        """For auxiliary logits that exist only for some samples: `aux/<name>` -> the batch mask that says which
        (the body classifier: `body_mask`; a backbone's own, from its `aux_masks`)."""
        keys = {f"aux/{k}": v for k, v in getattr(self.temporal, "aux_masks", {}).items()}
        if self.body is not None:
            keys["aux/body"] = "body_mask"
        return keys

    def _temporal_features(
        self,
        frames: torch.Tensor,
        landmarks: torch.Tensor | None,
        landmarks_mask: torch.Tensor | None,
        aux: dict[str, torch.Tensor] | None,
    ) -> torch.Tensor:
        """The temporal stream's features ([B, 0] without one); its auxiliary logits go into `aux` when given."""
        temporal = self.temporal
        if temporal is None:
            return frames.new_zeros(frames.shape[0], 0)
        extra: dict[str, Any] = {}
        if getattr(temporal, "uses_landmarks", False):
            extra = {"landmarks": landmarks, "landmarks_mask": landmarks_mask}
        if aux is not None and hasattr(temporal, "forward_aux"):
            features, extra_logits = temporal.forward_aux(frames, **extra)
            aux.update({f"aux/{k}": v for k, v in extra_logits.items()})
            return features
        return temporal(frames, **extra)

    def _face_logits(self, frames: torch.Tensor, temporal_features: torch.Tensor) -> torch.Tensor:
        if self.spatial is not None:
            spatial_features = self.spatial(frames[:, frames.shape[1] // 2])
        else:
            spatial_features = frames.new_zeros(frames.shape[0], 0)
        return self.expression_head(spatial_features, temporal_features)

    def _fuse_body(
        self,
        face_logits: torch.Tensor,
        body: torch.Tensor | None,
        body_mask: torch.Tensor | None,
        aux: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(expression_logits, expression_probs): the face's, or the late fusion of face and body probabilities
        where a sample has keypoints (logits = log of the fused probabilities, so cross-entropy on them is the
        fused prediction's)."""
        face_probs = torch.softmax(face_logits, dim=1)
        if self.body is None or body is None:
            return face_logits, face_probs
        body_logits = self.body_classifier(self.body(body))
        aux["aux/face"], aux["aux/body"] = face_logits, body_logits
        body_probs = torch.softmax(body_logits, dim=1)
        if self.body_fusion == "max":
            fused = torch.maximum(face_probs, body_probs)
            fused = fused / fused.sum(dim=1, keepdim=True)
        else:
            fused = 0.5 * (face_probs + body_probs)
        present = torch.ones_like(face_logits[:, :1], dtype=torch.bool) if body_mask is None else body_mask[:, None]
        probs = torch.where(present, fused, face_probs)
        logits = torch.where(present, torch.log(fused.clamp_min(1e-8)), face_logits)
        return logits, probs

    def forward(
        self,
        frames: torch.Tensor,
        roi: torch.Tensor,
        personal: torch.Tensor | None = None,
        personal_mask: torch.Tensor | None = None,
        body: torch.Tensor | None = None,
        body_mask: torch.Tensor | None = None,
        landmarks: torch.Tensor | None = None,
        landmarks_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """frames [B, Tf, 3, H, W], roi [B, Tr, 3, R, R], both in [0, 1] -> dict with `OUTPUT_NAMES` keys, plus
        auxiliary logits `aux/<name>` (see `aux_loss_weights`).

        `personal` [B, P] / `personal_mask` [B, P]: the person's physiology relative to their own baseline
        (`data.personal`), for the stress head; None where no baseline is known (the exported graph).
        `body` [B, Tf, 25, 3] / `body_mask` [B]: OpenPose BODY_25 keypoints for the body stream; `landmarks`
        [B, Tf, K, 2] / `landmarks_mask` [B]: face landmarks for temporal backbones that read them. None: absent."""
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"MultiTaskNet: frames must be [B, Tf, 3, H, W], got {tuple(frames.shape)}")
        if self.rppg is not None and (roi.ndim != 5 or roi.shape[2] != 3 or roi.shape[1] != self.roi_frames):
            raise ValueError(
                f"MultiTaskNet: roi must be [B, {self.roi_frames}, 3, R, R] (roi_frames={self.roi_frames}), "
                f"got {tuple(roi.shape)}"
            )
        aux: dict[str, torch.Tensor] = {}
        temporal_features = self._temporal_features(frames, landmarks, landmarks_mask, aux)
        face_logits = self._face_logits(frames, temporal_features)
        expression_logits, expression_probs = self._fuse_body(face_logits, body, body_mask, aux)
        outputs: dict[str, torch.Tensor] = {
            "expression_logits": expression_logits,
            "expression_probs": expression_probs,
        }
        batch = frames.shape[0]
        if self.rppg is not None:
            pulse, rppg_features = self.rppg(roi)
            hr_bpm, pulse_spectrum = self.heart_rate(pulse)
            # HRV is read from the spectrum shape but must not reshape the pulse: only the spectral loss does.
            statistics = spectrum_statistics(pulse_spectrum.detach(), self.bins_bpm, hr_bpm.detach())
            rmssd_ms, lf_hf_ratio = self.hrv_head(rppg_features, statistics)
            outputs.update(
                {
                    "pulse": pulse,
                    "pulse_spectrum": pulse_spectrum,
                    "hr_bpm": hr_bpm,
                    "rmssd_ms": rmssd_ms,
                    "lf_hf_ratio": lf_hf_ratio,
                }
            )
        else:
            # Typical values, never read: the stress head is built without physiology inputs then.
            zeros = frames.new_zeros
            hr_bpm, rmssd_ms = zeros(batch).fill_(HR_CENTER_BPM), zeros(batch).fill_(RMSSD_SCALE_MS)
            lf_hf_ratio, rppg_features = zeros(batch).fill_(LF_HF_SCALE), zeros(batch, 1)

        stress_logits = self.stress_head(
            expression_probs,
            hr_bpm,
            rmssd_ms,
            lf_hf_ratio,
            rppg_features,
            context_features=temporal_features if self.temporal is not None else frames.new_zeros(batch, 1),
            personal=personal,
            personal_mask=personal_mask,
        )
        outputs["stress_logits"] = stress_logits
        outputs["stress_probs"] = torch.softmax(stress_logits, dim=1)
        outputs.update(aux)
        return outputs

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
            zeros(batch, max(self.rppg_dim, 1)),
            context_features=zeros(batch, max(self.temporal_dim, 1)),
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
        logits = self._face_logits(frames, self._temporal_features(frames, None, None, None))
        return logits, torch.softmax(logits, dim=1)

    def forward_tuple(self, frames: torch.Tensor, roi: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`forward` as a tuple in `OUTPUT_NAMES` order, for ONNX/TensorRT export."""
        outputs = self.forward(frames, roi)
        return tuple(outputs[name] for name in self.OUTPUT_NAMES)

"""Task heads, registered by name in `HEADS` so alternatives (e.g. a Random Forest stress head) slot in.

Physiological quantities cross the heads in physical units (bpm, ms, ratio); each head converts them to
O(1) inputs with the fixed constants below, so neither the heads nor the losses see raw magnitudes.
"""

from __future__ import annotations

import math
from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

from stress_lightning.models.registry import HEADS

# Typical resting adult values used as fixed scales: short-term RMSSD ~ 42 +- 15 ms (Nunan et al. 2010, review
# of short-term HRV norms), LF/HF ~ 1.5-2.0 (Task Force of the ESC/NASPE 1996), resting HR ~ 60-90 bpm.
HR_CENTER_BPM: Final[float] = 75.0
HR_SCALE_BPM: Final[float] = 15.0
RMSSD_SCALE_MS: Final[float] = 40.0
LF_HF_SCALE: Final[float] = 1.5
# Spread of log(RMSSD) and log(LF/HF) across people and states, for standardising log values.
LOG_RMSSD_SPREAD: Final[float] = 0.5
LOG_LF_HF_SPREAD: Final[float] = 0.7


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, out_dim),
    )


def spectrum_statistics(spectrum: torch.Tensor, bins_bpm: torch.Tensor, hr_bpm: torch.Tensor) -> torch.Tensor:
    """Summary of a band spectrum, [B, 4], each O(1).

    Args:
        spectrum: [B, K] normalised band spectrum (sums to 1).
        bins_bpm: [K] bin frequencies.
        hr_bpm: [B] heart rate estimated from it.

    Returns:
        [B, 4]: standardised HR, spectral spread (std of frequency, in units of 10 bpm), peak mass (largest
        bin), and normalised spectral entropy (1 = flat, 0 = a single bin).
    """
    spread_bpm = torch.sqrt(((bins_bpm[None, :] - hr_bpm[:, None]) ** 2 * spectrum).sum(dim=1) + 1e-6)
    entropy = -(spectrum * torch.log(spectrum + 1e-12)).sum(dim=1) / math.log(spectrum.shape[1])
    peak = spectrum.max(dim=1).values
    hr_z = (hr_bpm - HR_CENTER_BPM) / HR_SCALE_BPM
    return torch.stack([hr_z, spread_bpm / 10.0, peak, entropy], dim=1)


@HEADS.register("expression_mlp")
class ExpressionHead(nn.Module):
    """Spatial + temporal features -> expression logits: LayerNorm per stream, concatenate, MLP with dropout.

    The per-stream LayerNorm keeps a 1280-d EfficientNet vector from drowning a 128-d clip vector.
    """

    def __init__(
        self, spatial_dim: int, temporal_dim: int, num_classes: int = 7, hidden_dim: int = 256, dropout: float = 0.3
    ) -> None:
        super().__init__()
        if spatial_dim + temporal_dim <= 0:
            raise ValueError("expression_mlp: needs a spatial or a temporal stream (both widths are 0)")
        # A stream left out of the network (an ablation) has width 0: nothing to normalise.
        self.spatial_norm = nn.LayerNorm(spatial_dim) if spatial_dim else nn.Identity()
        self.temporal_norm = nn.LayerNorm(temporal_dim) if temporal_dim else nn.Identity()
        self.mlp = nn.Sequential(
            nn.Dropout(dropout), _mlp(spatial_dim + temporal_dim, hidden_dim, num_classes, dropout)
        )

    def forward(self, spatial_features: torch.Tensor, temporal_features: torch.Tensor) -> torch.Tensor:
        """[B, spatial_dim], [B, temporal_dim] -> logits [B, num_classes]."""
        fused = torch.cat([self.spatial_norm(spatial_features), self.temporal_norm(temporal_features)], dim=1)
        return self.mlp(fused)


@HEADS.register("hrv_mlp")
class HRVHead(nn.Module):
    """rPPG features + pulse-spectrum statistics -> (rmssd_ms [B], lf_hf_ratio [B]), both positive.

    The MLP predicts in a normalised scale; softplus keeps it positive and the fixed typical scales
    (`RMSSD_SCALE_MS`, `LF_HF_SCALE`) bring it to physical units, so an untrained head already outputs
    plausible magnitudes (softplus(0) * 40 ms ~ 28 ms). Train it in log space (`losses.hrv_log_loss`).
    """

    n_statistics: Final[int] = 4

    def __init__(self, rppg_dim: int, hidden_dim: int = 64, dropout: float = 0.3) -> None:
        super().__init__()
        self.mlp = _mlp(rppg_dim + self.n_statistics, hidden_dim, 2, dropout)

    def forward(self, rppg_features: torch.Tensor, pulse_statistics: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, rppg_dim], [B, 4] (see `spectrum_statistics`) -> (rmssd_ms [B], lf_hf_ratio [B])."""
        z = self.mlp(torch.cat([rppg_features, pulse_statistics], dim=1))
        positive = F.softplus(z)
        return positive[:, 0] * RMSSD_SCALE_MS, positive[:, 1] * LF_HF_SCALE


def physiology_features(hr_bpm: torch.Tensor, rmssd_ms: torch.Tensor, lf_hf_ratio: torch.Tensor) -> torch.Tensor:
    """[B] x 3 in physical units -> [B, 3] standardised with fixed constants (log for the skewed HRV values)."""
    hr_z = (hr_bpm - HR_CENTER_BPM) / HR_SCALE_BPM
    rmssd_z = torch.log(rmssd_ms.clamp_min(1e-3) / RMSSD_SCALE_MS) / LOG_RMSSD_SPREAD
    lf_hf_z = torch.log(lf_hf_ratio.clamp_min(1e-4) / LF_HF_SCALE) / LOG_LF_HF_SPREAD
    return torch.stack([hr_z, rmssd_z, lf_hf_z], dim=1)


@HEADS.register("stress_mlp")
class StressHead(nn.Module):
    """Expression probabilities + HR + HRV (+ projected rPPG and facial-context features) and person-relative
    physiology -> stress logits.

    Two kinds of input, each with its own presence flags, so one head learns from face video and from
    physiology-only corpora (SWELL-KW) in the same run:
    - what the network sees in the clip (expression probabilities, its own HR/HRV estimates, projections),
      zeroed and flagged absent where a sample has no video (`video_mask`);
    - `personal` physiology: the person's values relative to their own baseline (`data.personal`), each feature
      with its mask; absent (zeros) where nobody measured it, e.g. in a clip of a corpus without a baseline.

    Args:
        num_expressions: size of the expression probability vector.
        rppg_dim: size of the rPPG feature vector (used only when `rppg_projection_dim` > 0).
        num_classes: stress levels.
        rppg_projection_dim: width of a learned projection of the rPPG features; 0 leaves them out, so the
            head sees only the interpretable inputs (as a Random Forest / SVM head would).
        context_dim: size of the facial-context feature vector (the temporal stream over the clip's face window).
        context_projection_dim: width of its learned projection; 0 leaves it out. Stress shows in the mix of
            expressions over seconds, not only in the expression at one instant, so the head reads it.
        personal_dim: number of person-relative physiology features (`data.personal.PERSONAL_FEATURES`); 0 leaves
            them out.
        use_expression, use_physiology: read the expression probabilities / the network's own HR, RMSSD and LF/HF
            (the ablations of the stress head's inputs; at least one input must remain).
        hidden_dim, dropout: MLP size and dropout.
        detach_inputs: stop the stress loss from reshaping the expression and physiology estimates it reads;
            they keep being trained by their own losses.
    """

    def __init__(
        self,
        num_expressions: int = 7,
        rppg_dim: int = 64,
        num_classes: int = 3,
        rppg_projection_dim: int = 16,
        context_dim: int = 128,
        context_projection_dim: int = 16,
        personal_dim: int = 6,
        hidden_dim: int = 64,
        dropout: float = 0.3,
        detach_inputs: bool = True,
        use_expression: bool = True,
        use_physiology: bool = True,
    ) -> None:
        super().__init__()
        if rppg_projection_dim < 0 or context_projection_dim < 0 or personal_dim < 0:
            raise ValueError(
                f"stress_mlp: projection widths must be >= 0, got rppg {rppg_projection_dim}, "
                f"context {context_projection_dim}, personal {personal_dim}"
            )
        self.personal_dim = int(personal_dim)
        self.detach_inputs = bool(detach_inputs)
        self.use_expression = bool(use_expression)
        self.use_physiology = bool(use_physiology)
        self.rppg_projection = (
            nn.Sequential(nn.LayerNorm(rppg_dim), nn.Linear(rppg_dim, rppg_projection_dim), nn.ReLU(inplace=True))
            if rppg_projection_dim > 0
            else None
        )
        self.context_projection = (
            nn.Sequential(
                nn.LayerNorm(context_dim), nn.Linear(context_dim, context_projection_dim), nn.ReLU(inplace=True)
            )
            if context_projection_dim > 0
            else None
        )
        video_dim = num_expressions * self.use_expression + 3 * self.use_physiology
        video_dim += rppg_projection_dim + context_projection_dim
        if video_dim == 0 and self.personal_dim == 0:
            raise ValueError("stress_mlp: every input is switched off (expression, physiology, projections, personal)")
        self.mlp = _mlp(video_dim + 1 + 2 * self.personal_dim, hidden_dim, num_classes, dropout)

    def forward(
        self,
        expression_probs: torch.Tensor,
        hr_bpm: torch.Tensor,
        rmssd_ms: torch.Tensor,
        lf_hf_ratio: torch.Tensor,
        rppg_features: torch.Tensor,
        context_features: torch.Tensor | None = None,
        personal: torch.Tensor | None = None,
        personal_mask: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, E], [B], [B], [B], [B, rppg_dim], [B, context_dim], [B, P], [B, P] bool, [B] bool -> [B, classes].

        `video_mask` None: every sample has video. `personal` None: no sample has personal physiology.
        """
        inputs = []
        if self.use_expression:
            inputs.append(expression_probs)
        if self.use_physiology:
            inputs.append(physiology_features(hr_bpm, rmssd_ms, lf_hf_ratio))
        if self.detach_inputs:
            inputs = [x.detach() for x in inputs]
        for projection, features in (
            (self.rppg_projection, rppg_features),
            (self.context_projection, context_features),
        ):
            if projection is None:
                continue
            if features is None:
                raise ValueError("stress_mlp: built with a context projection but called without context_features")
            inputs.append(projection(features.detach() if self.detach_inputs else features))
        batch = expression_probs.shape[0]
        video_part = torch.cat(inputs, dim=1) if inputs else expression_probs.new_zeros(batch, 0)
        if video_mask is None:
            video = video_part.new_ones(batch, 1)
        else:
            video = video_mask.to(video_part.dtype).reshape(batch, 1)
            # where() rather than multiplication: a sample without video may carry non-finite placeholders.
            video_part = torch.where(video > 0, video_part, torch.zeros_like(video_part))
        parts = [video_part, video]
        if self.personal_dim:
            if personal is None:
                personal = video_part.new_zeros(batch, self.personal_dim)
                personal_mask = video_part.new_zeros(batch, self.personal_dim)
            if personal.shape != (batch, self.personal_dim):
                raise ValueError(f"stress_mlp: personal must be [B, {self.personal_dim}], got {tuple(personal.shape)}")
            mask = (
                personal_mask.to(video_part.dtype)
                if personal_mask is not None
                else torch.ones_like(personal, dtype=video_part.dtype)
            )
            parts += [torch.where(mask > 0, personal.to(video_part.dtype), torch.zeros_like(mask)), mask]
        return self.mlp(torch.cat(parts, dim=1))

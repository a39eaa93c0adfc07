"""Per-sample losses for the rPPG and HRV tasks, and the masked mean that turns them into one scalar.

Every loss here returns one value per sample, [B], so the LightningModule can drop samples whose label is
missing with `masked_mean(loss, mask)`. Missing labels are stored as zeros; every loss is finite for them
(targets are clamped), so a masked-out sample can never inject NaN into the gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stress_lightning.models.heads import LF_HF_SCALE, RMSSD_SCALE_MS


def masked_mean(loss_per_sample: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `loss_per_sample` [B] over samples where `mask` [B] (bool) is True.

    With an empty mask it returns 0 that is still connected to the graph (so `backward` works and the
    parameters get zero gradient), rather than NaN or a constant.
    """
    if loss_per_sample.shape != mask.shape:
        raise ValueError(f"masked_mean: loss {tuple(loss_per_sample.shape)} and mask {tuple(mask.shape)} differ")
    mask = mask.to(torch.bool)
    # where() rather than multiplication: 0 * inf would be NaN.
    kept = torch.where(mask, loss_per_sample, torch.zeros_like(loss_per_sample))
    return kept.sum() / mask.sum().clamp_min(1).to(loss_per_sample.dtype)


def gaussian_hr_target(hr_target_bpm: torch.Tensor, bins_bpm: torch.Tensor, sigma_bpm: float) -> torch.Tensor:
    """[B] heart rates -> [B, K] Gaussian distributions over the bins (sum 1), centred on the clamped rate."""
    if sigma_bpm <= 0:
        raise ValueError(f"gaussian_hr_target: sigma_bpm must be > 0, got {sigma_bpm}")
    centre = hr_target_bpm.clamp(min=float(bins_bpm[0]), max=float(bins_bpm[-1]))
    logits = -0.5 * ((bins_bpm[None, :] - centre[:, None]) / sigma_bpm) ** 2
    return torch.softmax(logits, dim=1)


def spectral_hr_loss(
    spectrum: torch.Tensor, hr_target_bpm: torch.Tensor, bins_bpm: torch.Tensor, sigma_bpm: float = 3.0
) -> torch.Tensor:
    """Frequency-domain heart-rate loss per sample, [B].

    The band power spectrum of the predicted pulse is compared with a Gaussian label distribution centred on
    the reference (ECG) heart rate, as in the label-distribution frequency losses of PhysFormer (Yu et al.,
    CVPR 2022). Working on power makes the loss invariant to the pulse's time shift (pulse-transit delay
    between ECG and face), sign and scale, so no aligned reference waveform is needed.

    Args:
        spectrum: [B, K] non-negative band power (normalised or not; e.g. the `pulse_spectrum` output).
        hr_target_bpm: [B] reference heart rate; values outside the band are clamped to its edges.
        bins_bpm: [K] bin frequencies of `spectrum`.
        sigma_bpm: width of the Gaussian label distribution.

    Returns:
        [B] cross-entropy of the spectrum against the target minus the target's entropy (the KL divergence),
        so a spectrum equal to the target scores 0.
    """
    if spectrum.ndim != 2 or spectrum.shape[1] != bins_bpm.shape[0]:
        raise ValueError(f"spectral_hr_loss: spectrum {tuple(spectrum.shape)} does not match {bins_bpm.shape[0]} bins")
    if hr_target_bpm.shape != spectrum.shape[:1]:
        raise ValueError(f"spectral_hr_loss: target {tuple(hr_target_bpm.shape)} vs batch {spectrum.shape[0]}")
    target = gaussian_hr_target(hr_target_bpm.to(spectrum.dtype), bins_bpm.to(spectrum.dtype), sigma_bpm)
    probs = spectrum / spectrum.sum(dim=1, keepdim=True).clamp_min(1e-30)
    log_probs = torch.log(probs.clamp_min(1e-12))
    return (target * (torch.log(target.clamp_min(1e-12)) - log_probs)).sum(dim=1)


def neg_pearson_loss(pulse: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """1 - Pearson correlation over time per sample, [B], for when an aligned reference pulse exists.

    Args:
        pulse, reference: [B, T] signals; scale and offset do not matter.
    """
    if pulse.shape != reference.shape or pulse.ndim != 2:
        raise ValueError(
            f"neg_pearson_loss: need two [B, T] signals, got {tuple(pulse.shape)}, {tuple(reference.shape)}"
        )
    x = pulse - pulse.mean(dim=1, keepdim=True)
    y = reference - reference.mean(dim=1, keepdim=True)
    r = (x * y).sum(dim=1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(1e-8)
    return 1.0 - r


def hrv_log_loss(
    rmssd_ms: torch.Tensor, lf_hf_ratio: torch.Tensor, target_rmssd_ms: torch.Tensor, target_lf_hf_ratio: torch.Tensor
) -> torch.Tensor:
    """Smooth-L1 between log(prediction / typical scale) and log(target / typical scale), summed over the two
    HRV quantities, per sample, [B]. Log space because both are positive and right-skewed; a factor-2 error
    costs the same at 20 ms as at 80 ms. All inputs are [B] in physical units (ms, ratio).
    """
    pred = torch.stack([rmssd_ms / RMSSD_SCALE_MS, lf_hf_ratio / LF_HF_SCALE], dim=1)
    target = torch.stack([target_rmssd_ms / RMSSD_SCALE_MS, target_lf_hf_ratio / LF_HF_SCALE], dim=1)
    log_pred = torch.log(pred.clamp_min(1e-4))
    log_target = torch.log(target.clamp_min(1e-4))
    return F.smooth_l1_loss(log_pred, log_target, reduction="none").sum(dim=1)

"""Shared checks for the model zoo (issue: every model trains on a fixed batch and exports to ONNX with parity).

`fixed_batch` builds one small, reproducible batch in the sample layout of `stress_lightning.data.sample`;
`assert_loss_falls` trains a `MultiTaskNet` on it for a few steps; `assert_onnx_parity` exports it with the
package's exporter and compares onnxruntime with PyTorch within the bound the export callback uses.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stress_lightning.export.onnx import check_parity, export_onnx
from stress_lightning.models.losses import spectral_hr_loss
from stress_lightning.models.net import MultiTaskNet

FPS = 25.0
ROI_FRAMES = 64
NUM_JOINTS = 25
NUM_LANDMARKS = 12


def tiny_net(**net_kwargs: Any) -> MultiTaskNet:
    """A `MultiTaskNet` with the fast defaults of the tests (conv4, c3d_small, rppg_cnn), overridden by kwargs."""
    torch.manual_seed(0)
    kwargs: dict[str, Any] = {
        "spatial_backbone": "conv4",
        "temporal_backbone": "c3d_small",
        "rppg_backbone": "rppg_cnn",
        "fps": FPS,
        "roi_frames": ROI_FRAMES,
        "dropout": 0.0,
    }
    kwargs.update(net_kwargs)
    return MultiTaskNet(**kwargs)


def fixed_batch(
    batch: int = 4,
    frames: int = 8,
    size: int = 32,
    roi_size: int = 8,
    num_expressions: int = 7,
    with_body: bool = False,
    with_landmarks: bool = False,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A reproducible batch: random face frames, ROI clips carrying a pulse at a known rate, labels for every task,
    optional OpenPose BODY_25 keypoints (pixels + confidence) and face landmarks (pixels)."""
    g = torch.Generator().manual_seed(seed)
    t_s = torch.arange(ROI_FRAMES) / FPS
    hr_bpm = 60.0 + 60.0 * torch.rand(batch, generator=g)
    wave = torch.sin(2 * math.pi * hr_bpm[:, None] / 60.0 * t_s)
    roi = 0.5 + 0.01 * torch.rand(batch, ROI_FRAMES, 3, roi_size, roi_size, generator=g)
    roi = roi * (1 + 0.01 * wave[:, :, None, None, None])
    out: dict[str, torch.Tensor] = {
        "frames": torch.rand(batch, frames, 3, size, size, generator=g),
        "roi": roi,
        "expression": torch.randint(0, num_expressions, (batch,), generator=g),
        "expression_mask": torch.ones(batch, dtype=torch.bool),
        "stress": torch.randint(0, 3, (batch,), generator=g),
        "stress_mask": torch.ones(batch, dtype=torch.bool),
        "hr_bpm": hr_bpm,
        "hr_mask": torch.ones(batch, dtype=torch.bool),
        "ppg": wave,
        "ppg_mask": torch.ones(batch, dtype=torch.bool),
    }
    if with_body:
        centre = torch.tensor([320.0, 240.0])
        joints = centre + 60.0 * torch.randn(batch, 1, NUM_JOINTS, 2, generator=g)
        motion = 5.0 * torch.randn(batch, frames, NUM_JOINTS, 2, generator=g).cumsum(dim=1)
        confidence = 0.5 + 0.5 * torch.rand(batch, frames, NUM_JOINTS, 1, generator=g)
        out["body"] = torch.cat([joints + motion, confidence], dim=-1)
        out["body_mask"] = torch.ones(batch, dtype=torch.bool)
    if with_landmarks:
        base = torch.tensor([[100.0, 100.0]]) + 40.0 * torch.rand(NUM_LANDMARKS, 2, generator=g)
        out["landmarks"] = base + 2.0 * torch.randn(batch, frames, NUM_LANDMARKS, 2, generator=g)
        out["landmarks_mask"] = torch.ones(batch, dtype=torch.bool)
    return out


def net_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keyword inputs `MultiTaskNet.forward` takes from a batch."""
    keys = ("frames", "roi", "body", "body_mask", "landmarks", "landmarks_mask")
    return {k: batch[k] for k in keys if k in batch}


def zoo_loss(net: MultiTaskNet, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Expression + stress cross-entropy (with any auxiliary expression logits the backbones return) + spectral
    heart-rate loss: what the module trains, without its masks and weights."""
    loss = F.cross_entropy(out["expression_logits"], batch["expression"])
    loss = loss + F.cross_entropy(out["stress_logits"], batch["stress"])
    loss = loss + spectral_hr_loss(out["pulse_spectrum"], batch["hr_bpm"], net.bins_bpm).mean()
    for name, weight in net.aux_loss_weights().items():
        if name in out:  # a backbone returns some auxiliary logits only when their input exists (landmarks)
            loss = loss + weight * F.cross_entropy(out[name], batch["expression"])
    return loss


def assert_loss_falls(
    net: MultiTaskNet, batch: dict[str, torch.Tensor], steps: int = 12, lr: float = 3e-3, ratio: float = 0.8
) -> tuple[float, float]:
    """Train `net` on `batch` for `steps` Adam steps; the last loss must be below `ratio` x the first."""
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        out = net(**net_inputs(batch))
        loss = zoo_loss(net, out, batch)
        assert torch.isfinite(loss), loss
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < ratio * losses[0], losses
    return losses[0], losses[-1]


def assert_onnx_parity(net: nn.Module, batch: dict[str, torch.Tensor], tmp_path: Path) -> dict[str, float]:
    """Export the face graph (inputs frames, roi) with the package's exporter and check onnxruntime against
    PyTorch with `check_parity`'s default bound (the one the export callback applies)."""
    net.eval()
    example = (batch["frames"][:2], batch["roi"][:2])
    path = export_onnx(net, example, tmp_path / "model.onnx")
    # Another batch size too: a reshape that loses the symbolic batch freezes it to the export's in the graph.
    check_parity(net, path, (batch["frames"][:1], batch["roi"][:1]))
    return check_parity(net, path, example)

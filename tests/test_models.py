"""Tests for the network: registries, backbones, spectral heart rate, heads, losses, ONNX export, weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from stress_lightning.export.onnx import export_onnx
from stress_lightning.models.backbones.rppg import RPPGCNN, SpectralHeartRate
from stress_lightning.models.backbones.spatial import EfficientNetB0
from stress_lightning.models.losses import (
    hrv_log_loss,
    masked_mean,
    neg_pearson_loss,
    spectral_hr_loss,
)
from stress_lightning.models.net import MultiTaskNet
from stress_lightning.models.registry import (
    HEADS,
    RPPG_BACKBONES,
    SPATIAL_BACKBONES,
    TEMPORAL_BACKBONES,
    Registry,
    UnknownNameError,
)

FPS = 25.0
ROI_FRAMES = 200
# The fast configuration used wherever the spatial backbone does not matter.
SMALL = {"spatial_backbone": "conv4", "fps": FPS, "roi_frames": ROI_FRAMES}


def synthetic_roi(
    batch: int,
    generator: torch.Generator,
    pulse_amplitude: float = 0.003,
    noise: float = 0.004,
    distractor: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ROI video [B, 200, 3, 8, 8] with a faint pulse, and its heart rate [B] in bpm.

    Skin of random tone with per-pixel texture; a pulse (fundamental + 2nd harmonic) of relative amplitude
    `pulse_amplitude` in green and weaker in red/blue (skin-reflection ratios as POS assumes); a global
    illumination change that includes an in-band flicker at an unrelated rate (equal in all channels, so
    only a colour projection removes it); additive sensor noise.
    """
    t_s = torch.arange(ROI_FRAMES) / FPS
    hr_bpm = 50.0 + 100.0 * torch.rand(batch, generator=generator)
    phase = 2 * math.pi * hr_bpm[:, None] / 60.0 * t_s + 2 * math.pi * torch.rand(batch, 1, generator=generator)
    wave = torch.sin(phase) + 0.3 * torch.sin(2 * phase)
    tone = 0.5 + 0.7 * torch.rand(batch, 1, generator=generator)
    skin = torch.tensor([0.62, 0.45, 0.36]) * tone
    base = skin[:, None, :, None, None] * (1 + 0.05 * torch.randn(batch, 1, 3, 8, 8, generator=generator))
    flicker_hz = (45.0 + 130.0 * torch.rand(batch, 1, generator=generator)) / 60.0
    light = (
        1.0
        + 0.01 * torch.sin(2 * math.pi * 0.15 * t_s + 6 * torch.rand(batch, 1, generator=generator))
        + distractor * torch.sin(2 * math.pi * flicker_hz * t_s + 6 * torch.rand(batch, 1, generator=generator))
    )
    colour = torch.tensor([0.43, 1.0, 0.69])[None, None, :, None, None]
    roi = base * light[:, :, None, None, None] * (1 + pulse_amplitude * colour * wave[:, :, None, None, None])
    roi = roi + noise * torch.randn(batch, ROI_FRAMES, 3, 8, 8, generator=generator)
    return roi.clamp(0, 1), hr_bpm


def random_frames(batch: int, generator: torch.Generator, size: int = 64) -> torch.Tensor:
    return torch.rand(batch, 8, 3, size, size, generator=generator)


def calibrate_batchnorm(net: nn.Module, *inputs: torch.Tensor) -> None:
    """Set BatchNorm running statistics to those of `inputs`, as training would, then switch to eval."""
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one pass gives the batch statistics
    net.train()
    with torch.no_grad():
        net(*inputs)
    net.eval()


# --- registry ---------------------------------------------------------------------------------------------


def test_registries_list_builtins_and_build() -> None:
    assert {"efficientnet_b0", "resnet18", "conv4"} <= set(SPATIAL_BACKBONES.names())
    assert {"c3d_small", "r3d_18"} <= set(TEMPORAL_BACKBONES.names())
    assert "rppg_cnn" in RPPG_BACKBONES
    assert {"expression_mlp", "hrv_mlp", "stress_mlp"} <= set(HEADS.names())
    backbone = SPATIAL_BACKBONES.build("conv4", channels=[8, 8, 8, 16])
    assert backbone.out_dim == 16
    assert backbone(torch.rand(2, 3, 64, 64)).shape == (2, 16)


def test_registry_unknown_name_lists_known_names() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown spatial backbone 'effnet'.*conv4.*efficientnet_b0"):
        SPATIAL_BACKBONES.build("effnet")
    with pytest.raises(TypeError, match=r"conv4.*chanels"):
        SPATIAL_BACKBONES.build("conv4", chanels=[8])


def test_registry_rejects_duplicate_names() -> None:
    registry = Registry("widget")

    @registry.register("a")
    class A:
        pass

    with pytest.raises(ValueError, match="already registered"):

        @registry.register("a")
        class B:
            pass

    assert registry.build("a").__class__ is A


@pytest.mark.parametrize(
    ("registry", "name", "shape"),
    [
        (SPATIAL_BACKBONES, "efficientnet_b0", (2, 3, 64, 64)),
        (SPATIAL_BACKBONES, "resnet18", (2, 3, 64, 64)),
        (SPATIAL_BACKBONES, "conv4", (2, 3, 64, 64)),
        (TEMPORAL_BACKBONES, "c3d_small", (2, 8, 3, 64, 64)),
        (TEMPORAL_BACKBONES, "r3d_18", (2, 8, 3, 64, 64)),
    ],
)
def test_backbones_return_out_dim_features(registry: Registry, name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    backbone = registry.build(name)
    features = backbone(torch.rand(shape))
    assert features.shape == (2, backbone.out_dim)
    assert torch.isfinite(features).all()
    with pytest.raises(ValueError, match=r"expected"):
        backbone(torch.rand(shape[:-3] + (1,) + shape[-2:]))  # one colour channel


def test_rppg_backbone_keeps_length() -> None:
    backbone = RPPG_BACKBONES.build("rppg_cnn")
    pulse, features = backbone(torch.rand(2, 120, 3, 8, 8))
    assert pulse.shape == (2, 120) and features.shape == (2, backbone.out_dim)
    assert 20 <= backbone.receptive_field_frames <= 35  # about one second at 25 fps


# --- network ----------------------------------------------------------------------------------------------


def test_default_network_outputs() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = MultiTaskNet(fps=FPS, roi_frames=ROI_FRAMES)  # efficientnet_b0 + c3d_small + rppg_cnn
    roi, _ = synthetic_roi(2, g)
    out = net(random_frames(2, g), roi)
    assert tuple(out) == MultiTaskNet.OUTPUT_NAMES
    n_bins = 141  # 40..180 bpm in 1 bpm steps
    shapes = {
        "expression_logits": (2, 7),
        "expression_probs": (2, 7),
        "pulse": (2, ROI_FRAMES),
        "pulse_spectrum": (2, n_bins),
        "hr_bpm": (2,),
        "rmssd_ms": (2,),
        "lf_hf_ratio": (2,),
        "stress_logits": (2, 3),
        "stress_probs": (2, 3),
    }
    assert {k: tuple(v.shape) for k, v in out.items()} == shapes
    assert torch.allclose(out["expression_probs"].sum(1), torch.ones(2))
    assert torch.allclose(out["stress_probs"].sum(1), torch.ones(2))
    assert torch.allclose(out["pulse_spectrum"].sum(1), torch.ones(2))
    assert ((out["hr_bpm"] >= 40) & (out["hr_bpm"] <= 180)).all()
    assert (out["rmssd_ms"] > 0).all() and (out["lf_hf_ratio"] > 0).all()
    assert net.bins_bpm[0] == 40 and net.bins_bpm[-1] == 180


def test_network_rejects_wrong_roi_length() -> None:
    net = MultiTaskNet(**SMALL)
    with pytest.raises(ValueError, match="roi_frames=200"):
        net(torch.rand(1, 8, 3, 64, 64), torch.rand(1, 150, 3, 8, 8))


def test_config_round_trip_through_json() -> None:
    torch.manual_seed(0)
    net = MultiTaskNet(**SMALL, temporal_kwargs={"channels": [8, 16, 16, 32]}, stress_head_kwargs={"hidden_dim": 32})
    rebuilt = MultiTaskNet.from_config(json.loads(json.dumps(net.config)))
    rebuilt.load_state_dict(net.state_dict())
    net.eval()
    rebuilt.eval()
    g = torch.Generator().manual_seed(1)
    frames, (roi, _) = random_frames(2, g), synthetic_roi(2, g)
    with torch.no_grad():
        a, b = net(frames, roi), rebuilt(frames, roi)
    for name in MultiTaskNet.OUTPUT_NAMES:
        torch.testing.assert_close(a[name], b[name])
    with pytest.raises(ValueError, match="unknown keys \\['spatial_backbon'\\]"):
        MultiTaskNet.from_config({"spatial_backbon": "conv4"})


# --- heart rate from the spectrum -------------------------------------------------------------------------


@pytest.mark.parametrize("hr_bpm", [43.0, 61.7, 88.2, 120.5, 176.0])
def test_soft_argmax_recovers_sinusoid_rate(hr_bpm: float) -> None:
    estimator = SpectralHeartRate(FPS, ROI_FRAMES)
    t_s = torch.arange(ROI_FRAMES) / FPS
    pulse = torch.sin(2 * math.pi * hr_bpm / 60.0 * t_s + 0.4)[None]
    estimate, spectrum = estimator(pulse)
    assert abs(estimate.item() - hr_bpm) < 1.5
    assert abs(estimator.bins_bpm[spectrum.argmax()].item() - hr_bpm) <= 1.0
    torch.testing.assert_close(estimator.bins_hz * 60.0, estimator.bins_bpm)


def test_soft_argmax_recovers_noisy_pulse_rate() -> None:
    g = torch.Generator().manual_seed(3)
    estimator = SpectralHeartRate(FPS, ROI_FRAMES)
    t_s = torch.arange(ROI_FRAMES) / FPS
    hr_bpm = torch.linspace(48.0, 165.0, 24)
    phase = 2 * math.pi * hr_bpm[:, None] / 60.0 * t_s
    # Pulse with a harmonic, white noise at SNR ~ 0 dB per sample, and a slow baseline drift.
    pulse = (
        torch.sin(phase)
        + 0.4 * torch.sin(2 * phase + 1.0)
        + 0.7 * torch.randn(24, ROI_FRAMES, generator=g)
        + 2.0 * torch.sin(2 * math.pi * 0.08 * t_s)
    )
    estimate, _ = estimator(pulse)
    assert (estimate - hr_bpm).abs().max().item() < 1.5


# --- losses -----------------------------------------------------------------------------------------------


def test_masked_mean() -> None:
    loss = torch.tensor([1.0, 3.0, float("inf"), 5.0], requires_grad=True)
    mask = torch.tensor([True, True, False, False])
    value = masked_mean(loss, mask)
    assert value.item() == pytest.approx(2.0)
    value.backward()
    assert torch.equal(loss.grad, torch.tensor([0.5, 0.5, 0.0, 0.0]))

    empty = masked_mean(loss, torch.zeros(4, dtype=torch.bool))
    assert empty.item() == 0.0 and empty.requires_grad
    loss.grad = None
    empty.backward()
    assert torch.equal(loss.grad, torch.zeros(4))
    with pytest.raises(ValueError, match="differ"):
        masked_mean(loss, torch.ones(3, dtype=torch.bool))


def test_spectral_loss_prefers_target_rate_and_ignores_time_shift() -> None:
    estimator = SpectralHeartRate(FPS, ROI_FRAMES)
    t_s = torch.arange(ROI_FRAMES) / FPS
    pulses = torch.stack(
        [
            torch.sin(2 * math.pi * 72 / 60 * t_s),  # right rate
            torch.sin(2 * math.pi * 72 / 60 * (t_s - 0.23)),  # right rate, delayed (pulse transit)
            torch.sin(2 * math.pi * 95 / 60 * t_s),  # wrong rate
        ]
    )
    _, spectrum = estimator(pulses)
    loss = spectral_hr_loss(spectrum, torch.full((3,), 72.0), estimator.bins_bpm)
    assert loss.shape == (3,)
    assert loss[0] < 0.5 and loss[2] > 5 * loss[0]
    assert loss[1].item() == pytest.approx(loss[0].item(), rel=0.05)
    # A missing label stored as 0 bpm is clamped into the band: finite, so masking cannot leak NaN.
    assert torch.isfinite(spectral_hr_loss(spectrum, torch.zeros(3), estimator.bins_bpm)).all()


def test_neg_pearson_and_hrv_losses() -> None:
    t_s = torch.arange(ROI_FRAMES) / FPS
    ref = torch.sin(2 * math.pi * 1.2 * t_s)[None]
    assert neg_pearson_loss(3 * ref + 1, ref).item() == pytest.approx(0.0, abs=1e-5)
    assert neg_pearson_loss(-ref, ref).item() == pytest.approx(2.0, abs=1e-5)
    same = hrv_log_loss(torch.tensor([40.0]), torch.tensor([1.5]), torch.tensor([40.0]), torch.tensor([1.5]))
    off = hrv_log_loss(torch.tensor([80.0]), torch.tensor([1.5]), torch.tensor([40.0]), torch.tensor([1.5]))
    assert same.item() == 0.0 and 0.1 < off.item() < 1.0
    # Missing HRV labels are zeros: the loss stays finite.
    assert torch.isfinite(hrv_log_loss(torch.ones(2), torch.ones(2), torch.zeros(2), torch.zeros(2))).all()


def _grad_norms(net: MultiTaskNet) -> dict[str, float]:
    norms: dict[str, float] = {}
    for part in ("spatial", "temporal", "rppg", "expression_head", "hrv_head", "stress_head"):
        grads = [p.grad for p in getattr(net, part).parameters() if p.grad is not None]
        norms[part] = float(sum(g.abs().sum() for g in grads)) if grads else 0.0
    return norms


@pytest.mark.parametrize(
    ("task", "reaches", "untouched"),
    [
        ("expression", {"spatial", "temporal", "expression_head"}, {"rppg", "hrv_head", "stress_head"}),
        ("spectral", {"rppg"}, {"spatial", "temporal", "expression_head", "hrv_head", "stress_head"}),
        ("pearson", {"rppg"}, {"spatial", "temporal", "expression_head", "hrv_head", "stress_head"}),
        ("hrv", {"rppg", "hrv_head"}, {"spatial", "temporal", "expression_head", "stress_head"}),
        ("stress", {"stress_head"}, {"spatial", "temporal", "expression_head", "rppg", "hrv_head"}),
    ],
)
def test_each_loss_reaches_its_stream(task: str, reaches: set[str], untouched: set[str]) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = MultiTaskNet(**SMALL)
    roi, hr_bpm = synthetic_roi(4, g)
    out = net(random_frames(4, g), roi)
    losses = {
        "expression": lambda: F.cross_entropy(out["expression_logits"], torch.tensor([0, 1, 2, 3])),
        "spectral": lambda: spectral_hr_loss(out["pulse_spectrum"], hr_bpm, net.bins_bpm).mean(),
        "pearson": lambda: neg_pearson_loss(out["pulse"], roi[:, :, 1].mean(dim=(2, 3))).mean(),
        "hrv": lambda: hrv_log_loss(
            out["rmssd_ms"], out["lf_hf_ratio"], torch.full((4,), 30.0), torch.full((4,), 2.0)
        ).mean(),
        "stress": lambda: F.cross_entropy(out["stress_logits"], torch.tensor([0, 1, 2, 0])),
    }
    losses[task]().backward()
    norms = _grad_norms(net)
    assert all(norms[part] > 0 for part in reaches), norms
    assert all(norms[part] == 0 for part in untouched), norms


def test_stress_loss_reaches_streams_when_inputs_not_detached() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = MultiTaskNet(**SMALL, stress_head_kwargs={"detach_inputs": False})
    roi, _ = synthetic_roi(4, g)
    out = net(random_frames(4, g), roi)
    F.cross_entropy(out["stress_logits"], torch.tensor([0, 1, 2, 0])).backward()
    norms = _grad_norms(net)
    assert all(norms[part] > 0 for part in ("spatial", "temporal", "rppg", "hrv_head", "stress_head")), norms


def test_rppg_cnn_learns_heart_rate_quickly() -> None:
    """A few dozen Adam steps on the spectral loss take the HR error from chance to a few bpm.

    The ROI carries an in-band illumination flicker three times stronger than the pulse, so an untrained
    network reports the flicker rate; it has to learn the colour projection that removes it.
    """
    torch.manual_seed(0)
    model = RPPGCNN()
    estimator = SpectralHeartRate(FPS, ROI_FRAMES)
    roi_val, hr_val = synthetic_roi(16, torch.Generator().manual_seed(99))

    def errors_bpm() -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            estimate, _ = estimator(model(roi_val)[0])
        model.train()
        return (estimate - hr_val).abs()

    before = errors_bpm()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(40):
        roi, hr_bpm = synthetic_roi(8, g)
        _, spectrum = estimator(model(roi)[0])
        loss = spectral_hr_loss(spectrum, hr_bpm, estimator.bins_bpm).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = errors_bpm()
    # Over seeds 0-5 at this point: median error <= 0.5 bpm, mean <= 6.5 bpm (one clip may still lock onto a
    # harmonic or the flicker); untrained: median >= 20, mean >= 40.
    assert before.median() > 15.0, before
    assert after.median() < 2.0, after
    assert after.mean() < before.mean() / 4, (before.mean(), after.mean())


# --- export -----------------------------------------------------------------------------------------------


def test_onnx_export_matches_pytorch_with_dynamic_batch(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = MultiTaskNet(fps=FPS, roi_frames=ROI_FRAMES)
    roi, _ = synthetic_roi(4, g)
    calibrate_batchnorm(net, random_frames(4, g), roi)
    path = tmp_path / "net.onnx"
    export_onnx(net, (random_frames(2, g), roi[:2]), path, dynamic_spatial=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(MultiTaskNet.OUTPUT_NAMES)
    for batch in (1, 3):
        frames, (roi, _) = random_frames(batch, g), synthetic_roi(batch, g)
        with torch.no_grad():
            expected = net.forward_tuple(frames, roi)
        got = session.run(None, {"frames": frames.numpy(), "roi": roi.numpy()})
        for name, want, have in zip(MultiTaskNet.OUTPUT_NAMES, expected, got, strict=True):
            assert have.shape == tuple(want.shape), name
            # Scale-aware: 1e-4 of the output's magnitude (hr_bpm ~ 100, probabilities ~ 1).
            scale = max(1.0, float(want.abs().max()))
            np.testing.assert_allclose(have, want.numpy(), rtol=0, atol=1e-4 * scale, err_msg=name)


# --- pretrained weights -----------------------------------------------------------------------------------


def test_weights_load_from_local_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = torchvision.models.efficientnet_b0(weights=None)
    path = tmp_path / "efficientnet_b0.pth"
    torch.save(source.state_dict(), path)  # the full classifier's state dict, as torchvision publishes it
    backbone = EfficientNetB0(weights=str(path))
    torch.testing.assert_close(backbone.trunk[0][0][0].weight, source.features[0][0].weight)
    torch.testing.assert_close(backbone.trunk[0][-1][1].running_var, source.features[-1][1].running_var)
    # Through the network config too.
    net = MultiTaskNet(fps=FPS, roi_frames=ROI_FRAMES, spatial_kwargs={"weights": str(path)})
    torch.testing.assert_close(net.spatial.trunk[0][0][0].weight, source.features[0][0].weight)


def test_bad_weights_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"efficientnet_b0: weights 'imagenet'.*IMAGENET1K_V1"):
        EfficientNetB0(weights="imagenet")
    with pytest.raises(ValueError, match=r"r3d_18: weights 'IMAGENET1K_V1'.*KINETICS400_V1"):
        TEMPORAL_BACKBONES.build("r3d_18", weights="IMAGENET1K_V1")
    missing = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        EfficientNetB0(weights=str(missing))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pth"):
        EfficientNetB0(weights=str(corrupt))
    other = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), other)
    with pytest.raises(ValueError, match=r"resnet18.pth (does not match|has tensors of the wrong shape)"):
        EfficientNetB0(weights=str(other))

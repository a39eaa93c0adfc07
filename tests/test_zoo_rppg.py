"""Model zoo, rPPG part: the physnet and tscan backbones (train on a fixed batch, export to ONNX with parity, keep the
clip length), the temporal shift, the camera-like ROI augmentations (the pulse's frequency survives each one) and
the renderer's camera-realism options (they change the frames as intended and are off by default)."""

from __future__ import annotations

import hashlib
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch
from zoo_helpers import assert_loss_falls, assert_onnx_parity, fixed_batch, tiny_net

from stress_lightning.data import render
from stress_lightning.data import synthetic as syn
from stress_lightning.data.transforms import (
    roi_camera_transform,
    roi_gain_drift,
    roi_quantise,
    roi_sensor_noise,
    roi_shading_modulation,
    roi_time_jitter,
    roi_train_transform,
)
from stress_lightning.models.backbones.physnet import TemporalEnvelope, normalise_roi
from stress_lightning.models.backbones.tscan import temporal_shift
from stress_lightning.models.registry import RPPG_BACKBONES
from stress_lightning.signals.rppg import heart_rate_bpm, pos

FPS = 25.0


# -- backbones -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("physnet", {}),
        ("tscan", {}),
        # the options that add operators: replicate padding + pooling, the envelope, the integrating cumsum
        ("physnet", {"normalisation": "moving_mean", "envelope": True}),
        ("tscan", {"output": "derivative", "normalisation": "moving_mean", "envelope": True}),
    ],
)
def test_rppg_backbone_trains_and_exports(name: str, kwargs: dict, tmp_path: Path) -> None:
    """Built by its registry name inside the network: the loss falls on a fixed batch and the ONNX export of the
    face graph (frames + roi) matches PyTorch."""
    net = tiny_net(rppg_backbone=name, rppg_kwargs=kwargs)
    batch = fixed_batch()
    assert_loss_falls(net, batch)
    report = assert_onnx_parity(net, batch, tmp_path)
    assert report  # check_parity returns the per-output differences it checked


@pytest.mark.parametrize("name", ["physnet", "tscan"])
@pytest.mark.parametrize("frames", [63, 64])
def test_rppg_backbone_keeps_the_clip_length(name: str, frames: int) -> None:
    backbone = RPPG_BACKBONES.build(name, out_dim=16).eval()
    roi = 0.5 + 0.01 * torch.rand(2, frames, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pulse, features = backbone(roi)
    assert pulse.shape == (2, frames) and features.shape == (2, 16)
    assert torch.isfinite(pulse).all() and torch.isfinite(features).all()
    with pytest.raises(ValueError, match=name):
        backbone(roi[:, :, :2])


def test_bad_backbone_arguments_name_the_problem() -> None:
    with pytest.raises(ValueError, match="physnet: unknown normalisation"):
        RPPG_BACKBONES.build("physnet", normalisation="zscore")
    with pytest.raises(ValueError, match="tscan: output"):
        RPPG_BACKBONES.build("tscan", output="velocity")


def test_temporal_shift_moves_a_third_of_the_channels_each_way() -> None:
    t = torch.arange(5, dtype=torch.float32)
    x = (10 * torch.arange(6, dtype=torch.float32)[:, None] + t).view(1, 6, 5, 1, 1).expand(2, 6, 5, 2, 2)
    y = temporal_shift(x, fold_div=3)
    assert y.shape == x.shape
    # channels 0-1: frame t holds frame t - 1 (a zero enters at the start)
    assert torch.equal(y[0, 0, :, 0, 0], torch.tensor([0.0, 0, 1, 2, 3]))
    assert torch.equal(y[0, 1, :, 0, 0], torch.tensor([0.0, 10, 11, 12, 13]))
    # channels 2-3: frame t holds frame t + 1 (a zero enters at the end)
    assert torch.equal(y[0, 2, :, 0, 0], torch.tensor([21.0, 22, 23, 24, 0]))
    assert torch.equal(y[1, 3, :, 1, 1], torch.tensor([31.0, 32, 33, 34, 0]))
    # the rest stay where they were
    assert torch.equal(y[:, 4:], x[:, 4:])


def test_envelope_starts_as_identity_and_is_symmetric() -> None:
    envelope = TemporalEnvelope()
    pulse = torch.randn(3, 50)
    assert torch.equal(envelope(pulse), pulse)
    with torch.no_grad():
        envelope.log_gain.fill_(0.1)
    gain = envelope.gain(50)
    assert torch.allclose(gain, gain.flip(0)) and gain[0] > gain[25] > 1.0


def test_moving_mean_normalisation_removes_a_slow_drift() -> None:
    """A 1 % drift over the clip stays in the clip-mean normalisation and is gone from the moving-mean one, where
    a pulse-band oscillation is kept."""
    t = torch.arange(200) / FPS
    drift = 1.0 + 0.01 * (t / t[-1])
    pulse = 0.002 * torch.sin(2 * math.pi * 1.2 * t)
    x = (0.5 * drift * (1 + pulse)).view(1, 1, 200, 1, 1).expand(1, 3, 200, 2, 2)
    clip = normalise_roi(x, "clip_mean", 41, 1.0)[0, 0, 20:-20, 0, 0]
    moving = normalise_roi(x, "moving_mean", 41, 1.0)[0, 0, 20:-20, 0, 0]
    assert (clip - pulse[20:-20]).abs().max() > 0.004
    assert (moving - pulse[20:-20]).abs().max() < 0.0006


# -- ROI augmentations ---------------------------------------------------------------------------------------------


def _roi_with_pulse(hr_bpm: float, seconds: float = 8.0) -> torch.Tensor:
    """An ROI clip [Tr, 3, 8, 8]: skin of varying brightness, a 0.3 % pulse (POS colour signature), sensor noise."""
    g = torch.Generator().manual_seed(1)
    t = torch.arange(int(seconds * FPS)) / FPS
    pulse = 0.003 * torch.sin(2 * math.pi * hr_bpm / 60.0 * t)
    base = torch.tensor([0.55, 0.40, 0.32]).view(1, 3, 1, 1) * (1 + 0.05 * torch.randn(1, 1, 8, 8, generator=g))
    weights = torch.tensor([0.33, 0.77, 0.53]).view(1, 3, 1, 1)
    return base * (1 - weights * pulse.view(-1, 1, 1, 1)) + 0.0005 * torch.randn(len(t), 3, 8, 8, generator=g)


def _pos_hr(roi: torch.Tensor) -> float:
    return heart_rate_bpm(pos(roi.mean(dim=(2, 3)).double().numpy(), FPS), FPS)


AUGMENTATIONS = {
    "sensor_noise": lambda roi, g: roi_sensor_noise(roi, 0.002, g),
    "gain_drift": lambda roi, g: roi_gain_drift(roi, FPS, 0.01, 0.03, 0.04, g),
    "shading": lambda roi, g: roi_shading_modulation(roi, FPS, 0.02, g),
    "quantise": lambda roi, g: roi_quantise(roi_sensor_noise(roi, 0.001, g), 255.0),
    "time_jitter": lambda roi, g: roi_time_jitter(roi, 0.3, g),
    "camera": lambda roi, g: roi_camera_transform(roi, FPS, 1.0, g),
    "camera_preset": lambda roi, g: roi_train_transform(roi, generator=g, preset="camera"),
}


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_augmentation_keeps_the_dominant_frequency(name: str) -> None:
    """At the strongest setting of each augmentation, POS on the augmented ROI finds the pulse's rate."""
    for hr_bpm, seed in itertools.product((55.0, 95.0, 140.0), range(3)):
        roi = _roi_with_pulse(hr_bpm)
        out = AUGMENTATIONS[name](roi, torch.Generator().manual_seed(seed))
        assert out.shape == roi.shape and torch.isfinite(out).all()
        assert not torch.equal(out, roi)
        assert abs(_pos_hr(out) - hr_bpm) < 2.0, (name, hr_bpm, seed)


def test_channel_drift_stays_below_the_pulse_band() -> None:
    """The per-channel (colour) part of the gain drift has no power at heart rates: only equal-in-all-channels
    gain changes reach the pulse band."""
    roi = torch.full((1000, 3, 1, 1), 0.5)
    out = roi_gain_drift(roi, FPS, channel_amplitude=0.05, common_amplitude=0.0, generator=torch.Generator())
    chroma = (out[:, 0, 0, 0] / out[:, 1, 0, 0]).double().numpy()
    freqs, power = scipy.signal.periodogram(chroma, FPS, window="blackmanharris", detrend="linear")
    assert power[freqs >= 0.7].sum() < 1e-6 * power.sum()


def test_gain_preset_is_unchanged_and_unknown_preset_is_refused() -> None:
    roi = _roi_with_pulse(72.0)
    a = roi_train_transform(roi, generator=torch.Generator().manual_seed(3))
    b = roi_train_transform(roi, generator=torch.Generator().manual_seed(3), preset="gain")
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown preset 'webcam'"):
        roi_train_transform(roi, preset="webcam")


# -- renderer options ----------------------------------------------------------------------------------------------

SMALL = syn.SyntheticConfig(num_subjects=3, duration_s=4.0, width=64, height=64, seed=5)
# sha256 of the first 6 uint8 frames of SMALL's first session as the renderer drew them before the realism options
# existed (generator 1.1.0; checked equal to the frames of the `make fit` corpus on disk). Only an intended change
# of the default rendering may change it (then bump synthetic.GENERATOR_VERSION too).
DEFAULT_FRAMES_SHA256 = "587a0863b5c3eab493d1d67ccec8c44a36f59b4259fb4321479144a599da7fe7"


def _first_session() -> tuple[syn.SessionPlan, syn.SessionSignals]:
    plan = syn.plan_sessions(SMALL)[0]
    return plan, syn.session_signals(plan, SMALL)


def test_default_rendering_is_unchanged() -> None:
    plan, signals = _first_session()
    frames = [f for f, _ in itertools.islice(syn.render_frames(plan, SMALL, signals), 6)]
    assert hashlib.sha256(np.stack(frames).tobytes()).hexdigest() == DEFAULT_FRAMES_SHA256
    # the options at their "off" values are the defaults
    ident = plan.subject.identity
    plain = render.FaceRenderer(ident, 64, 64).layers("happy", 1.0)
    off = render.FaceRenderer(ident, 64, 64, skin_texture=0.0).layers("happy", 1.0)
    assert np.array_equal(plain.face, off.face) and np.array_equal(plain.skin, off.skin)


def test_skin_texture_adds_fine_detail_on_skin_only() -> None:
    ident = _first_session()[0].subject.identity
    plain = render.FaceRenderer(ident, 64, 64).layers("neutral", 0.0)
    textured = render.FaceRenderer(ident, 64, 64, skin_texture=0.1).layers("neutral", 0.0)
    skin = plain.skin_mask > 0.999
    ratio = textured.face[..., 1][skin] / plain.face[..., 1][skin]
    assert 0.05 < ratio.std() < 0.2  # about the requested 10 % in green
    assert np.array_equal(textured.face[..., 3], plain.face[..., 3])  # coverage unchanged
    nonskin = plain.skin_mask < 1e-6
    assert np.array_equal(textured.face[nonskin], plain.face[nonskin])
    # the same subject always has the same skin
    again = render.FaceRenderer(ident, 64, 64, skin_texture=0.1).layers("neutral", 0.0)
    assert np.array_equal(again.face, textured.face)


def test_auto_exposure_follows_a_brightness_change_slowly_and_in_steps() -> None:
    """The scene darkens by 30 % at frame 50: the loop brings the frame mean back towards the target over about
    its time constant, in exposure steps, and not within one beat."""
    ae = render.AutoExposure(FPS, target=110.0, time_constant_s=0.7)
    means, gains = [], []
    for i in range(150):
        scene = np.full((8, 8, 3), 100.0 if i < 50 else 70.0, np.float32)
        value = render.compose_frame(
            np.zeros((8, 8, 4), np.float32),
            np.zeros((8, 8, 4), np.float32),
            scene / 255.0,
            np.ones(3, np.float32),
            np.ones((1, 8, 1), np.float32),
            np.zeros(3, np.float32),
            0.0,
            None,
            0.0,
            0.0,
            exposure=ae.gain,
        )
        gains.append(float(ae.gain[0]))
        means.append(float(value.mean()))
        ae.update(value)
    assert abs(means[49] - 110.0) < 3.0  # converged before the change
    assert means[51] < 80.0  # the drop passes through at first ...
    assert abs(means[-1] - 110.0) < 8.0  # ... and is corrected later
    assert means[60] < means[80]  # gradually, not at once
    steps = np.diff(np.log2(gains))
    assert np.allclose(steps[np.abs(steps) > 0] * 32, np.round(steps[np.abs(steps) > 0] * 32), atol=1e-3)


def test_motion_bursts_and_box_jitter() -> None:
    rng = np.random.default_rng(0)
    bursts = render.head_motion_bursts(2500, FPS, 128, rng, per_minute=12.0)
    assert bursts.shape == (2500, 4) and np.abs(bursts[:, 0]).max() > 1.0
    assert np.abs(bursts[:, 0]).max() <= 0.06 * 128 * 2  # overlapping bursts at most add up
    assert not render.head_motion_bursts(100, FPS, 128, rng, per_minute=0.0).any()
    boxes = np.tile([[20.0, 10.0, 80.0, 90.0]], (300, 1))
    jittered = render.jitter_face_boxes(boxes, np.random.default_rng(1), sigma=0.02)
    moved = (jittered - boxes) / np.array([60.0, 80.0, 60.0, 80.0])
    assert 0.01 < moved.std() < 0.03
    # correlated over a few frames: neighbouring frames move together
    assert np.corrcoef(moved[:-1, 0], moved[1:, 0])[0, 1] > 0.5


def test_camera_realism_options_of_the_generator(tmp_path: Path) -> None:
    """The render options reach the corpus through SyntheticConfig; off, they leave the config hash (so a corpus
    written before they existed) unchanged; on, they change the frames and the face boxes."""
    from dataclasses import asdict

    from stress_lightning.data.synthetic import OPTIONAL_DEFAULTS, SyntheticConfig, config_hash, generate_corpus

    small = {"num_subjects": 3, "duration_s": 4.0, "width": 48, "height": 48, "seed": 3}
    plain = SyntheticConfig(**small)
    assert set(OPTIONAL_DEFAULTS) <= set(asdict(plain))
    before = {k: v for k, v in asdict(plain).items() if k not in OPTIONAL_DEFAULTS}
    assert config_hash(plain) == config_hash(SyntheticConfig(**before))
    camera = SyntheticConfig(
        **small,
        skin_texture=0.1,
        auto_exposure=True,
        auto_white_balance=True,
        motion_bursts_per_min=30.0,
        box_jitter=0.02,
    )
    assert config_hash(camera) != config_hash(plain)
    generate_corpus(tmp_path / "plain", plain, workers=1, progress=False)
    generate_corpus(tmp_path / "camera", camera, workers=1, progress=False)
    session = sorted((tmp_path / "plain").glob("S*/S*_low"))[0].relative_to(tmp_path / "plain")
    boxes = [(tmp_path / name / session / "face_boxes.csv").read_text() for name in ("plain", "camera")]
    assert boxes[0] != boxes[1]
    with pytest.raises(ValueError, match="auto_white_balance needs auto_exposure"):
        SyntheticConfig(**small, auto_white_balance=True)
    with pytest.raises(ValueError, match="box_jitter must be >= 0"):
        SyntheticConfig(**small, box_jitter=-0.1)

"""The sequence models of the zoo: SISTCM (super-image conv + two-stream LSTM, multi-stage supervision) and
st_attention (spatial/temporal attention + a gated landmark stream). Each trains on a fixed batch inside a
MultiTaskNet and exports to ONNX with parity; the model-specific properties are checked on the backbone alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from zoo_helpers import assert_loss_falls, assert_onnx_parity, fixed_batch, tiny_net

from stress_lightning.models.backbones.sistcm import (
    SISTCM,
    from_tall_super_image,
    from_wide_super_image,
    to_tall_super_image,
    to_wide_super_image,
)
from stress_lightning.models.backbones.st_attention import STAttention
from stress_lightning.models.registry import TEMPORAL_BACKBONES

SISTCM_KWARGS = {"channels": [8, 16], "hidden": 16}
ST_ATTENTION_KWARGS = {"channels": [8, 16], "attention_hidden": 16, "landmark_hidden": 16}


def _landmarks(batch: int = 2, frames: int = 8, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([100.0, 120.0]) + 40.0 * torch.rand(12, 2, generator=g)
    return base + 2.0 * torch.randn(batch, frames, 12, 2, generator=g)


def _assert_other_batch_size_runs(net: torch.nn.Module, onnx_path: Path) -> None:
    """The graph exported at batch 2 must run at batch 3 too (the LSTM/attention reshapes keep the batch axis)."""
    batch = fixed_batch(batch=3, seed=5)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["expression_logits"], {"frames": batch["frames"].numpy(), "roi": batch["roi"].numpy()})[0]
    with torch.no_grad():
        want = net.eval()(batch["frames"], batch["roi"])["expression_logits"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


# ---- SISTCM -----------------------------------------------------------------------------------------------------


def test_super_images_tile_frames_and_fold_back() -> None:
    frames = torch.rand(2, 8, 3, 16, 12)  # H != W: a swapped axis would show
    wide, tall = to_wide_super_image(frames), to_tall_super_image(frames)
    assert wide.shape == (2, 3, 16, 8 * 12) and tall.shape == (2, 3, 8 * 16, 12)
    assert torch.equal(wide[..., 3 * 12 : 4 * 12], frames[:, 3])
    assert torch.equal(tall[:, :, 5 * 16 : 6 * 16], frames[:, 5])
    assert torch.equal(from_wide_super_image(wide, 8), frames)
    assert torch.equal(from_tall_super_image(tall, 8), frames)


def test_sistcm_fusion_weights_are_a_softmax_and_forward_matches_forward_aux() -> None:
    torch.manual_seed(0)
    model = SISTCM(**SISTCM_KWARGS).eval()
    with torch.no_grad():
        model.fusion_logits.copy_(torch.tensor([1.5, -0.7]))
    weights = model.fusion_weights()
    assert torch.all(weights > 0) and torch.isclose(weights.sum(), torch.tensor(1.0))
    frames = torch.rand(2, 8, 3, 32, 32)
    features, aux = model.forward_aux(frames)
    assert features.shape == (2, model.out_dim) == (2, 32)
    assert {k: tuple(v.shape) for k, v in aux.items()} == {"feature_stream": (2, 7), "frame": (2, 7)}
    assert set(aux) == set(model.aux_loss_weights)
    assert torch.equal(features, model(frames))


def test_sistcm_rejects_frames_whose_tiles_pooling_would_straddle() -> None:
    model = SISTCM(**SISTCM_KWARGS)  # two pooling blocks: sizes must be divisible by 4
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.rand(1, 8, 3, 30, 32))


# torch's ONNX exporter warns on every LSTM that another batch size may fail; the test runs a second one instead.
@pytest.mark.filterwarnings("ignore:Exporting a model to ONNX with a batch_size other than 1:UserWarning")
def test_sistcm_in_multitask_net_trains_and_exports(tmp_path: Path) -> None:
    net = tiny_net(temporal_backbone="sistcm", temporal_kwargs=SISTCM_KWARGS)
    assert net.aux_loss_weights() == {"aux/feature_stream": 0.5, "aux/frame": 0.5}
    assert_loss_falls(net, fixed_batch(with_landmarks=True))
    assert_onnx_parity(net, fixed_batch(), tmp_path)
    _assert_other_batch_size_runs(net, tmp_path / "model.onnx")


# ---- st_attention -------------------------------------------------------------------------------------------------


def test_st_attention_without_landmarks_is_the_appearance_stream() -> None:
    torch.manual_seed(0)
    model = STAttention(**ST_ATTENTION_KWARGS).eval()
    frames, landmarks = torch.rand(2, 8, 3, 32, 32), _landmarks()
    absent = model(frames)
    features, aux = model.forward_aux(frames, landmarks, torch.tensor([False, False]))
    assert torch.equal(features, absent) and torch.equal(aux["landmark_stream"], torch.zeros(2, 7))
    assert model.forward_aux(frames)[1] == {}
    mixed, aux = model.forward_aux(frames, landmarks, torch.tensor([True, False]))
    assert torch.equal(mixed[1], absent[1]) and not torch.allclose(mixed[0], absent[0])
    assert aux["landmark_stream"][0].abs().sum() > 0
    with pytest.raises(ValueError, match="landmarks must be"):
        model(frames, landmarks[:, :4])


def test_st_attention_landmarks_ignore_face_position_and_size() -> None:
    torch.manual_seed(0)
    model = STAttention(**ST_ATTENTION_KWARGS).eval()
    frames, landmarks = torch.rand(2, 8, 3, 32, 32), _landmarks()
    moved = 2.5 * landmarks + torch.tensor([-60.0, 35.0])
    torch.testing.assert_close(model(frames, moved), model(frames, landmarks), rtol=0, atol=1e-5)


def test_st_attention_weights_sum_to_one() -> None:
    torch.manual_seed(0)
    model = STAttention(**ST_ATTENTION_KWARGS).eval()
    _, spatial, temporal = model.attention(torch.rand(2, 8, 3, 32, 32))
    assert spatial.shape == (2, 8, 8, 8) and temporal.shape == (2, 8)
    torch.testing.assert_close(spatial.sum(dim=(2, 3)), torch.ones(2, 8))
    torch.testing.assert_close(temporal.sum(dim=1), torch.ones(2))


def test_st_attention_in_multitask_net_trains_and_exports(tmp_path: Path) -> None:
    net = tiny_net(temporal_backbone="st_attention", temporal_kwargs=ST_ATTENTION_KWARGS)
    assert net.aux_loss_weights() == {"aux/landmark_stream": 0.3}
    assert TEMPORAL_BACKBONES.get("st_attention").uses_landmarks
    assert_loss_falls(net, fixed_batch(with_landmarks=True))
    assert_onnx_parity(net, fixed_batch(), tmp_path)
    _assert_other_batch_size_runs(net, tmp_path / "model.onnx")

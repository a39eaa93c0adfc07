"""The pytorchvideo I3D R50 temporal backbone: shapes, local Kinetics-style weights, ONNX parity in a MultiTaskNet."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from stress_lightning.export.onnx import check_parity, export_onnx
from stress_lightning.models.backbones.temporal import I3DR50
from stress_lightning.models.net import MultiTaskNet
from stress_lightning.models.registry import TEMPORAL_BACKBONES

ROI_FRAMES = 64


def test_i3d_r50_is_registered_and_pools_any_clip_size_to_2048() -> None:
    torch.manual_seed(0)
    backbone = TEMPORAL_BACKBONES.build("i3d_r50").eval()
    assert isinstance(backbone, I3DR50)
    assert backbone.out_dim == 2048
    # The model-zoo head's fixed (4, 7, 7) pool would reject all of these; adaptive pooling takes them.
    for shape in [(2, 8, 3, 64, 64), (1, 4, 3, 32, 48), (1, 2, 3, 16, 16)]:
        features = backbone(torch.rand(shape))
        assert features.shape == (shape[0], 2048)
        assert torch.isfinite(features).all()


def test_i3d_r50_trains_end_to_end() -> None:
    torch.manual_seed(0)
    backbone = I3DR50(dropout=0.2).train()
    backbone(torch.rand(2, 8, 3, 64, 64)).square().mean().backward()
    stem = backbone.trunk[0].blocks[0].conv.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0


def test_i3d_r50_rejects_bad_clips() -> None:
    backbone = I3DR50()
    with pytest.raises(ValueError, match=r"i3d_r50: a clip needs at least 2 frames.*\(1, 1, 3, 64, 64\)"):
        backbone(torch.rand(1, 1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"expected frames \[B, T, 3, H, W\]"):
        backbone(torch.rand(1, 8, 1, 64, 64))


def _zoo_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A file laid out like pytorchvideo's `I3D_8x8_R50.pyth`: the full classifier under "model_state"."""
    from pytorchvideo.models.hub.resnet import i3d_r50

    torch.manual_seed(1)
    state = i3d_r50(pretrained=False).state_dict()
    assert any(k.startswith("blocks.6.proj.") for k in state)  # the Kinetics-400 classifier the backbone drops
    torch.save({"epoch": 196, "model_state": state}, path)
    return state


def test_i3d_r50_loads_a_local_zoo_checkpoint_and_a_plain_state_dict(tmp_path: Path) -> None:
    checkpoint = tmp_path / "I3D_8x8_R50.pyth"
    state = _zoo_checkpoint(checkpoint)
    backbone = I3DR50(weights=str(checkpoint))
    blocks = backbone.trunk[0].blocks
    torch.testing.assert_close(blocks[0].conv.weight, state["blocks.0.conv.weight"])
    torch.testing.assert_close(
        blocks[5].res_blocks[2].branch2.norm_c.running_var, state["blocks.5.res_blocks.2.branch2.norm_c.running_var"]
    )

    plain = tmp_path / "i3d_trunk.pt"
    torch.save(backbone.trunk[0].state_dict(), plain)
    # Through the network config, as a YAML `temporal_kwargs: {weights: ...}` would pass it.
    net = MultiTaskNet(spatial_backbone="conv4", temporal_backbone="i3d_r50", temporal_kwargs={"weights": str(plain)})
    torch.testing.assert_close(net.temporal.trunk[0].blocks[0].conv.weight, state["blocks.0.conv.weight"])


def test_i3d_r50_bad_weights_name_the_file_and_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"i3d_r50: weights 'KINETICS400_V1' is not a file.*downloads nothing"):
        I3DR50(weights="KINETICS400_V1")
    with pytest.raises(FileNotFoundError, match=r"i3d_r50: weights file .*absent\.pyth does not exist"):
        I3DR50(weights=str(tmp_path / "absent.pyth"))
    corrupt = tmp_path / "corrupt.pyth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"i3d_r50: cannot read weights file .*corrupt\.pyth"):
        I3DR50(weights=str(corrupt))
    other = tmp_path / "r3d_18.pth"
    torch.save(torchvision.models.video.r3d_18(weights=None).state_dict(), other)
    with pytest.raises(ValueError, match=r"i3d_r50: weights file .*r3d_18\.pth does not match the I3D R50"):
        I3DR50(weights=str(other))
    wrong_width = tmp_path / "wrong_width.pt"
    state = I3DR50().trunk[0].state_dict()
    state["blocks.0.conv.weight"] = torch.zeros(32, 3, 5, 7, 7)
    torch.save(state, wrong_width)
    with pytest.raises(ValueError, match=r"wrong_width\.pt has tensors of the wrong shape: \['blocks\.0\.conv\.weight"):
        I3DR50(weights=str(wrong_width))


def test_multitask_net_with_i3d_r50_exports_to_onnx_with_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = MultiTaskNet(
        spatial_backbone="conv4", temporal_backbone="i3d_r50", rppg_backbone="rppg_cnn", roi_frames=ROI_FRAMES
    ).eval()
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(ROI_FRAMES, dtype=torch.float32) / 25.0
    # A 72 bpm pulse, so the spectral heart rate is not a soft-argmax over a flat (rounding-sensitive) spectrum.
    pulse = 0.003 * torch.sin(2 * torch.pi * 1.2 * t)[None, :, None, None, None]

    def clip(batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        frames = torch.rand(batch_size, 8, 3, 64, 64, generator=gen)
        roi = 0.5 + pulse + 0.002 * torch.rand(batch_size, ROI_FRAMES, 3, 8, 8, generator=gen)
        return frames, roi

    path = export_onnx(net, clip(1), tmp_path / "i3d.onnx")
    diffs = check_parity(net, path, clip(2), atol=1e-3)  # raises OnnxParityError beyond the bound
    assert set(diffs) == set(MultiTaskNet.OUTPUT_NAMES)
    assert diffs["expression_logits"] <= 1e-4

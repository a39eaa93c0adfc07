"""Model zoo backbones (resnet50, vgg16, fer_cnn, x3d_xs, early_fusion, late_fusion, cnn_lstm): each trains on a
fixed batch and exports to ONNX with parity inside a MultiTaskNet, pools any face size to its out_dim, and the
torchvision/pytorchvideo ones load local weight files and reject wrong ones by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from zoo_helpers import assert_loss_falls, assert_onnx_parity, fixed_batch, tiny_net

from stress_lightning.export.onnx import check_parity
from stress_lightning.models.backbones.cnn_lstm import CNNLSTM
from stress_lightning.models.backbones.early_fusion import EarlyFusion
from stress_lightning.models.backbones.late_fusion import LateFusion
from stress_lightning.models.backbones.vgg16 import VGG16
from stress_lightning.models.backbones.x3d import X3DXS
from stress_lightning.models.registry import SPATIAL_BACKBONES, TEMPORAL_BACKBONES

# (registry, name, kwargs, out_dim with those kwargs)
ZOO: list[tuple[str, str, dict[str, Any], int]] = [
    ("spatial", "resnet50", {}, 2048),
    ("spatial", "vgg16", {}, 512),
    ("spatial", "fer_cnn", {}, 256),
    ("temporal", "x3d_xs", {}, 2048),
    ("temporal", "early_fusion", {"num_frames": 8}, 128),
    ("temporal", "late_fusion", {"frame_backbone": "fer_cnn", "frame_kwargs": {"channels": [8, 16]}}, 16),
    ("temporal", "cnn_lstm", {"hidden_size": 32}, 32),
]
# The large ImageNet/Kinetics trunks train on two clips for six steps: enough to show that gradients reach a
# falling loss (it falls to about a third) at a fraction of the time.
HEAVY = {"resnet50", "vgg16", "x3d_xs"}


def _net_kwargs(kind: str, name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    if kind == "spatial":
        return {"spatial_backbone": name, "spatial_kwargs": kwargs}
    return {"temporal_backbone": name, "temporal_kwargs": kwargs}


# torch's LSTM export warns on every export that another batch size may fail; the test runs another one.
@pytest.mark.filterwarnings("ignore:Exporting a model to ONNX with a batch_size other than 1")
@pytest.mark.parametrize(("kind", "name", "kwargs", "out_dim"), ZOO, ids=[z[1] for z in ZOO])
def test_zoo_backbone_trains_and_exports_with_parity(
    kind: str, name: str, kwargs: dict[str, Any], out_dim: int, tmp_path: Path
) -> None:
    net = tiny_net(**_net_kwargs(kind, name, kwargs))
    assert getattr(net, kind).out_dim == out_dim
    batch = fixed_batch(batch=2 if name in HEAVY else 4)
    assert_loss_falls(net, batch, steps=6 if name in HEAVY else 12)
    assert_onnx_parity(net, batch, tmp_path)
    # The graph is traced on two clips and its batch axis is dynamic: another batch size must run with parity too.
    # (A per-frame CNN reshaped back with `unflatten` froze the export batch size into the graph; caught here.)
    check_parity(net, tmp_path / "model.onnx", (batch["frames"][:1], batch["roi"][:1]))


@pytest.mark.parametrize(("kind", "name", "kwargs", "out_dim"), ZOO, ids=[z[1] for z in ZOO])
def test_zoo_backbone_pools_32_and_64_px_to_out_dim(kind: str, name: str, kwargs: dict[str, Any], out_dim: int) -> None:
    torch.manual_seed(0)
    registry = SPATIAL_BACKBONES if kind == "spatial" else TEMPORAL_BACKBONES
    backbone = registry.build(name, **kwargs).eval()
    assert backbone.out_dim == out_dim
    for size in (32, 64):
        shape = (2, 3, size, size) if kind == "spatial" else (2, 8, 3, size, size)
        with torch.no_grad():
            features = backbone(torch.rand(shape))
        assert features.shape == (2, out_dim)
        assert torch.isfinite(features).all()


def test_x3d_xs_takes_its_zoo_clip_and_single_frames() -> None:
    backbone = X3DXS().eval()
    # The model zoo's own geometry (4 x 160 x 160) and a clip of one frame: X3D never strides in time.
    with torch.no_grad():
        for shape in [(1, 4, 3, 160, 160), (1, 1, 3, 32, 32)]:
            assert backbone(torch.rand(shape)).shape == (1, 2048)
    # pytorchvideo's Swish autograd Function is replaced by the identical nn.SiLU (native op, current torch API).
    assert not any(type(m).__name__ == "Swish" for m in backbone.modules())
    assert any(isinstance(m, nn.SiLU) for m in backbone.modules())


def test_early_fusion_rejects_another_clip_length() -> None:
    backbone = EarlyFusion(num_frames=8)
    assert backbone.trunk[0].in_channels == 24
    with pytest.raises(ValueError, match=r"early_fusion: built for clips of num_frames=8 .*\(2, 10, 3, 32, 32\)"):
        backbone(torch.rand(2, 10, 3, 32, 32))
    with pytest.raises(ValueError, match=r"early_fusion: expected frames \[B, T, 3, H, W\]"):
        backbone(torch.rand(2, 8, 1, 32, 32))


def test_frame_cnn_backbones_share_one_cnn_over_frames() -> None:
    torch.manual_seed(0)
    late = LateFusion(frame_backbone="conv4").eval()
    lstm = CNNLSTM(frame_backbone="conv4", hidden_size=16).eval()
    clip = torch.rand(1, 8, 3, 32, 32)
    with torch.no_grad():
        per_frame = torch.stack([late.frames.backbone(clip[:, t]) for t in range(8)], dim=1)
        torch.testing.assert_close(late(clip), per_frame.mean(dim=1))
        # Order matters to the LSTM, not to the average.
        reversed_clip = clip.flip(1)
        torch.testing.assert_close(late(reversed_clip), late(clip))
        assert not torch.allclose(lstm(reversed_clip), lstm(clip))
    with pytest.raises(TypeError, match=r"cnn_lstm: frame_kwargs must be a dict or None, got list"):
        CNNLSTM(frame_kwargs=[16, 32])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"late_fusion: expected frames \[B, T, 3, H, W\], got \(2, 3, 32, 32\)"):
        late(torch.rand(2, 3, 32, 32))


def test_vgg16_loads_a_local_conv_only_state_dict_and_rejects_wrong_files(tmp_path: Path) -> None:
    # A conv-only file in torchvision's layout (`features.<i>.*`), as a VGG-Face conversion would be.
    torch.manual_seed(1)
    features = {f"features.{k}": v for k, v in VGG16().trunk[0].state_dict().items()}
    assert len(features) == 26  # 13 convolutions, weight and bias
    path = tmp_path / "vggface_conv.pth"
    torch.save(features, path)
    net = tiny_net(spatial_backbone="vgg16", spatial_kwargs={"weights": str(path), "pixel_stats": "vggface"})
    torch.testing.assert_close(net.spatial.trunk[0][28].weight, features["features.28.weight"])
    torch.testing.assert_close(net.spatial.pixel_std, torch.full((1, 3, 1, 1), 1 / 255))

    wrong = tmp_path / "fer_cnn.pth"
    torch.save(SPATIAL_BACKBONES.build("fer_cnn").state_dict(), wrong)
    with pytest.raises(ValueError, match=r"vgg16: weights file .*fer_cnn\.pth does not match the architecture"):
        VGG16(weights=str(wrong))
    shapes = tmp_path / "vgg16_bn_like.pth"
    torch.save({**features, "features.0.weight": torch.zeros(64, 1, 3, 3)}, shapes)
    with pytest.raises(ValueError, match=r"vgg16: weights file .*has tensors of the wrong shape.*features\.0\.weight"):
        VGG16(weights=str(shapes))
    with pytest.raises(ValueError, match=r"vgg16: weights 'vggface' is neither a torchvision weight name"):
        VGG16(weights="vggface")
    with pytest.raises(ValueError, match=r"vgg16: pixel_stats must be one of \['imagenet', 'vggface'\]"):
        VGG16(pixel_stats="caffe")


def test_x3d_xs_loads_a_local_zoo_checkpoint_and_rejects_wrong_files(tmp_path: Path) -> None:
    from pytorchvideo.models.hub.x3d import x3d_xs

    torch.manual_seed(1)
    state = x3d_xs(pretrained=False).state_dict()
    assert "blocks.5.proj.weight" in state  # the Kinetics-400 classifier the backbone drops
    checkpoint = tmp_path / "X3D_XS.pyth"
    torch.save({"epoch": 300, "model_state": state}, checkpoint)
    backbone = X3DXS(weights=str(checkpoint))
    blocks = backbone.trunk.blocks
    torch.testing.assert_close(blocks[0].conv.conv_t.weight, state["blocks.0.conv.conv_t.weight"])
    torch.testing.assert_close(blocks[5].pool.post_conv.weight, state["blocks.5.pool.post_conv.weight"])

    with pytest.raises(ValueError, match=r"x3d_xs: weights 'KINETICS400_V1' is not a file.*downloads nothing"):
        X3DXS(weights="KINETICS400_V1")
    with pytest.raises(FileNotFoundError, match=r"x3d_xs: weights file .*absent\.pyth does not exist"):
        X3DXS(weights=str(tmp_path / "absent.pyth"))
    wrong = tmp_path / "i3d_like.pyth"
    torch.save({"model_state": {"blocks.0.conv.weight": torch.zeros(64, 3, 5, 7, 7)}}, wrong)
    with pytest.raises(ValueError, match=r"x3d_xs: weights file .*i3d_like\.pyth does not match the X3D-XS"):
        X3DXS(weights=str(wrong))

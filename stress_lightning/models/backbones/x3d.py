"""pytorchvideo's X3D-XS temporal backbone: frames [B, T, 3, H, W] in [0, 1] -> clip features [B, 2048].

X3D (Feichtenhofer, "X3D: Expanding Architectures for Efficient Video Recognition", CVPR 2020) grows a tiny 2D
network along time, space, width and depth; XS is the smallest point of that search (4 frames of 160 x 160 px,
3.8 M parameters with its Kinetics-400 classifier, 69.1 % top-1 in the pytorchvideo model zoo). Its blocks are
channel-wise separable 3 x 3 x 3 convolutions with squeeze-excitation, so it is the cheapest 3D CNN in the
package after `c3d_small`. It is the 3D-CNN entry in the comparison of video models the project follows (early
fusion 42.5 %, late fusion 52.9 %, CNN-LSTM 60.4 %, 3D CNN 62.1 % on RAVDESS, 10 frames, actor-wise split).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from torch import nn

from stress_lightning.models.backbones.temporal import (
    PYTORCHVIDEO_KINETICS_MEAN,
    PYTORCHVIDEO_KINETICS_STD,
    TemporalBackbone,
    load_zoo_checkpoint,
)
from stress_lightning.models.registry import TEMPORAL_BACKBONES

# State-dict prefix of the model zoo's Kinetics-400 classifier (the head's `proj` linear layer).
CLASSIFIER_PREFIX = "blocks.5.proj."


def _import_x3d_builder() -> tuple[Callable[..., nn.Module], type[nn.Module]]:
    """pytorchvideo's X3D-XS builder and its Swish activation class."""
    with warnings.catch_warnings():
        # fvcore (imported by pytorchvideo) calls the deprecated torch.jit.script at import; not ours to fix.
        warnings.filterwarnings("ignore", category=FutureWarning)
        # Imported lazily: pytorchvideo pulls in fvcore and iopath, which no other backbone needs. Only the model
        # modules are imported; `pytorchvideo.transforms` does not import with the torchvision this package uses.
        from pytorchvideo.layers.swish import Swish
        from pytorchvideo.models.hub.x3d import x3d_xs
    return x3d_xs, Swish


@TEMPORAL_BACKBONES.register("x3d_xs")
class X3DXS(TemporalBackbone):
    """pytorchvideo's X3D-XS (`pytorchvideo.models.hub.x3d.x3d_xs`) without its classifier; out_dim 2048.

    The features are the head's 2048-wide projection after pooling ("fc1" in the X3D paper's table, `lin_5` in
    PySlowFast): the 192-channel stage-5 output through a 1 x 1 x 1 conv to 432, BN, ReLU, the global pool, a
    1 x 1 x 1 conv to 2048 and ReLU; the Kinetics classifier read exactly this. X3D is narrow in its trunk and
    wide in its head, so taking the 2048 features keeps both pretrained head projections in use. The model zoo's
    head pools with a fixed kernel made for 4 x 160 x 160 clips; here the pool is adaptive, and X3D never strides
    in time, so any clip with T >= 1 and any size works (space is reduced 32 times: 32 x 32 px leaves one
    position).

    pytorchvideo's Swish (an autograd Function whose backward uses a deprecated torch API) is swapped for the
    identical built-in `nn.SiLU`; it holds no weights, so checkpoints load unchanged.

    Args:
        weights: None (random init) or a path to a local state dict of this architecture. The Kinetics-400
            weights are the pytorchvideo model zoo's `X3D_XS.pyth`: download it once yourself and pass its path;
            its "model_state" is unwrapped and its classifier keys (`blocks.5.proj.*`) dropped. Nothing is
            downloaded at run time.
        dropout: dropout on the 2048 features (the zoo's head used 0.5 before its classifier).
    """

    def __init__(self, weights: str | None = None, dropout: float = 0.0) -> None:
        super().__init__(PYTORCHVIDEO_KINETICS_MEAN, PYTORCHVIDEO_KINETICS_STD)
        x3d_xs, swish = _import_x3d_builder()
        net = x3d_xs(pretrained=False, head_activation=None, dropout_rate=dropout)
        for module in list(net.modules()):
            for name, child in module.named_children():
                if isinstance(child, swish):
                    setattr(module, name, nn.SiLU())
        head = net.blocks[5]
        head.proj = None
        head.pool.pool = nn.AdaptiveAvgPool3d(1)
        if weights is not None:
            _load_zoo_weights(net, weights)
        # The head now ends in its global pool and `view(B, -1)`: the trunk returns [B, 2048].
        self.trunk = net
        self.out_dim = head.pool.post_conv.out_channels


def _load_zoo_weights(net: nn.Module, weights: str) -> None:
    """Load a local X3D-XS state dict, or a model-zoo checkpoint holding one under "model_state", into `net`."""
    load_zoo_checkpoint(net, weights, "x3d_xs", CLASSIFIER_PREFIX, "X3D-XS architecture", "X3D_XS.pyth")

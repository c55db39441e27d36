"""An encoder seen as stem → stages → global pool → fc, for branches that share only its first stages.

The Siamese variant of Jiao et al. (ISBI 2020) has "two branches with partly shared weights": the
first ``shared_depth`` stages are one trunk, the stages after it exist once per branch. Every
usssl video encoder is a stem, a list of stages and a pooled head (``models/encoders.py``,
``models/seresnext.py``, ``models/resnet2d.py``, ``models/video3d.py``); :func:`split_encoder`
names those parts without copying them, so the order branch runs the encoder's own modules (the
encoder that transfers is exactly trunk + the order branch's stages) and only the transform
branch's copy of the later stages is new.

    >>> parts = split_encoder(build_encoder(EncoderConfig(name="tiny2d")))
    >>> len(parts.stages), parts.per_frame
    (4, True)
    >>> fmap = parts.run(parts.stem(frames), 0, 4)         # frames (N, 1, H, W) → (N, C', h, w)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from usssl.errors import ConfigError
from usssl.models.encoders import FrameEncoder, TinyCNN2d


@dataclass
class EncoderParts:
    """The encoder's own modules, in order (not registered anywhere else: no parameter is duplicated).

    Attributes:
        stem: the layers before the first stage (``nn.Identity`` for the tiny CNN).
        stages: the stages, each a module mapping a feature map to the next.
        fc: the layer after the global average pool (``nn.Identity`` when there is none).
        per_frame: True for a 2-D encoder (it sees frames (N, C, H, W)); False for a 3-D one
            (clips (B, C, T, H, W)).
    """

    stem: nn.Module
    stages: list[nn.Module]
    fc: nn.Module
    per_frame: bool

    def run(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Stages ``start`` … ``stop − 1`` on a feature map (or the stem's output)."""
        for stage in self.stages[start:stop]:
            x = stage(x)
        return x


def split_encoder(encoder: nn.Module) -> EncoderParts:
    """The stem, stages and pooled head of a usssl video encoder.

    Raises:
        ConfigError: the encoder has no stages to split (a custom encoder); the message names
            ``pretrain.order_transform.shared_depth``.
    """
    per_frame = isinstance(encoder, FrameEncoder)
    net = encoder.image_encoder if per_frame else encoder
    if isinstance(net, TinyCNN2d):  # four [conv, BN, ReLU] × 2 blocks in one Sequential
        layers = list(net.features)
        stages = [nn.Sequential(*layers[i : i + 6]) for i in range(0, len(layers), 6)]  # the same modules
        return EncoderParts(nn.Identity(), stages, net.fc, per_frame)
    if hasattr(net, "stem") and isinstance(getattr(net, "stages", None), nn.Sequential):
        return EncoderParts(net.stem, list(net.stages), getattr(net, "fc", nn.Identity()), per_frame)
    raise ConfigError(f"pretrain.order_transform: encoder {type(net).__name__} has no stem and stages to split "
                      "into a trunk and branches; use one of usssl's encoders (encoder.name)")


def to_map(features: torch.Tensor) -> torch.Tensor:
    """A 2-D encoder's map (N, C', h, w) unchanged; a 3-D encoder's volume (N, C', T', h, w) averaged
    over time (as ``feature_map`` does)."""
    return features.mean(dim=2) if features.dim() == 5 else features


def pooled(parts: EncoderParts, fmap: torch.Tensor, fc: nn.Module | None = None) -> torch.Tensor:
    """(N, C', h, w) → the encoder output (N, D): global average pool, then ``fc`` (default: the encoder's)."""
    return (fc if fc is not None else parts.fc)(fmap.mean(dim=(2, 3)))


__all__ = ["EncoderParts", "split_encoder", "to_map", "pooled"]

"""Video and spectrogram encoders behind one interface.

Every video encoder maps ``x: (B, C, T, H, W) -> (B, D)`` and has an ``out_dim`` attribute; 2-D
encoders run per frame and average over time. ``feature_map(x) -> (B, C', h, w)`` gives the last
spatial feature map, averaged (2-D) or pooled (3-D) over time, for dense heads such as saliency.
The tiny CNN here is for tests and the demo; the paper backbones (SE-ResNeXt-50 with dilation,
ResNets, R3D) join this registry in a later issue.

    >>> enc = build_encoder(EncoderConfig(name="tiny2d", width=16, dim=64))
    >>> enc(torch.rand(4, 1, 2, 64, 64)).shape
    torch.Size([4, 64])
"""

from __future__ import annotations

import torch
from torch import nn

from usssl.config import EncoderConfig


class TinyCNN2d(nn.Module):
    """Four stride-2 conv blocks, global average pool, linear to ``dim``.

    Args:
        in_channels: input channels (1 for grayscale ultrasound or a spectrogram).
        width: channels of the first block; doubled every block.
        dim: output embedding size.
    """

    def __init__(self, in_channels: int = 1, width: int = 16, dim: int = 64) -> None:
        super().__init__()
        chans = [in_channels, width, width * 2, width * 4, width * 4]
        blocks: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            blocks += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(chans[-1], dim)
        self.out_dim = dim

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) → last feature map (B, 4·width, H/16, W/16)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) → (B, dim)."""
        h = self.feature_map(x).mean(dim=(2, 3))  # (B, chans[-1])
        return self.fc(h)


class FrameEncoder(nn.Module):
    """Runs a 2-D image encoder on every frame of a clip and averages over time."""

    def __init__(self, image_encoder: nn.Module) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.out_dim = image_encoder.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T, H, W) → (B, D)."""
        b, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (B·T, C, H, W)
        return self.image_encoder(frames).view(b, t, -1).mean(dim=1)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T, H, W) → the image encoder's last feature map averaged over time (B, C', h, w)."""
        b, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (B·T, C, H, W)
        fmap = self.image_encoder.feature_map(frames)  # (B·T, C', h, w)
        return fmap.view(b, t, *fmap.shape[1:]).mean(dim=1)


def motion_emphasis(x: torch.Tensor) -> torch.Tensor:
    """x: (B, C, T, H, W) → x minus its temporal mean, same shape (TCGL's motion emphasis: what stays
    is what moves; Liu et al., IEEE TIP 2022, Sec. III-A)."""
    return x - x.mean(dim=2, keepdim=True)


class MotionEmphasis(nn.Module):
    """An encoder that reads ``motion_emphasis(x)``: the clip minus its temporal mean
    (``EncoderConfig.motion_emphasis``), in ``forward`` and ``feature_map`` alike.

    Args:
        inner: the encoder ``(B, C, T, H, W) -> (B, D)``; its weights sit under ``inner.``.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.out_dim = inner.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T, H, W) → (B, D)."""
        return self.inner(motion_emphasis(x))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T, H, W) → the inner encoder's feature map of the motion-emphasised clip."""
        return self.inner.feature_map(motion_emphasis(x))


def build_image_encoder(name: str, in_channels: int = 1, width: int = 16, dim: int = 64,
                        dilate_last: int = 1) -> nn.Module:
    """A 2-D encoder ``(B, C, H, W) -> (B, out_dim)`` by name (video frames and spectrograms)."""
    if name in ("tiny2d", "tiny_spec"):
        return TinyCNN2d(in_channels, width, dim)
    if name in ("se_resnext50", "se_resnext50_half"):
        from usssl.models.seresnext import se_resnext50

        return se_resnext50(in_channels, width=0.5 if name.endswith("half") else 1.0, dilate_last=dilate_last)
    if name in ("resnet18", "resnet50"):
        from usssl.models.resnet2d import resnet2d

        return resnet2d(name, in_channels)
    raise ValueError(f"unknown encoder {name!r}")


def build_encoder(cfg: EncoderConfig, in_channels: int = 1) -> nn.Module:
    """A video encoder ``(B, C, T, H, W) -> (B, D)`` from its config (2-D per frame, or 3-D)."""
    from usssl.models.video3d import VIDEO3D_NAMES, build_video3d

    if cfg.name in VIDEO3D_NAMES:
        encoder = build_video3d(cfg.name, in_channels, cfg.width, cfg.dim)
    else:
        encoder = FrameEncoder(build_image_encoder(cfg.name, in_channels, cfg.width, cfg.dim, cfg.dilate_last))
    return MotionEmphasis(encoder) if cfg.motion_emphasis else encoder


def build_speech_encoder(name: str, width: int, dim: int) -> nn.Module:
    """A spectrogram encoder ``(B, 1, F, T') -> (B, out_dim)`` (same family as the video encoder)."""
    return build_image_encoder(name, 1, width, dim)

"""SE-ResNeXt with dilated convolutions: the 2-D backbone of both ultrasound SSL papers.

Jiao et al. (MICCAI 2020; ISBI 2020) use SE-ResNeXt-50 (Hu et al., CVPR 2018 squeeze-and-excitation
on ResNeXt-50 32×4d, Xie et al., CVPR 2017) with dilated convolutions, and a half-width variant
for the order/transform pretext. The papers do not say which stages are dilated: we replace the
stride of the last stage by dilation 2 (output stride 16) by default — ``dilate_last=2`` dilates
the last two stages (output stride 8). Single-channel input (grayscale ultrasound or a
spectrogram); no downloaded weights.

    >>> net = SEResNeXt(layers=(3, 4, 6, 3), width=1.0)      # SE-ResNeXt-50 32×4d
    >>> net(torch.rand(2, 1, 224, 288)).shape
    torch.Size([2, 2048])
"""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """Channel gate: global average → FC(C/r) → ReLU → FC(C) → sigmoid, times the input."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3), keepdim=True))  # (B, C, H, W)


class SEBottleneck(nn.Module):
    """ResNeXt bottleneck (1×1 → grouped 3×3 → 1×1, ×4 expansion) with an SE gate before the sum."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, groups: int, base_width: int, stride: int = 1,
                 dilation: int = 1) -> None:
        super().__init__()
        width = max(groups, int(planes * base_width / 64) * groups)  # ResNeXt's D·C
        c_out = planes * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
            SqueezeExcite(c_out),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class SEResNeXt(nn.Module):
    """SE-ResNeXt image encoder ``(B, C, H, W) -> (B, out_dim)`` (global average pooled).

    Args:
        in_channels: input channels (1 for ultrasound / spectrograms).
        layers: blocks per stage; (3, 4, 6, 3) is the 50-layer network.
        width: channel multiplier (1.0 full, 0.5 the papers' half-width variant).
        groups: cardinality C (32).
        base_width: bottleneck width per group at 64 planes (4, i.e. 32×4d).
        dilate_last: how many of the last stages trade their stride for dilation (0–2).
    """

    def __init__(self, in_channels: int = 1, layers: tuple[int, ...] = (3, 4, 6, 3), width: float = 1.0,
                 groups: int = 32, base_width: int = 4, dilate_last: int = 1) -> None:
        super().__init__()
        if not 0 <= dilate_last <= 2:
            raise ValueError(f"dilate_last must be 0, 1 or 2, got {dilate_last}")
        stem = int(64 * width)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, c_in, dilation = [], stem, 1
        for i, n_blocks in enumerate(layers):
            planes = int(64 * width) * 2**i
            stride = 1 if i == 0 else 2
            if i >= len(layers) - dilate_last:
                dilation, stride = dilation * stride, 1  # keep resolution, widen the receptive field
            blocks = []
            for b in range(n_blocks):
                blocks.append(SEBottleneck(c_in, planes, groups, base_width, stride if b == 0 else 1, dilation))
                c_in = planes * SEBottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_dim = c_in

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → last feature map (B, out_dim, H/os, W/os)."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))  # (B, out_dim)


def se_resnext50(in_channels: int = 1, width: float = 1.0, dilate_last: int = 1) -> SEResNeXt:
    """SE-ResNeXt-50 (32×4d); ``width=0.5`` is the half-width variant."""
    return SEResNeXt(in_channels, (3, 4, 6, 3), width=width, dilate_last=dilate_last)

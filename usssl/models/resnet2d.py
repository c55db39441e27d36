"""ResNet-18 and ResNet-50 as 2-D per-frame encoders, single-channel, no downloaded weights.

He, Zhang, Ren, Sun. *Deep Residual Learning for Image Recognition.* CVPR 2016. The architecture
is torchvision's (``torchvision.models.resnet18`` / ``resnet50`` built with ``weights=None``);
only the stem changes to take ``in_channels`` (1 for grayscale ultrasound) and the 1000-class
classifier is dropped, so the encoder ends at global average pooling: out_dim 512 (ResNet-18) or
2048 (ResNet-50). Wrapped in ``FrameEncoder`` (``models/encoders.py``) they run on every frame
of a clip and average over time.

    >>> net = resnet2d("resnet18")
    >>> net(torch.rand(2, 1, 112, 112)).shape, net.feature_map(torch.rand(2, 1, 112, 112)).shape
    (torch.Size([2, 512]), torch.Size([2, 512, 4, 4]))
"""

from __future__ import annotations

import torch
from torch import nn

RESNET2D_NAMES = ("resnet18", "resnet50")


class ResNet2d(nn.Module):
    """A torchvision ResNet trunk ``(B, C, H, W) -> (B, out_dim)`` without its classifier.

    Args:
        name: ``resnet18`` or ``resnet50``.
        in_channels: input channels (1 for grayscale ultrasound).
    """

    def __init__(self, name: str = "resnet18", in_channels: int = 1) -> None:
        super().__init__()
        import torchvision.models as tvm

        if name not in RESNET2D_NAMES:
            raise ValueError(f"unknown 2-D ResNet {name!r}; choose one of {', '.join(RESNET2D_NAMES)}")
        net = getattr(tvm, name)(weights=None)  # architecture only: usssl never downloads weights
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.out_dim = net.fc.in_features  # 512 or 2048

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) → last feature map (B, out_dim, H/32, W/32)."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) → (B, out_dim)."""
        return self.feature_map(x).mean(dim=(2, 3))


def resnet2d(name: str, in_channels: int = 1) -> ResNet2d:
    """``resnet18`` (out_dim 512) or ``resnet50`` (out_dim 2048), randomly initialised."""
    return ResNet2d(name, in_channels)

"""3-D convolutional video encoders: R3D-18, R(2+1)D-18, R3D-50 (slow-only) and a tiny variant.

- R3D-18 and R(2+1)D-18: Tran, Wang, Torresani, Ray, LeCun, Paluri, *A Closer Look at
  Spatiotemporal Convolutions for Action Recognition*, CVPR 2018. Basic blocks (2, 2, 2, 2),
  widths 64–512, stride 2 in time and space at the start of stages 2–4. In R(2+1)D every t×d×d
  convolution is a 1×d×d spatial one followed by a t×1×1 temporal one with
  M = ⌊t·d²·N_in·N_out / (d²·N_in + t·N_out)⌋ channels between them (the paper's Sec. 3.5, which
  keeps the parameter count of the full 3-D convolution; applied to the stem too).
- R3D-50 slow-only: the Slow pathway of Feichtenhofer et al., *SlowFast Networks*, ICCV 2019,
  the backbone of CVRL (Qian et al., CVPR 2021), as the official code builds it
  (tensorflow/models, official/projects/video_ssl, ``cvrl_pretrain_k600_200ep.yaml``): a 5×7×7
  stem with stride 2 in time and space (16 input frames → 8), a 1×3×3 max-pool that strides in
  space only, bottleneck stages (3, 4, 6, 3) with no further temporal down-sampling, temporal
  kernel 1 in the first 1×1×1 conv of res2–res3 and 3 in res4–res5 ("non-degenerate" temporal
  convolutions only late). SlowFast's own Slow pathway has a 1×7×7 stem; CVRL's differs there.
- ``tiny3d``: the R3D layout with one block per stage and ``width`` channels, for tests and demos.

All take single-channel clips by default, have no downloaded weights, and map
``(B, C, T, H, W) -> (B, out_dim)`` by global average pooling (plus a linear layer to ``dim`` for
``tiny3d``). ``feature_map`` pools time only, ``(B, C', H', W')``; ``feature_volume`` keeps it.

    >>> enc = build_video3d("tiny3d", width=8, dim=32)
    >>> enc(torch.rand(2, 1, 4, 32, 32)).shape
    torch.Size([2, 32])
"""

from __future__ import annotations

import torch
from torch import nn

VIDEO3D_NAMES = ("r3d_18", "r2plus1d_18", "r3d_50", "tiny3d")


def _conv_bn_relu(c_in: int, c_out: int, kernel, stride=1, padding=0, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv3d(c_in, c_out, kernel, stride, padding, bias=False), nn.BatchNorm3d(c_out)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


def _spatiotemporal(c_in: int, c_out: int, stride: int, factorised: bool, relu_out: bool,
                    t: int = 3, d: int = 3, spatial_stride: int | None = None) -> list[nn.Module]:
    """A t×d×d conv (+BN, optional ReLU), or its (2+1)-D factorisation (Tran et al., CVPR 2018)."""
    ss = stride if spatial_stride is None else spatial_stride
    if not factorised:
        return _conv_bn_relu(c_in, c_out, (t, d, d), (stride, ss, ss), (t // 2, d // 2, d // 2), relu_out)
    mid = (t * d * d * c_in * c_out) // (d * d * c_in + t * c_out)  # Sec. 3.5: same parameter count
    return (_conv_bn_relu(c_in, mid, (1, d, d), (1, ss, ss), (0, d // 2, d // 2))
            + _conv_bn_relu(mid, c_out, (t, 1, 1), (stride, 1, 1), (t // 2, 0, 0), relu_out))


class BasicBlock3d(nn.Module):
    """Two 3×3×3 (or (2+1)-D) convolutions and an identity / 1×1×1 projection shortcut."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, factorised: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(*_spatiotemporal(c_in, planes, stride, factorised, True),
                                  *_spatiotemporal(planes, planes, 1, factorised, False))
        self.shortcut = _shortcut(c_in, planes, (stride, stride, stride))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class Bottleneck3d(nn.Module):
    """kt×1×1 → 1×3×3 (spatial stride) → 1×1×1 (×4 channels), the slow-only bottleneck."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, temporal_kernel: int = 1) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.body = nn.Sequential(
            *_conv_bn_relu(c_in, planes, (temporal_kernel, 1, 1), 1, (temporal_kernel // 2, 0, 0)),
            *_conv_bn_relu(planes, planes, (1, 3, 3), (1, stride, stride), (0, 1, 1)),
            *_conv_bn_relu(planes, c_out, 1, relu=False),
        )
        self.shortcut = _shortcut(c_in, c_out, (1, stride, stride))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def _shortcut(c_in: int, c_out: int, stride: tuple[int, int, int]) -> nn.Module:
    if c_in == c_out and stride == (1, 1, 1):
        return nn.Identity()
    return nn.Sequential(*_conv_bn_relu(c_in, c_out, 1, stride, relu=False))


class ResNet3d(nn.Module):
    """A 3-D ResNet ``(B, C, T, H, W) -> (B, out_dim)``.

    Args:
        kind: "r3d" (3×3×3 basic blocks), "r2plus1d" (factorised basic blocks) or "slow"
            (slow-only bottlenecks).
        layers: blocks per stage.
        in_channels: input channels (1 for grayscale ultrasound).
        width: channels of the stem and the first stage (64 in the papers).
        dim: if given, a final linear layer to ``dim`` (``out_dim = dim``).
    """

    def __init__(self, kind: str, layers: tuple[int, ...], in_channels: int = 1, width: int = 64,
                 dim: int | None = None) -> None:
        super().__init__()
        if kind not in ("r3d", "r2plus1d", "slow"):
            raise ValueError(f"unknown 3-D ResNet kind {kind!r}")
        if kind == "slow":  # CVRL's official stem: temporal kernel 5, stride 2 (T → ⌈T/2⌉)
            self.stem = nn.Sequential(*_conv_bn_relu(in_channels, width, (5, 7, 7), (2, 2, 2), (2, 3, 3)),
                                      nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
        else:  # Tran et al.: 3×7×7 stem, spatial stride 2, no max-pool
            self.stem = nn.Sequential(*_spatiotemporal(in_channels, width, 1, kind == "r2plus1d", True,
                                                       t=3, d=7, spatial_stride=2))
        stages, c_in = [], width
        for i, n_blocks in enumerate(layers):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            blocks: list[nn.Module] = []
            for b in range(n_blocks):
                s = stride if b == 0 else 1
                if kind == "slow":
                    kt = 3 if i >= len(layers) - 2 else 1  # temporal kernels only in res4, res5
                    blocks.append(Bottleneck3d(c_in, planes, s, kt))
                    c_in = planes * Bottleneck3d.expansion
                else:
                    blocks.append(BasicBlock3d(c_in, planes, s, factorised=kind == "r2plus1d"))
                    c_in = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c_in, dim) if dim is not None else nn.Identity()
        self.out_dim = dim if dim is not None else c_in
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def feature_volume(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) → last spatio-temporal feature map (B, channels, T', H', W')."""
        return self.stages(self.stem(x))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) → last feature map average-pooled over time (B, channels, H', W')."""
        return self.feature_volume(x).mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T, H, W) → (B, out_dim)."""
        return self.fc(self.feature_map(x).mean(dim=(2, 3)))  # = global mean over T', H', W'


def build_video3d(name: str, in_channels: int = 1, width: int = 16, dim: int = 64) -> ResNet3d:
    """A 3-D encoder by name: ``r3d_18`` (out_dim 512), ``r2plus1d_18`` (512), ``r3d_50`` (2048,
    slow-only with CVRL's 5×7×7 stride-2 stem), ``tiny3d`` (R3D layout, one block per stage,
    ``width`` channels, linear to ``dim``).
    ``width`` and ``dim`` apply to ``tiny3d`` only: the paper networks keep their published sizes."""
    if name == "r3d_18":
        return ResNet3d("r3d", (2, 2, 2, 2), in_channels)
    if name == "r2plus1d_18":
        return ResNet3d("r2plus1d", (2, 2, 2, 2), in_channels)
    if name == "r3d_50":
        return ResNet3d("slow", (3, 4, 6, 3), in_channels)
    if name == "tiny3d":
        return ResNet3d("r3d", (1, 1, 1, 1), in_channels, width=width, dim=dim)
    raise ValueError(f"unknown 3-D encoder {name!r}; choose one of {', '.join(VIDEO3D_NAMES)}")

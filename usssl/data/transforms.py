"""Temporally consistent spatial and intensity augmentation for ultrasound clips, on tensors.

Following MONAI's habit, drawing the random parameters (``randomize``) is separate from applying
them (``apply``): one draw per clip, applied to every frame, so motion between frames is never
invented by the augmentation. It works on a whole batch at once (CPU or GPU), one draw per item.

Defaults follow the downstream protocol of Droste et al. (IPMI 2019; METHODS.md §3): horizontal
flip, rotation ±10°, aspect ±10%, sub-crop 95–100% (as zoom), gamma and brightness ±25%.

    >>> aug = ClipAugment()
    >>> video = aug(video)          # (B, C, T, H, W) in [0, 1] -> same shape, same range
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentParams:
    """One draw per clip; every field has shape (B,)."""

    flip: torch.Tensor  # bool
    angle: torch.Tensor  # radians
    scale_x: torch.Tensor
    scale_y: torch.Tensor
    shift_x: torch.Tensor  # fraction of the half-width (affine_grid units)
    shift_y: torch.Tensor
    gamma: torch.Tensor
    brightness: torch.Tensor  # additive


class ClipAugment(torch.nn.Module):
    """Random affine + flip + gamma/brightness, identical for all frames of a clip.

    Args:
        flip_p: probability of a horizontal flip.
        max_rotation_deg: rotation drawn uniformly in ±this.
        zoom: (min, max) of the zoom factor (1 / sub-crop fraction).
        max_aspect: aspect change drawn uniformly in ±this (fraction).
        max_shift: translation in ±this fraction of the image size.
        max_gamma: gamma drawn log-uniformly in [1/(1+g), 1+g].
        max_brightness: brightness offset drawn uniformly in ±this.
    """

    def __init__(self, flip_p: float = 0.5, max_rotation_deg: float = 10.0,
                 zoom: tuple[float, float] = (1.0, 1 / 0.95), max_aspect: float = 0.1,
                 max_shift: float = 0.05, max_gamma: float = 0.25, max_brightness: float = 0.25 * 0.25) -> None:
        super().__init__()
        if not 0 <= flip_p <= 1:
            raise ValueError(f"flip_p must be in [0, 1], got {flip_p}")
        self.flip_p = flip_p
        self.max_rotation = math.radians(max_rotation_deg)
        self.zoom = zoom
        self.max_aspect = max_aspect
        self.max_shift = max_shift
        self.max_gamma = max_gamma
        self.max_brightness = max_brightness

    def randomize(self, batch: int, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> AugmentParams:
        """Draw one set of parameters per clip."""

        def u(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(batch, generator=generator).to(device)

        zoom = u(*self.zoom)
        aspect = u(-self.max_aspect, self.max_aspect)
        log_g = math.log(1 + self.max_gamma)
        return AugmentParams(
            flip=torch.rand(batch, generator=generator).to(device) < self.flip_p,
            angle=u(-self.max_rotation, self.max_rotation),
            scale_x=zoom * (1 + aspect),
            scale_y=zoom / (1 + aspect),
            shift_x=u(-2 * self.max_shift, 2 * self.max_shift),
            shift_y=u(-2 * self.max_shift, 2 * self.max_shift),
            gamma=torch.exp(u(-log_g, log_g)),
            brightness=u(-self.max_brightness, self.max_brightness),
        )

    @staticmethod
    def apply(video: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        """video: (B, C, T, H, W) in [0, 1] → augmented, same shape; zero padding outside."""
        b, c, t, h, w = video.shape
        cos, sin = torch.cos(p.angle), torch.sin(p.angle)
        flip = 1.0 - 2.0 * p.flip.to(video.dtype)
        # output → input sampling grid: rotate, then divide by the zoom (zoom > 1 magnifies)
        theta = torch.zeros(b, 2, 3, dtype=video.dtype, device=video.device)
        theta[:, 0, 0] = cos / p.scale_x * flip
        theta[:, 0, 1] = -sin / p.scale_x
        theta[:, 1, 0] = sin / p.scale_y * flip
        theta[:, 1, 1] = cos / p.scale_y
        theta[:, 0, 2] = p.shift_x
        theta[:, 1, 2] = p.shift_y
        frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (B·T, C, H, W)
        theta = theta.repeat_interleave(t, dim=0)  # same draw for every frame of a clip
        grid = F.affine_grid(theta, [b * t, c, h, w], align_corners=False)
        out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out.view(b, t, c, h, w).permute(0, 2, 1, 3, 4)  # (B, C, T, H, W)
        shape = (b, 1, 1, 1, 1)
        out = out.clamp(0, 1) ** p.gamma.view(shape) + p.brightness.view(shape)
        return out.clamp(0, 1)

    def forward(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(video, self.randomize(video.shape[0], generator, video.device))

"""Temporally consistent clip augmentation on tensors: the downstream protocol's and CVRL's.

Following MONAI's habit, drawing the random parameters (``randomize``) is separate from applying
them (``apply``): one draw per clip, applied to every frame, so motion between frames is never
invented by the augmentation. Both work on a whole batch at once (CPU or GPU), one draw per item,
and warp every frame of a clip with the one helper :func:`warp_clips`.

**ClipAugment** follows the downstream protocol of Droste et al. (IPMI 2019; METHODS.md §3):
horizontal flip, rotation ±10°, aspect ±10%, sub-crop 95–100% (as zoom), gamma and brightness ±25%.

**ContrastiveClipAugment** is CVRL's (Qian et al., CVPR 2021, Sec. 3.3) for grayscale ultrasound: a
random resized crop (area 0.3–1.0, aspect 0.5–2), a horizontal flip, colour jitter with probability
0.8 (brightness, contrast, saturation 0.8, hue 0.2), grayscale with probability 0.2 and a Gaussian
blur (kernel ≈ 10% of the side, σ 0.1–2.0) with probability 0.5. On one-channel ultrasound,
saturation, hue and the grayscale conversion do nothing; a gamma jitter takes their place (ours).
The jitter is applied in the fixed order brightness → contrast → gamma (SimCLR shuffles it; the
paper does not say). Its default strength is ±25% (ours, the ultrasound downstream protocol's
range), not the paper's 0.8: on dark B-mode frames a 0.8 jitter makes the two views of one clip
differ more than two different clips, and CVRL's embedding collapses (``config/methods.py:
CVRLConfig``).

    >>> video = ClipAugment()(video)          # (B, C, T, H, W) in [0, 1] -> same shape, same range
    >>> aug = ContrastiveClipAugment()
    >>> view_a, view_b = aug(video), aug(video)          # independent draws
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def warp_clips(video: torch.Tensor, theta: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Warp every frame of each clip by its clip's affine map (bilinear, ``align_corners=False``).

    Args:
        video: (B, C, T, H, W).
        theta: (B, 2, 3) output → input sampling matrices in ``F.affine_grid``'s normalised
            coordinates, one per clip (the same for all its frames).
        padding_mode: ``grid_sample``'s padding outside the frame ("zeros", "border").

    Returns:
        (B, C, T, H, W), the same dtype and device.
    """
    b, c, t, h, w = video.shape
    frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (B·T, C, H, W)
    grid = F.affine_grid(theta.repeat_interleave(t, dim=0), [b * t, c, h, w], align_corners=False)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return out.view(b, t, c, h, w).permute(0, 2, 1, 3, 4)  # (B, C, T, H, W)


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
        b = video.shape[0]
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
        out = warp_clips(video, theta, "zeros")  # (B, C, T, H, W)
        shape = (b, 1, 1, 1, 1)
        out = out.clamp(0, 1) ** p.gamma.view(shape) + p.brightness.view(shape)
        return out.clamp(0, 1)

    def forward(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(video, self.randomize(video.shape[0], generator, video.device))


@dataclass
class ContrastiveAugmentParams:
    """One draw per clip; every field has shape (B,). Crop sizes and centres in affine_grid units."""

    crop_w: torch.Tensor  # fraction of the width kept
    crop_h: torch.Tensor  # fraction of the height kept
    centre_x: torch.Tensor  # crop centre in [−1, 1]
    centre_y: torch.Tensor
    flip: torch.Tensor  # bool
    jitter: torch.Tensor  # bool: brightness/contrast/gamma applied
    brightness: torch.Tensor  # multiplicative factor
    contrast: torch.Tensor  # factor around the clip mean
    gamma: torch.Tensor
    blur: torch.Tensor  # bool
    sigma: torch.Tensor  # blur σ in pixels of this frame size


class ContrastiveClipAugment(torch.nn.Module):
    """Random resized crop + flip + intensity jitter + blur, identical for all frames of a clip.

    Args:
        crop_area: (min, max) fraction of the frame area kept by the crop.
        crop_aspect: (min, max) aspect ratio (width / height) of the crop, drawn log-uniformly.
        flip_p: probability of a horizontal flip.
        jitter_p: probability of the brightness/contrast/gamma jitter.
        brightness, contrast: factors drawn uniformly in [1 − v, 1 + v].
        gamma: drawn log-uniformly in [1/(1+g), 1+g].
        blur_p: probability of a Gaussian blur.
        blur_sigma: (min, max) σ in pixels at ``reference_size``, scaled to the frame size.
        reference_size: the frame side the paper's σ range refers to (224).
    """

    def __init__(self, crop_area: tuple[float, float] = (0.3, 1.0), crop_aspect: tuple[float, float] = (0.5, 2.0),
                 flip_p: float = 0.5, jitter_p: float = 0.8, brightness: float = 0.25, contrast: float = 0.25,
                 gamma: float = 0.25, blur_p: float = 0.5, blur_sigma: tuple[float, float] = (0.1, 2.0),
                 reference_size: int = 224) -> None:
        super().__init__()
        for name, p in (("flip_p", flip_p), ("jitter_p", jitter_p), ("blur_p", blur_p)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if not 0 < crop_area[0] <= crop_area[1] <= 1:
            raise ValueError(f"crop_area must satisfy 0 < min <= max <= 1, got {crop_area}")
        self.crop_area, self.crop_aspect = crop_area, crop_aspect
        self.flip_p, self.jitter_p, self.blur_p = flip_p, jitter_p, blur_p
        self.brightness, self.contrast, self.gamma = brightness, contrast, gamma
        self.blur_sigma, self.reference_size = blur_sigma, reference_size

    @classmethod
    def from_config(cls, cfg) -> "ContrastiveClipAugment":
        """From a ``CVRLConfig``."""
        return cls(tuple(cfg.crop_area), tuple(cfg.crop_aspect), cfg.flip_p, cfg.jitter_p, cfg.brightness,
                   cfg.contrast, cfg.gamma, cfg.blur_p, tuple(cfg.blur_sigma))

    def randomize(self, batch: int, height: int, width: int, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> ContrastiveAugmentParams:
        """Draw one set of parameters per clip of a (batch, C, T, height, width) video."""

        def u(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(batch, generator=generator)

        # resized crop: up to 10 tries per clip for a box inside the frame, else clamp to the frame
        crop_w, crop_h = torch.ones(batch), torch.ones(batch)
        todo = torch.ones(batch, dtype=torch.bool)
        for _ in range(10):
            area = u(*self.crop_area)
            aspect = torch.exp(u(math.log(self.crop_aspect[0]), math.log(self.crop_aspect[1])))
            w = torch.sqrt(area * aspect * height / width)  # fraction of the width
            h = torch.sqrt(area / aspect * width / height)  # fraction of the height
            ok = todo & (w <= 1) & (h <= 1)
            crop_w, crop_h = torch.where(ok, w, crop_w), torch.where(ok, h, crop_h)
            todo &= ~ok
        log_g = math.log(1 + self.gamma)
        scale = min(height, width) / self.reference_size
        params = ContrastiveAugmentParams(
            crop_w=crop_w, crop_h=crop_h,
            centre_x=(1 - crop_w) * u(-1, 1), centre_y=(1 - crop_h) * u(-1, 1),
            flip=torch.rand(batch, generator=generator) < self.flip_p,
            jitter=torch.rand(batch, generator=generator) < self.jitter_p,
            brightness=u(1 - self.brightness, 1 + self.brightness),
            contrast=u(1 - self.contrast, 1 + self.contrast),
            gamma=torch.exp(u(-log_g, log_g)),
            blur=torch.rand(batch, generator=generator) < self.blur_p,
            sigma=u(*self.blur_sigma) * scale,
        )
        return ContrastiveAugmentParams(**{k: v.to(device) for k, v in vars(params).items()})

    @staticmethod
    def apply(video: torch.Tensor, p: ContrastiveAugmentParams) -> torch.Tensor:
        """video: (B, C, T, H, W) in [0, 1] → augmented, same shape and range."""
        b = video.shape[0]
        theta = torch.zeros(b, 2, 3, dtype=video.dtype, device=video.device)  # output → input
        theta[:, 0, 0] = p.crop_w * (1 - 2 * p.flip.to(video.dtype))
        theta[:, 1, 1] = p.crop_h
        theta[:, 0, 2], theta[:, 1, 2] = p.centre_x, p.centre_y
        out = warp_clips(video, theta, "border")  # (B, C, T, H, W)
        out = jitter_intensity(out, p.brightness, p.contrast, p.gamma, p.jitter)
        return gaussian_blur_clips(out, p.sigma, p.blur)

    def forward(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, _, h, w = video.shape
        return self.apply(video, self.randomize(b, h, w, generator, video.device))


def jitter_intensity(video: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
                     gamma: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Brightness (×b), contrast (around the clip mean, ×c) then gamma, per clip; clamped to [0, 1].

    video: (B, C, T, H, W); brightness, contrast, gamma, mask: (B,). Clips with mask False pass
    unchanged. The contrast centre is the mean of the whole clip, so every frame gets the same map.
    """
    shape = (-1,) + (1,) * (video.dim() - 1)
    out = (video * brightness.view(shape)).clamp(0, 1)
    mean = out.mean(dim=tuple(range(1, video.dim())), keepdim=True)  # (B, 1, 1, 1, 1)
    out = ((out - mean) * contrast.view(shape) + mean).clamp(0, 1)
    out = out.clamp_min(1e-6) ** gamma.view(shape)
    if mask is None:
        return out
    return torch.where(mask.view(shape), out, video)


def gaussian_blur_clips(video: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Separable Gaussian blur, one σ per clip, every frame alike; kernel side ≈ 10% of the frame.

    video: (B, C, T, H, W); sigma: (B,) in pixels; mask: (B,) bool, clips to blur (default all).
    """
    b, c, t, h, w = video.shape
    idx = torch.arange(b, device=video.device) if mask is None else mask.nonzero().flatten()
    if idx.numel() == 0:
        return video
    radius = max(1, min(h, w) // 20)
    x = torch.arange(-radius, radius + 1, dtype=video.dtype, device=video.device)
    kernel = torch.exp(-0.5 * (x[None] / sigma[idx, None].to(video.dtype)) ** 2)  # (n, K)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n·C, K)
    sel = video[idx].reshape(1, -1, t, h, w)  # (1, n·C, T, H, W): one group per clip channel
    k = kernel.shape[1]
    sel = F.conv3d(F.pad(sel, (radius, radius, 0, 0, 0, 0), mode="replicate"), kernel.view(-1, 1, 1, 1, k),
                   groups=sel.shape[1])  # along W
    sel = F.conv3d(F.pad(sel, (0, 0, radius, radius, 0, 0), mode="replicate"), kernel.view(-1, 1, 1, k, 1),
                   groups=sel.shape[1])  # along H
    out = video.clone()
    out[idx] = sel.view(-1, c, t, h, w)
    return out

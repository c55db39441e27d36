"""One affine transform τ (translation, scale, rotation, shear) per clip: draw, apply, recover.

The transform pretext of Jiao et al. (ISBI 2020) applies one τ to every frame of a clip and asks
the network to regress τ's parameters. A parameter vector has five entries, in this order::

    tx, ty        translation as a fraction of the image width / height (+x right, +y down)
    scale         isotropic scale factor (> 1 enlarges the content)
    rotation_deg  rotation in degrees (positive turns +x towards +y: clockwise on screen)
    shear_deg     horizontal shear angle φ in degrees (x' = x + tan φ · y before rotation)

Its matrix is the forward map of content points, in pixels relative to the image centre,
p' = A·p + (tx·W, ty·H) with A = scale · R(rotation) · [[1, tan φ], [0, 1]], stored as the 2×3
``[A | (tx, ty)]``. ``matrix_to_params`` inverts ``params_to_matrix`` exactly (A = R·U is a QR
factorisation with U upper triangular and a positive diagonal). Working in pixels keeps a rotation
a rotation on non-square frames.

    >>> params = sample_affine(8, AffineRanges())            # (8, 5)
    >>> moved = apply_affine(video, params)                   # (B, C, T, H, W), same draw every frame
    >>> torch.allclose(matrix_to_params(params_to_matrix(params)), params)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from usssl.data.augment import warp_clips

PARAM_NAMES = ("tx", "ty", "scale", "rotation_deg", "shear_deg")


@dataclass(frozen=True)
class AffineRanges:
    """Sampling ranges: symmetric ± maxima, and the scale interval."""

    max_translation: float = 0.1
    scale_range: tuple[float, float] = (0.8, 1.2)
    max_rotation_deg: float = 15.0
    max_shear_deg: float = 10.0

    @classmethod
    def from_config(cls, cfg) -> "AffineRanges":
        """From an ``OrderTransformConfig`` (or anything with the same field names)."""
        return cls(cfg.max_translation, tuple(cfg.scale_range), cfg.max_rotation_deg, cfg.max_shear_deg)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(5,) lower and upper bounds of the parameters."""
        t, r, s = self.max_translation, self.max_rotation_deg, self.max_shear_deg
        lo = torch.tensor([-t, -t, self.scale_range[0], -r, -s], dtype=torch.float64)
        hi = torch.tensor([t, t, self.scale_range[1], r, s], dtype=torch.float64)
        return lo, hi


def sample_affine(batch: int, ranges: AffineRanges, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """(batch, 5) parameters, each drawn uniformly within ``ranges``."""
    lo, hi = (b.float() for b in ranges.bounds())
    u = torch.rand(batch, len(PARAM_NAMES), generator=generator)
    return (lo + (hi - lo) * u).to(device)


def normalise_params(params: torch.Tensor, ranges: AffineRanges) -> torch.Tensor:
    """(B, 5) → (B, 5) in [−1, 1] by each parameter's range (a fixed parameter maps to 0).

    The regression target: every parameter weighs the same in L_trans whatever its unit.
    """
    lo, hi = (b.to(params) for b in ranges.bounds())
    half = (hi - lo) / 2
    return torch.where(half > 0, (params - (lo + hi) / 2) / half.clamp_min(1e-12), torch.zeros_like(params))


def denormalise_params(normed: torch.Tensor, ranges: AffineRanges) -> torch.Tensor:
    """Inverse of ``normalise_params``: (B, 5) in [−1, 1] → parameters in their units."""
    lo, hi = (b.to(normed) for b in ranges.bounds())
    return (lo + hi) / 2 + normed * (hi - lo) / 2


def params_to_matrix(params: torch.Tensor) -> torch.Tensor:
    """(B, 5) parameters → (B, 2, 3) forward matrix ``[A | (tx, ty)]`` (see the module docstring)."""
    tx, ty, scale, rot, shear = params.unbind(-1)
    theta, k = torch.deg2rad(rot), torch.tan(torch.deg2rad(shear))
    cos, sin = torch.cos(theta), torch.sin(theta)
    # A = scale · R(θ) · [[1, k], [0, 1]]
    row0 = torch.stack([cos, cos * k - sin, tx / scale], -1) * scale[..., None]
    row1 = torch.stack([sin, sin * k + cos, ty / scale], -1) * scale[..., None]
    return torch.stack([row0, row1], dim=-2)  # (B, 2, 3)


def matrix_to_params(matrix: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) forward matrix → (B, 5) parameters; exact inverse of ``params_to_matrix``.

    With A = R(θ)·U, U = scale·[[1, tan φ], [0, 1]]: A's first column is scale·(cos θ, sin θ), and
    U's top-right entry is (Rᵀ A)₀₁ = scale · tan φ.
    """
    a00, a01, a10, a11 = matrix[..., 0, 0], matrix[..., 0, 1], matrix[..., 1, 0], matrix[..., 1, 1]
    scale = torch.hypot(a00, a10)
    theta = torch.atan2(a10, a00)
    u01 = torch.cos(theta) * a01 + torch.sin(theta) * a11  # (Rᵀ A)₀₁
    shear = torch.atan(u01 / scale)
    return torch.stack([matrix[..., 0, 2], matrix[..., 1, 2], scale, torch.rad2deg(theta), torch.rad2deg(shear)], -1)


def sampling_grid_theta(matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Forward matrix → (B, 2, 3) ``theta`` for ``F.affine_grid`` (output → input, normalised coords).

    In normalised coordinates x_n = x_px / (W/2), the forward map is D⁻¹AD x_n + 2t with
    D = diag(W/2, H/2); affine_grid needs its inverse.
    """
    a = matrix[..., :2]  # (B, 2, 2)
    d = torch.tensor([width / 2, height / 2], dtype=matrix.dtype, device=matrix.device)
    a_n = a * d[None, None, :] / d[None, :, None]  # D⁻¹ A D
    t_n = 2 * matrix[..., 2]  # (B, 2)
    inv = torch.linalg.inv(a_n)
    return torch.cat([inv, -(inv @ t_n[..., None])], dim=-1)


def apply_affine(video: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """video: (B, C, T, H, W), params: (B, 5) → τ applied to every frame, zero padding, same shape."""
    h, w = video.shape[-2:]
    theta = sampling_grid_theta(params_to_matrix(params.to(video.dtype)), h, w)  # (B, 2, 3)
    return warp_clips(video, theta, "zeros")  # (B, C, T, H, W)


def _sup_sinusoid(p: torch.Tensor, q: torch.Tensor, r: float) -> torch.Tensor:
    """max over θ in [−r, r] of p·cos θ + q·sin θ (r < π/2): the amplitude where the peak atan2(q, p)
    lies inside, else the larger end."""
    ends = torch.maximum(p * math.cos(r) + q * math.sin(r), p * math.cos(r) - q * math.sin(r))
    return torch.where(torch.atan2(q, p).abs() <= r, torch.hypot(p, q), ends)


@lru_cache(maxsize=32)
def _valid_region(ranges: AffineRanges, height: int, width: int, margin_px: float) -> torch.Tensor:
    t, s_min = ranges.max_translation, ranges.scale_range[0]
    r, k = math.radians(ranges.max_rotation_deg), math.tan(math.radians(ranges.max_shear_deg))
    ys = torch.arange(height, dtype=torch.float64) + 0.5 - height / 2  # pixel centres, image-centred
    xs = torch.arange(width, dtype=torch.float64) + 0.5 - width / 2
    py, px = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
    worst_x = torch.zeros(height, width, dtype=torch.float64)
    worst_y = torch.zeros(height, width, dtype=torch.float64)
    for tx in (-t * width, t * width):  # the bounds are convex in the translation: its corners suffice
        for ty in (-t * height, t * height):
            a, b = px - tx, py - ty  # v = p − t; R(−θ)v = (a cos θ + b sin θ, −a sin θ + b cos θ)
            for s1 in (1.0, -1.0):  # |x| + tan φ·|y| = max over the signs (the worst shear is ±tan φ)
                worst_y = torch.maximum(worst_y, _sup_sinusoid(s1 * b, -s1 * a, r))
                for s2 in (1.0, -1.0):
                    sup = _sup_sinusoid(s1 * a + s2 * k * b, s1 * b - s2 * k * a, r)
                    worst_x = torch.maximum(worst_x, sup)
    # the smallest scale maps the farthest; bilinear reads 4 pixel centres, the outer ones at ±(W/2 − 0.5)
    inside_x = worst_x / s_min <= width / 2 - 0.5 - margin_px
    inside_y = worst_y / s_min <= height / 2 - 0.5 - margin_px
    return inside_x & inside_y


def valid_region(ranges: AffineRanges, height: int, width: int, margin_px: float = 0.01) -> torch.Tensor:
    """(H, W) bool: the pixels that every τ within ``ranges`` fills from inside the frame.

    ``apply_affine`` pads with zeros, so the black corners of τ(clip) show τ (a blank clip turns
    into a bright region whose outline is τ). Masking both the clip and τ(clip) to this one fixed
    region removes that cue: inside it every pixel of τ(clip) is read bilinearly from four pixels
    of the frame, whatever τ. Output pixel p (image-centred, in pixels) reads the source
    A⁻¹(p − t) = U⁻¹ R(−θ)(p − t) / scale with U⁻¹ = [[1, −tan φ], [0, 1]]; the bound is exact:
    over the translation's corners, the smallest scale, both shear extremes and, in closed form,
    every rotation in range. With the default ranges it keeps 22% of a 64 × 64 frame.
    """
    return _valid_region(ranges, height, width, margin_px).clone()


def centre_crop(video: torch.Tensor, fraction: float) -> torch.Tensor:
    """Keep the central ``fraction`` of H and W: (B, C, T, H, W) → (B, C, T, h, w)."""
    if fraction >= 1:
        return video
    h, w = video.shape[-2:]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return video[..., top : top + ch, left : left + cw]


__all__ = ["PARAM_NAMES", "AffineRanges", "sample_affine", "normalise_params", "denormalise_params",
           "params_to_matrix", "matrix_to_params", "sampling_grid_theta", "apply_affine", "valid_region",
           "centre_crop"]

"""Ground-truth gaze maps: fixations on the cached pixel grid and their Gaussian-blurred map.

The saliency task's ground truth (the data side); the metrics that score a predicted map against
it are in ``usssl.downstream.saliency_metrics``.

    >>> fix = gaze_fixations(points, (64, 64))      # (64, 64) 0/1
    >>> gt = fixation_map(fix, sigma_px=2.0)         # (64, 64) float, sums to 1
"""

from __future__ import annotations

import math

import numpy as np


def sigma_from_visual_angle(degrees: float, screen_width_px: int, screen_width_mm: float,
                            distance_mm: float) -> float:
    """Gaussian σ in screen pixels for ``degrees`` of visual angle at the given viewing geometry.

    The angle subtends 2·d·tan(θ/2) mm on a screen ``distance_mm`` away; the screen has
    ``screen_width_px / screen_width_mm`` pixels per mm.
    """
    if degrees <= 0 or screen_width_px <= 0 or screen_width_mm <= 0 or distance_mm <= 0:
        raise ValueError("visual angle and viewing geometry must be positive, got "
                         f"{degrees}°, {screen_width_px} px, {screen_width_mm} mm, {distance_mm} mm")
    size_mm = 2 * distance_mm * math.tan(math.radians(degrees) / 2)
    return size_mm * screen_width_px / screen_width_mm


def fixation_map(fixations: np.ndarray, sigma_px: float | tuple[float, float]) -> np.ndarray:
    """Sum of Gaussians (σ in pixels) at the fixated pixels, normalised to sum 1.

    The Gaussians are cut at 4σ and at the image border (mass outside the frame is dropped
    before normalising).

    Args:
        fixations: (H, W) bool/int map of fixated pixels (counts allowed: a pixel fixated twice
            weighs twice).
        sigma_px: Gaussian standard deviation in pixels, or (σ_y, σ_x) when the cached pixels
            are not square.

    Returns:
        (H, W) float64 summing to 1 (all zeros when there is no fixation).
    """
    import cv2

    sigma_y, sigma_x = (sigma_px, sigma_px) if np.isscalar(sigma_px) else sigma_px
    if sigma_y <= 0 or sigma_x <= 0:
        raise ValueError(f"fixation_map: sigma_px must be positive, got {sigma_px}")
    fix = np.asarray(fixations, dtype=np.float64)
    if fix.sum() == 0:
        return np.zeros_like(fix)
    ry, rx = (max(1, int(math.ceil(4 * s))) for s in (sigma_y, sigma_x))
    blurred = cv2.GaussianBlur(fix, (2 * rx + 1, 2 * ry + 1), sigmaX=sigma_x, sigmaY=sigma_y,
                               borderType=cv2.BORDER_CONSTANT)  # ksize is (width, height)
    return blurred / blurred.sum()


def gaze_fixations(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Binary-with-counts fixation map from gaze points (the input of ``fixation_map``, NSS, AUC).

    Each point lands on the pixel whose centre is nearest (pixel centres at integer x, y, as in
    the cache); NaN points are skipped and points are clipped into the frame.

    Args:
        points: (n, 2) float x, y in pixels, NaN where absent.
        shape: (H, W) of the map.

    Returns:
        (H, W) float64 counts (a pixel fixated twice holds 2).
    """
    h, w = shape
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    pts = pts[~np.isnan(pts).any(axis=1)]  # (m, 2)
    counts = np.zeros((h, w), dtype=np.float64)
    cols = np.clip(np.floor(pts[:, 0] + 0.5).astype(np.int64), 0, w - 1)
    rows = np.clip(np.floor(pts[:, 1] + 0.5).astype(np.int64), 0, h - 1)
    np.add.at(counts, (rows, cols), 1.0)
    return counts

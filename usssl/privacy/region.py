"""The imaging region: where the ultrasound image is, as opposed to the screen around it.

Screen recordings and cine exports carry burned-in text (patient name, ID, date, machine
settings) around the fan. That text is static, while speckle inside the fan changes from frame to
frame, so the imaging region is found as the largest connected set of pixels whose intensity
varies over time (its convex hull, :func:`imaging_mask`). Cropping to the mask's bounding box and
blanking the pixels outside the mask removes the burned-in text from the cache, including text
in the corners of the box beside the fan's narrow top.

Boxes are ``(x0, y0, x1, y1)`` in source pixels, end-exclusive: ``frame[y0:y1, x0:x1]``.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


def imaging_mask(
    frames: np.ndarray,
    threshold: float = 1.5,
    relative: float = 0.05,
    min_area: float = 0.01,
) -> np.ndarray | None:
    """The imaging region as a mask: the filled convex hull of the largest varying region.

    Text burned in beside the fan's narrow top lies inside the fan's bounding box but outside
    this mask; ``crop_resize(..., mask=...)`` blanks it.

    Args:
        frames: (t, H, W) uint8 frames spread over the recording (t >= 2).
        threshold: minimum temporal standard deviation (grey levels) of an imaging pixel.
        relative: the threshold is at least this fraction of the 99th percentile of the
            per-pixel standard deviation, so compression noise around static text stays out.
        min_area: smallest region, as a fraction of the frame, accepted.

    Returns:
        (H, W) bool, or None (with a logged warning) when nothing varies enough.
    """
    if frames.ndim != 3:
        raise ValueError(f"frames must be (t, H, W), got shape {frames.shape}")
    t, height, width = frames.shape
    if t < 2:
        log.warning("imaging region: fewer than 2 frames, keeping the full frame")
        return None
    std = frames.astype(np.float32).std(axis=0)  # (H, W)
    cut = max(threshold, relative * float(np.percentile(std, 99)))
    mask = (std > cut).astype(np.uint8)  # (H, W)
    size = max(3, int(round(min(height, width) * 0.03)) | 1)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((size, size), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n < 2:
        log.warning("imaging region: no pixel varies over time, keeping the full frame")
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[best, cv2.CC_STAT_AREA] < min_area * height * width:
        log.warning("imaging region: the moving region is too small, keeping the full frame")
        return None
    points = cv2.findNonZero((labels == best).astype(np.uint8))
    hull = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    grow = max(3, int(round(min(height, width) * 0.01)) * 2 + 1)  # give back the opening's edge
    return cv2.dilate(hull, np.ones((grow, grow), np.uint8)).astype(bool)


def mask_box(mask: np.ndarray) -> Box:
    """Bounding box (x0, y0, x1, y1), end-exclusive, of a non-empty (H, W) mask."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def detect_imaging_region(frames: np.ndarray, **kwargs) -> Box:
    """Bounding box of :func:`imaging_mask` (same arguments); the full frame when nothing varies.

    Args:
        frames: (t, H, W) uint8 frames spread over the recording.

    Returns:
        (x0, y0, x1, y1), end-exclusive.
    """
    mask = imaging_mask(frames, **kwargs)
    return (0, 0, frames.shape[2], frames.shape[1]) if mask is None else mask_box(mask)


def check_box(box: Box, height: int, width: int) -> Box:
    """``box`` as ints, or ValueError when it is empty or reaches outside a (height, width) frame."""
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(
            f"crop box {[x0, y0, x1, y1]} must satisfy 0 <= x0 < x1 <= {width} and "
            f"0 <= y0 < y1 <= {height} (frame width x height {width} x {height})"
        )
    return x0, y0, x1, y1


def crop_resize(frames: np.ndarray, box: Box, size: tuple[int, int],
                mask: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Crop every frame to ``box`` and resize to ``size`` = (height, width) with INTER_AREA.

    Args:
        frames: (t, H, W) or (t, H, W, C) uint8.
        box: (x0, y0, x1, y1), end-exclusive.
        size: output (height, width).
        mask: optional (H, W) bool imaging mask; pixels outside it are set to 0 first.

    Returns:
        (t, height, width) or (t, height, width, C), same dtype.
    """
    x0, y0, x1, y1 = check_box(box, frames.shape[1], frames.shape[2])
    out_h, out_w = int(size[0]), int(size[1])
    out = np.empty((frames.shape[0], out_h, out_w, *frames.shape[3:]), dtype=frames.dtype)
    keep = None if mask is None else mask[y0:y1, x0:x1]  # (h, w)
    if keep is not None and frames.ndim == 4:
        keep = keep[..., None]
    for i, frame in enumerate(frames):
        crop = np.ascontiguousarray(frame[y0:y1, x0:x1])
        if keep is not None:
            crop = np.where(keep, crop, 0).astype(frames.dtype)
        out[i] = cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_AREA)
    return out


def map_points(xy: np.ndarray, box: Box, size: tuple[int, int]) -> np.ndarray:
    """Source-frame pixel coordinates to cached-frame pixel coordinates (pixel centres).

    A point at source pixel centre ``x`` lands at ``(x - x0 + 0.5) * W / (x1 - x0) - 0.5`` in the
    (height, width) = ``size`` output, matching ``crop_resize``; NaN stays NaN and points
    outside the box map outside [0, W) x [0, H).

    Args:
        xy: (..., 2) x, y in source pixels.
        box: (x0, y0, x1, y1) of the crop.
        size: (height, width) of the cached frames.

    Returns:
        (..., 2) float32 x, y in cached pixels.
    """
    x0, y0, x1, y1 = box
    xy = np.asarray(xy, dtype=np.float64)
    scale = np.array([size[1] / (x1 - x0), size[0] / (y1 - y0)])
    return ((xy - np.array([x0, y0]) + 0.5) * scale - 0.5).astype(np.float32)

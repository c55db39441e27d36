"""The imaging region: where the ultrasound image is, as opposed to the screen around it.

Screen recordings and cine exports carry burned-in text (patient name, ID, date, machine
settings) around the fan. That text is static, while speckle inside the fan changes from frame to
frame, so the imaging region is found as the largest connected set of pixels whose intensity
varies over time (its convex hull, :func:`imaging_mask`). Cropping to the mask's bounding box and
blanking the pixels outside the mask removes the burned-in text from the cache, including text
in the corners of the box beside the fan's narrow top.

Inside the region, pixels that stay constant over the whole recording (calipers, body markers,
burned-in text or a logo inside the box) identify patients and give pretext tasks a shortcut:
:func:`static_mask` finds them, and ingest blanks them with the region mask. Colour Doppler
frames are recognised by the share of strongly coloured pixels in the region
(:func:`colour_fraction`).

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
    *,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
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
        stats: ``temporal_stats(frames)`` when already computed (shared with :func:`static_mask`).

    Returns:
        (H, W) bool, or None (with a logged warning) when nothing varies enough.
    """
    if frames.ndim != 3:
        raise ValueError(f"frames must be (t, H, W), got shape {frames.shape}")
    t, height, width = frames.shape
    if t < 2:
        log.warning("imaging region: fewer than 2 frames, keeping the full frame")
        return None
    std = (temporal_stats(frames) if stats is None else stats)[1]  # (H, W)
    cut = max(threshold, relative * float(np.percentile(std, 99)))
    mask = (std > cut).astype(np.uint8)  # (H, W)
    size = max(3, int(round(min(height, width) * 0.03)) | 1)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((size, size), np.uint8))
    n, labels, components, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n < 2:
        log.warning("imaging region: no pixel varies over time, keeping the full frame")
        return None
    best = 1 + int(np.argmax(components[1:, cv2.CC_STAT_AREA]))
    if components[best, cv2.CC_STAT_AREA] < min_area * height * width:
        log.warning("imaging region: the moving region is too small, keeping the full frame")
        return None
    # the hull's corners are outer-border pixels: hull the border, not every pixel of the region
    border, _ = cv2.findContours((labels == best).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    hull = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.concatenate(border)), 1)
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
    keep, blanked = None, None
    if mask is not None:  # 0/1 multiplier of the crop's shape: blanking is one multiply per frame
        keep = np.asarray(mask[y0:y1, x0:x1], frames.dtype)  # (h, w)
        if frames.ndim == 4:
            keep = np.repeat(keep[..., None], frames.shape[3], axis=-1)  # (h, w, C)
        blanked = np.empty_like(keep)
    for i, frame in enumerate(frames):
        crop = frame[y0:y1, x0:x1]  # a view: cv2 reads its row stride
        if keep is not None:
            crop = np.multiply(crop, keep, out=blanked)
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


STATIC_STD = 2.0  # grey levels: at most this temporal std is "constant" (lossy JPEG flickers ~1)
STATIC_FLOOR = 32.0  # mean grey level below which a constant pixel is background, not an overlay
STATIC_MIN_PIXELS = 6  # smaller connected static sets are chance specks, not overlays
STATIC_MAX_FRACTION = 0.5  # more static than this share of the bright region: a still recording
STATIC_MIN_FRAMES = 5  # fewer sampled frames cannot tell an overlay from still anatomy
CHROMA_MIN = 48  # max(R, G, B) - min(R, G, B) from which a pixel counts as coloured
EXACT_FRAMES = 256  # uint8 sums (of squares too) over this many frames stay below 2**24: exact in float32


def temporal_stats(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and standard deviation over time, sqrt(E[x^2] - E[x]^2).

    uint8 frames are summed (and their squares) with ``cv2.accumulate`` in float32 over runs of
    ``EXACT_FRAMES`` frames, where every partial sum is an integer below 2**24 and so exact, and
    the runs are added in float64: the moments are exact, and the result is bit-equal to summing
    in int64 (~10x faster on 60 frames). Other dtypes are accumulated in float64.

    Args:
        frames: (t, H, W) frames, t >= 1.

    Returns:
        (mean, std), float64 (H, W) each.
    """
    if frames.ndim != 3 or not len(frames):
        raise ValueError(f"frames must be (t, H, W) with t >= 1, got shape {frames.shape}")
    exact = frames.dtype == np.uint8
    run, dtype = (EXACT_FRAMES, np.float32) if exact else (len(frames), np.float64)
    total = np.zeros(frames.shape[1:], np.float64)  # (H, W)
    squares = np.zeros(frames.shape[1:], np.float64)
    for i in range(0, len(frames), run):
        part, part_sq = np.zeros(frames.shape[1:], dtype), np.zeros(frames.shape[1:], dtype)  # (H, W)
        for frame in frames[i : i + run]:
            frame = np.ascontiguousarray(frame) if exact else frame.astype(np.float64)
            cv2.accumulate(frame, part)
            cv2.accumulateSquare(frame, part_sq)
        total += part
        squares += part_sq
    mean = total / len(frames)
    return mean, np.sqrt(np.clip(squares / len(frames) - mean * mean, 0, None))


def static_mask(
    frames: np.ndarray,
    inside: np.ndarray | None = None,
    *,
    max_std: float = STATIC_STD,
    floor: float = STATIC_FLOOR,
    min_pixels: int = STATIC_MIN_PIXELS,
    max_fraction: float = STATIC_MAX_FRACTION,
    min_frames: int = STATIC_MIN_FRAMES,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray | None:
    """Overlay pixels inside the imaging region that never change (calipers, markers, text).

    A pixel is static when its temporal standard deviation over ``frames`` (spread over the whole
    recording) is at most ``max_std`` and its mean is at least ``floor`` (dark constant pixels
    are background and already 0-ish). The static set is closed with a 3 x 3 kernel (joins the
    strokes of a glyph), connected sets smaller than ``min_pixels`` are dropped (chance specks in
    still anatomy), and the rest is dilated by one pixel to take the anti-aliased rim of text.

    Args:
        frames: (t, H, W) uint8 grey frames spread over the recording.
        inside: (H, W) bool imaging region (mask or box); None: the whole frame.
        max_std, floor, min_pixels: the rules above.
        max_fraction: when more than this share of the region's bright pixels is static the
            recording itself barely moves (a frozen loop); nothing is masked (warning logged).
        min_frames: with fewer frames nothing is masked (a still image has no "constant").
        stats: ``temporal_stats(frames)`` when already computed (shared with :func:`imaging_mask`).

    Returns:
        (H, W) bool pixels to blank, or None when there is none (or the rule does not apply).
    """
    if frames.ndim != 3:
        raise ValueError(f"frames must be (t, H, W), got shape {frames.shape}")
    if len(frames) < min_frames:
        return None
    region = np.ones(frames.shape[1:], bool) if inside is None else np.asarray(inside, bool)
    mean, std = temporal_stats(frames) if stats is None else stats  # (H, W) each
    bright = region & (mean >= floor)
    static = (bright & (std <= max_std)).astype(np.uint8)
    if not static.any():
        return None
    if static.sum() > max_fraction * bright.sum():
        log.warning("static pixels: %.0f%% of the imaging region never changes (a still recording?): "
                    "static-pixel masking skipped", 100.0 * static.sum() / bright.sum())  # fmt: skip
        return None
    static = cv2.morphologyEx(static, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    n, labels, components, _ = cv2.connectedComponentsWithStats(static, connectivity=8)
    big = np.flatnonzero(components[:, cv2.CC_STAT_AREA] >= min_pixels)
    big = big[big > 0]  # label 0 is the background
    if not big.size:
        return None
    static = np.isin(labels, big).astype(np.uint8)
    return cv2.dilate(static, np.ones((3, 3), np.uint8)).astype(bool) & region


def colour_fraction(frames: np.ndarray, keep: np.ndarray | None = None,
                    chroma: int = CHROMA_MIN) -> np.ndarray:  # fmt: skip
    """Share of each frame's pixels (inside ``keep``) that are strongly coloured.

    Args:
        frames: (t, H, W, 3) uint8 RGB.
        keep: (H, W) bool pixels to count (the imaging region); None: every pixel.
        chroma: a pixel is coloured when max(R, G, B) - min(R, G, B) >= ``chroma``.

    Returns:
        (t,) float64 in [0, 1]; grey frames give 0.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (t, H, W, 3) RGB, got shape {frames.shape}")
    r, g, b = frames[..., 0], frames[..., 1], frames[..., 2]  # three maxima: ~20x faster than max(axis=-1)
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)  # (t, H, W), >= 0
    coloured = spread >= chroma
    if keep is None:
        return coloured.mean(axis=(1, 2))
    keep = np.asarray(keep, bool)
    return (coloured & keep).sum(axis=(1, 2)) / max(int(keep.sum()), 1)

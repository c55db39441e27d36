"""Object-aware augmentation from cached object maps: the crop and the background mixup of Mo et al.

Mo, Kang, Sohn, Shin. *Object-aware Contrastive Learning for Debiased Scene Representation.*
NeurIPS 2021 (METHODS.md §6). Both read a per-frame object map (a ContraCAM mask in [0, 1] and its
box, written by the ``localise`` stage) and work on whole batches of single frames (B, 1, H, W):

- **object-aware random crop** (:func:`crop_to_boxes`): each frame is cropped to its box (the
  margin is already in the box) and resized back to H × W *before* the usual two-view
  augmentation, so both views look at the object;
- **background mixup** (:class:`BackgroundMixup`): the query view becomes
  ``mask · x + (1 − mask) · b`` with ``b`` another frame's *background-only* version: the mask is
  cut at ``threshold`` (0.2), the smallest rectangle around it is found and the largest strip of
  the frame outside that rectangle is tiled over it (done with probability ``p``, 0.4). When the
  partner frame has no background (its object covers the frame, or the draw said no) a background
  from a FIFO of the last ``queue_size`` (50) is used instead, and the frame stays as it is while
  the FIFO is empty. The official code computes the mask online from the current encoder; here it
  is the cached map, applied before the view augmentation so mask and frame stay aligned.

    >>> crops = crop_to_boxes(frames, boxes)                     # (B, 1, H, W), boxes (B, 4) px
    >>> query = BackgroundMixup(seed=0)(frames, masks)            # (B, 1, H, W), masks (B, 1, H, W)
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F


def crop_to_boxes(frames: torch.Tensor, boxes: torch.Tensor, extra: torch.Tensor | None = None):
    """Crop each frame to its box and resize it back to the frame size (bilinear).

    Args:
        frames: (B, C, H, W).
        boxes: (B, 4) float ``x0, y0, x1, y1`` in pixels, end-exclusive (a whole-frame box is a no-op).
        extra: optional (B, C', H, W) maps cropped the same way (e.g. the object masks).

    Returns:
        the cropped frames (B, C, H, W), or (frames, extra) when ``extra`` is given.
    """
    b, _, h, w = frames.shape
    boxes = boxes.to(frames)
    theta = torch.zeros(b, 2, 3, dtype=frames.dtype, device=frames.device)  # output → input, normalised
    theta[:, 0, 0] = (boxes[:, 2] - boxes[:, 0]) / w
    theta[:, 1, 1] = (boxes[:, 3] - boxes[:, 1]) / h
    theta[:, 0, 2] = (boxes[:, 0] + boxes[:, 2]) / w - 1
    theta[:, 1, 2] = (boxes[:, 1] + boxes[:, 3]) / h - 1
    stack = frames if extra is None else torch.cat([frames, extra.to(frames)], dim=1)
    grid = F.affine_grid(theta, list(stack.shape), align_corners=False)
    out = F.grid_sample(stack, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out if extra is None else (out[:, : frames.shape[1]], out[:, frames.shape[1]:])


def mask_rectangle(hard: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) end-exclusive of the smallest rectangle holding every True pixel; None if empty."""
    ys, xs = np.nonzero(hard)
    if ys.size == 0:
        return None
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def background_only(frame: torch.Tensor, hard: np.ndarray) -> torch.Tensor | None:
    """``frame`` (C, H, W) with the largest border strip outside the object's rectangle tiled over it.

    The strips are the rows above and below the rectangle and the columns left and right of it; the
    largest (by area) is repeated along its short axis until it covers the frame, and that tiling
    replaces the pixels inside the rectangle. None when the rectangle covers the whole frame.
    """
    _, h, w = frame.shape
    rect = mask_rectangle(hard)
    if rect is None:
        return frame.clone()
    y0, y1, x0, x1 = rect
    strips = {"top": y0 * w, "bottom": (h - y1) * w, "left": x0 * h, "right": (w - x1) * h}
    side = max(strips, key=strips.get)
    if strips[side] <= 0:
        return None
    if side in ("top", "bottom"):
        strip = frame[:, :y0] if side == "top" else frame[:, y1:]
        tiled = strip.repeat(1, -(-h // strip.shape[1]), 1)[:, :h]
    else:
        strip = frame[:, :, :x0] if side == "left" else frame[:, :, x1:]
        tiled = strip.repeat(1, 1, -(-w // strip.shape[2]))[:, :, :w]
    out = frame.clone()
    out[:, y0:y1, x0:x1] = tiled[:, y0:y1, x0:x1]
    return out


class BackgroundMixup:
    """Background mixup with a FIFO of recent backgrounds (module docstring).

    Args:
        threshold: the mask is cut at this value to find the object's rectangle (0.2).
        p: probability that a frame's background-only version is made (0.4).
        queue_size: length of the FIFO of backgrounds (50).
        seed: seed of the draws (partner permutation, ``p``, FIFO picks).
    """

    def __init__(self, threshold: float = 0.2, p: float = 0.4, queue_size: int = 50, seed: int = 0) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.threshold, self.p = threshold, p
        self.queue: deque[torch.Tensor] = deque(maxlen=queue_size)
        self.rng = np.random.default_rng(seed)

    def __call__(self, frames: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """frames (B, C, H, W), masks (B, 1, H, W) in [0, 1] → mixed frames (B, C, H, W)."""
        b = frames.shape[0]
        hard = (masks[:, 0] >= self.threshold).cpu().numpy()
        backgrounds: list[torch.Tensor | None] = []
        for i in range(b):
            bg = background_only(frames[i], hard[i]) if self.rng.random() < self.p else None
            backgrounds.append(bg)
        partner = self.rng.permutation(b)
        out = []
        for i in range(b):
            if not hard[i].any() or hard[i].all():  # no object, or no background: keep the frame
                out.append(frames[i])
                continue
            bg = backgrounds[partner[i]]
            if bg is None and self.queue:
                bg = self.queue[int(self.rng.integers(len(self.queue)))].to(frames)
            out.append(frames[i] if bg is None else masks[i] * frames[i] + (1 - masks[i]) * bg)
        for bg in backgrounds:
            if bg is not None:
                self.queue.append(bg.detach().cpu())
        return torch.stack(out)


__all__ = ["crop_to_boxes", "mask_rectangle", "background_only", "BackgroundMixup"]

"""Label-free anatomy localisation over a cache: ContraCAM masks and boxes per frame, scored where
anatomy masks exist (METHODS.md §6).

For every ``frame_stride``-th frame of the chosen recordings: the ContraCAM mask after
``mask_iterations`` refinement steps (1) and the boxes of the mask after ``iterations`` steps (10)
— one refinement run gives both, the first is a prefix of the second. Frames are scored in
shuffled batches that mix recordings (a frame's negatives are the other frames of its batch; the
next frames of the same scan would look like positives). With ``restrict`` the maps live in each
recording's imaging region (:func:`shard_region`: the cached region mask within the lit pixels),
else in the whole frame.

Scores against a ground-truth anatomy mask (frames whose mask is empty are skipped):
``mask_iou`` (both binarised at 0.5), ``box_iou`` (the largest box against the mask's bounding
box), ``pointing`` (the map's maximum falls inside the mask). The ``centre box`` baseline is the
box of half the imaging region's width and height around its centre (its mask: that box inside
the region; its point: the box centre).

    >>> summary = localise(cache, scorer, shards, cfg, out_dir)        # writes objects/<shard>.npz
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from usssl.downstream.contracam import ContrastiveScorer, contracam, mask_boxes

log = logging.getLogger(__name__)

METRICS = ("mask_iou", "box_iou", "pointing")


def imaging_region(frames: np.ndarray, threshold: int = 4, samples: int = 64) -> np.ndarray:
    """bool (H, W): the pixels some frame of ``frames`` (T, H, W) uint8 lights above ``threshold``
    (from ``samples`` evenly spaced frames), closed into a hole-free region (largest component, its
    convex hull). An empty result means the whole frame."""
    import cv2

    idx = np.linspace(0, len(frames) - 1, min(samples, len(frames))).round().astype(int)
    lit = (np.asarray(frames[idx]).max(axis=0) > threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(lit, connectivity=8)
    if n <= 1:
        return np.ones(lit.shape, bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    points = cv2.findNonZero((labels == biggest).astype(np.uint8))
    hull = np.zeros_like(lit)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    return hull.astype(bool)


def shard_region(shard) -> np.ndarray:
    """bool (H, W): the imaging region of a cached recording: its stored ``region_mask`` (ingest's
    motion hull, or the whole crop) within the pixels its frames light (:func:`imaging_region`; a
    still's stored region is the whole image, its fan is what is lit). Where they do not overlap,
    the lit region alone."""
    lit = imaging_region(shard.frames)
    stored = getattr(shard, "region_mask", None)
    if stored is None:
        return lit
    both = lit & (np.asarray(stored) > 0)
    return both if both.any() else lit


def box_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """End-exclusive bounding box ``(x0, y0, x1, y1)`` of a bool mask; None when empty."""
    ys, xs = np.nonzero(mask)
    return None if ys.size == 0 else (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def box_iou(a, b) -> float:
    """IoU of two end-exclusive boxes (0 when either is None)."""
    if a is None or b is None:
        return 0.0
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def mask_iou(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of ``pred > threshold`` and ``truth > threshold`` (1 when both are empty)."""
    p, t = pred > threshold, truth > threshold
    union = (p | t).sum()
    return 1.0 if union == 0 else float((p & t).sum() / union)


def score_frame(cam: np.ndarray, box, truth: np.ndarray) -> dict[str, float]:
    """The three scores of one frame's map (H, W) in [0, 1] and box against its anatomy mask."""
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return {"mask_iou": mask_iou(cam, truth), "box_iou": box_iou(box, box_of(truth > 0)),
            "pointing": float(truth[y, x] > 0)}


def centre_box(region: np.ndarray) -> tuple[int, int, int, int]:
    """Half the width and height of the region's bounding box, around its centre."""
    x0, y0, x1, y1 = box_of(region) or (0, 0, region.shape[1], region.shape[0])
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 4, (y1 - y0) / 4
    return int(round(cx - hw)), int(round(cy - hh)), int(round(cx + hw)), int(round(cy + hh))


def centre_map(region: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The centre-box baseline's map (H, W) float (1 inside the box and the region, a peak at its
    centre) and its box."""
    x0, y0, x1, y1 = centre_box(region)
    cam = np.zeros(region.shape, np.float32)
    cam[y0:y1, x0:x1] = 0.9
    cam *= region
    cam[min((y0 + y1) // 2, region.shape[0] - 1), min((x0 + x1) // 2, region.shape[1] - 1)] = 1.0
    return cam, (x0, y0, x1, y1)


def overlay(frame: np.ndarray, cam: np.ndarray, boxes, truth: np.ndarray | None = None) -> np.ndarray:
    """BGR uint8 (H, 2W + gap): the frame | the frame with the map (jet), boxes (green) and the anatomy
    mask's outline (white)."""
    import cv2

    gray = cv2.cvtColor(np.asarray(frame, np.uint8), cv2.COLOR_GRAY2BGR)
    heat = cv2.applyColorMap((np.clip(cam, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    mixed = cv2.addWeighted(gray, 0.55, heat, 0.45, 0)
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(mixed, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 1)
    if truth is not None and truth.any():
        contours, _ = cv2.findContours((truth > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(mixed, contours, -1, (255, 255, 255), 1)
    gap = np.zeros((gray.shape[0], 2, 3), np.uint8)
    return np.concatenate([gray, gap, mixed], axis=1)


def frame_list(cache, shards: list[str], stride: int) -> list[tuple[str, int]]:
    return [(s, int(f)) for s in shards for f in range(0, len(cache.shard(s)), stride)]


def localise(cache, scorer: ContrastiveScorer, shards: list[str], lcfg, out: Path, seed: int = 0,
             truth_of=None) -> pd.DataFrame:
    """Localise every ``lcfg.frame_stride``-th frame of ``shards`` (module docstring); writes
    ``out/objects/<shard>.npz`` (``frames``, ``boxes`` (n, 4) px — the largest box, the whole frame
    when none —, ``masks`` (n, H, W) uint8 0–255), ``out/boxes.csv`` (every box) and
    ``out/overlay-*.png``; returns the per-frame scores (empty without ``truth_of``).

    ``truth_of(shard_id)``: the recording's anatomy masks (T, H, W) or None.
    """
    import cv2

    out = Path(out)
    (out / "objects").mkdir(parents=True, exist_ok=True)
    regions = {s: shard_region(cache.shard(s)) if lcfg.restrict else None for s in shards}
    items = frame_list(cache, shards, lcfg.frame_stride)
    order = np.random.default_rng(seed).permutation(len(items))
    masks: dict[tuple[str, int], np.ndarray] = {}
    found: dict[tuple[str, int], list] = {}
    t_box, t_mask = max(lcfg.iterations, lcfg.mask_iterations), lcfg.mask_iterations
    for start in range(0, len(order), lcfg.batch_size):
        chunk = [items[i] for i in order[start:start + lcfg.batch_size]]
        if len(chunk) < 2:  # a last lone frame borrows a negative from the previous batch
            chunk = [items[order[max(0, start - 1)]], *chunk]
        frames = torch.stack([torch.from_numpy(np.asarray(cache.shard(s).frames[f], np.float32) / 255.0)
                              for s, f in chunk])[:, None]  # (B, 1, H, W)
        region = None
        if lcfg.restrict:
            region = torch.from_numpy(np.stack([regions[s] for s, _ in chunk]))
        steps = contracam(scorer, frames, region=region, iterations=t_box, every=True)
        for k, key in enumerate(chunk):
            masks[key] = steps[t_mask - 1][k, 0].numpy()
            found[key] = mask_boxes(steps[-1][k, 0].numpy(), lcfg.threshold, lcfg.min_area, lcfg.margin)
    rows, box_rows = [], []
    h, w = next(iter(masks.values())).shape
    for shard in shards:
        keys = [k for k in items if k[0] == shard]
        truth = truth_of(shard) if truth_of is not None else None
        main = [found[k][0] if found[k] else (0, 0, w, h) for k in keys]
        np.savez_compressed(out / "objects" / f"{shard}.npz", frames=np.array([f for _, f in keys]),
                            boxes=np.array(main, np.int32).reshape(-1, 4),
                            masks=np.stack([(masks[k] * 255).round().astype(np.uint8) for k in keys]))
        for k in keys:
            box_rows += [{"shard": shard, "frame": k[1], "rank": r, "x0": b[0], "y0": b[1], "x1": b[2], "y1": b[3]}
                         for r, b in enumerate(found[k])]
            if truth is None or not truth[k[1]].any():
                continue
            gt = truth[k[1]]
            rows.append({"shard": shard, "frame": k[1], "model": "contracam",
                         **score_frame(masks[k], found[k][0] if found[k] else None, gt)})
            base_region = regions[shard] if regions[shard] is not None else np.ones((h, w), bool)
            cam, box = centre_map(base_region)
            rows.append({"shard": shard, "frame": k[1], "model": "centre_box", **score_frame(cam, box, gt)})
    pd.DataFrame(box_rows, columns=["shard", "frame", "rank", "x0", "y0", "x1", "y1"]).to_csv(out / "boxes.csv",
                                                                                           index=False)
    for n, i in enumerate(order[: lcfg.n_overlays]):
        s, f = items[i]
        truth = truth_of(s) if truth_of is not None else None
        image = overlay(cache.shard(s).frames[f], masks[(s, f)], found[(s, f)], None if truth is None else truth[f])
        cv2.imwrite(str(out / f"overlay-{n}.png"), image)
    return pd.DataFrame(rows, columns=["shard", "frame", "model", *METRICS])


__all__ = ["METRICS", "imaging_region", "shard_region", "box_of", "box_iou", "mask_iou", "score_frame", "centre_box", "centre_map",
           "overlay", "frame_list", "localise"]

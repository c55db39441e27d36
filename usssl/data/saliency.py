"""Gaze-saliency training data: per-frame ground-truth maps from the cache's gaze.

A frame's ground truth is the normalised sum of Gaussians at the sonographer's gaze points within a
short window around it (Droste et al., IPMI 2019; METHODS.md §3); σ is given in cached pixels or
in degrees of visual angle with the viewing geometry (``shard_sigma``).

    >>> ds = SaliencyDataset.from_config(cache, cache.shard_ids("train"), SaliencyConfig(), split="train")
    >>> item = ds[0]   # video (1, T, H, W), saliency (1, H, W) summing to 1, fixations, points
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from usssl.config import SaliencyConfig
from usssl.data.cache import Cache, shard_info
from usssl.data.splits import require_split
from usssl.data.fixations import fixation_map, gaze_fixations, sigma_from_visual_angle
from usssl.errors import DataError


def shard_sigma(cache: Cache, shard_id: str, cfg: SaliencyConfig) -> tuple[float, float]:
    """(σ_y, σ_x) of the ground-truth Gaussian in the shard's cached pixels.

    With ``sigma_deg``, the angle becomes screen pixels (``sigma_from_visual_angle``), then source
    pixels (÷ ``display_scale``), then cached pixels through the shard's crop box and resize.
    """
    if cfg.sigma_deg is None:
        return cfg.sigma_px, cfg.sigma_px
    info = shard_info(cache.root, shard_id) or {}
    if "crop_box" not in info:
        raise DataError(f"{cache.root}: shard {shard_id} records no crop box, so degrees of visual angle "
                        "cannot be turned into cached pixels; set saliency.sigma_px instead of sigma_deg")
    x0, y0, x1, y1 = info["crop_box"]
    sigma_src = sigma_from_visual_angle(cfg.sigma_deg, cfg.screen_width_px, cfg.screen_width_mm,
                                        cfg.distance_mm) / cfg.display_scale
    return sigma_src * info["height"] / (y1 - y0), sigma_src * info["width"] / (x1 - x0)


class SaliencyDataset(Dataset):
    """Frames with gaze, their ground-truth map and fixations (``Cache(root).shard(id).gaze``).

    A frame t's fixations are the gaze points of frames t − k … t + k (k = ``window_frames``);
    frames whose window holds no gaze are skipped.

    Items: ``video`` (1, clip_frames, H, W) float in [0, 1] centred on t (edge frames repeated),
    ``saliency`` (1, H, W) float summing to 1, ``fixations`` (1, H, W) fixation counts,
    ``points`` (2k + 1, 2) x, y cached pixels (NaN absent), ``frame``, ``subject``, ``index``.

    Args:
        cache: the ingested cache.
        shard_ids: shards to read.
        sigma: (σ_y, σ_x) in cached pixels per shard id (``shard_sigma``), or one σ for all.
        split: the split every shard must belong to, or None.
    """

    def __init__(self, cache: Cache, shard_ids: list[str], sigma: float | dict[str, tuple[float, float]] = 2.0,
                 split: str | None = None, window_frames: int = 2, frame_stride: int = 1,
                 clip_frames: int = 1) -> None:
        require_split(cache, shard_ids, split)
        self.cache, self.k, self.clip_frames = cache, window_frames, clip_frames
        self.sigma = sigma if isinstance(sigma, dict) else {s: (float(sigma), float(sigma)) for s in shard_ids}
        self.subjects = sorted({cache.shard(s).subject for s in shard_ids})
        self.items: list[tuple[str, int]] = []
        for shard_id in shard_ids:
            seen = ~np.isnan(cache.shard(shard_id).gaze).any(axis=1)  # (T,) the frame has gaze
            cum = np.concatenate([[0], np.cumsum(seen)])  # (T + 1,)
            t_all = np.arange(len(seen))
            in_window = cum[np.minimum(t_all + self.k + 1, len(seen))] - cum[np.maximum(t_all - self.k, 0)]  # (T,)
            frames = np.arange(0, len(seen), frame_stride)
            self.items += [(shard_id, int(t)) for t in frames[in_window[frames] > 0]]

    @classmethod
    def from_config(cls, cache: Cache, shard_ids: list[str], cfg: SaliencyConfig,
                    split: str | None = None) -> SaliencyDataset:
        """The dataset with the window, stride, clip length and σ of ``cfg``."""
        return cls(cache, shard_ids, {s: shard_sigma(cache, s, cfg) for s in shard_ids}, split,
                   cfg.window_frames, cfg.frame_stride, cfg.clip_frames)

    def __len__(self) -> int:
        return len(self.items)

    def points(self, index: int) -> np.ndarray:
        """(2k + 1, 2) gaze x, y of item ``index``'s window, NaN where absent or outside the scan."""
        shard_id, t = self.items[index]
        gaze = self.cache.shard(shard_id).gaze
        out = np.full((2 * self.k + 1, 2), np.nan, np.float32)
        lo, hi = max(t - self.k, 0), min(t + self.k + 1, len(gaze))
        out[lo - (t - self.k) : hi - (t - self.k)] = gaze[lo:hi]
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        shard_id, t = self.items[index]
        shard = self.cache.shard(shard_id)
        idx = np.clip(t + np.arange(self.clip_frames) - self.clip_frames // 2, 0, len(shard) - 1)
        video = np.asarray(shard.frames[idx], np.float32) / 255.0  # (clip_frames, H, W)
        points = self.points(index)
        fixations = gaze_fixations(points, video.shape[1:])  # (H, W) counts
        gt = fixation_map(fixations, self.sigma[shard_id])  # (H, W), sums to 1
        return {
            "video": torch.from_numpy(video)[None],  # (1, clip_frames, H, W)
            "saliency": torch.from_numpy(gt.astype(np.float32))[None],  # (1, H, W)
            "fixations": torch.from_numpy(fixations.astype(np.float32))[None],  # (1, H, W)
            "points": torch.from_numpy(points),  # (2k + 1, 2)
            "frame": torch.tensor(t),
            "subject": torch.tensor(self.subjects.index(shard.subject)),
            "index": torch.tensor(index),
        }

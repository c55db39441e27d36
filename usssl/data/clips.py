"""Clip datasets over the cache: CVRL's interval-sampled clip pairs, and single clips.

CVRL (Qian et al., CVPR 2021, Sec. 3.2 "temporal interval sampling") draws two clips of n frames
at temporal stride s from one video of L frames. With T = L − (n−1)·s the number of valid starts,
the gap Δ between the starts follows the linearly decreasing density P(Δ) ∝ T − Δ on [0, T) (the
paper's power law with p = 1), so nearby clips are likelier but distant ones still occur. The
first start is uniform on [0, T − Δ), the second is Δ later, and the two are swapped at random.
Frames are integers, so Δ is drawn from the discrete form P(Δ = d) = (T − d) / (T(T+1)/2),
d = 0 … T−1. When L ≤ (n−1)·s (a video too short for one clip) T = L, the starts are independent
uniforms and frame indices past the end repeat the last frame.

Our departure for ultrasound (``max_gap``): the paper's videos are 10 s Kinetics clips of one
action, an ultrasound scan is minutes long and shows a new anatomical plane every few seconds.
Over a whole 40 s synthetic scan the mean gap is ~13 s and only 17% of the pairs show the same
plane, so the two views share little but the subject's appearance — which the intensity jitter
destroys — and the embedding collapses. ``max_gap`` caps Δ while keeping the paper's shape:
P(Δ = d) ∝ G − d on d = 0 … G−1 with G = min(T, max_gap + 1); the first start stays uniform on
[0, T − Δ). ``max_gap=None`` is the paper's sampler.

Every item is drawn from ``np.random.default_rng([seed, epoch, index])``, so an epoch is
reproducible and ``set_epoch`` (called by the training engine) gives new draws. Shards are drawn
with probability proportional to their number of frames (every frame equally likely; the paper
takes one pair per video and epoch, but ultrasound scans differ a lot in length).

    >>> ds = ClipPairDataset(cache, cache.shard_ids("train"), clip_frames=16, stride=2)
    >>> item = ds[0]; item["video_a"].shape                      # (1, 16, H, W) float in [0, 1]
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from usssl.data.cache import Cache
from usssl.data.splits import require_split
from usssl.errors import DataError

MAX_GAP_S = 2.0  # default cap on CVRL's clip gap in seconds (ours; CVRLConfig.max_gap_s)


def interval_gap_probs(valid_starts: int) -> np.ndarray:
    """(T,) P(Δ = d) ∝ T − d for d = 0 … T−1 (sums to 1)."""
    weights = np.arange(valid_starts, 0, -1, dtype=np.float64)  # T − d
    return weights / weights.sum()


def sample_interval_starts(n_frames: int, clip_frames: int, stride: int,
                           rng: np.random.Generator, max_gap: int | None = None) -> tuple[int, int]:
    """Start frames (a, b) of CVRL's two clips in a video of ``n_frames`` frames.

    Args:
        max_gap: largest gap Δ in frames (ours; None: up to T − 1, the paper).

    Returns:
        the two start indices; clip k covers frames start_k + i·stride, i = 0 … clip_frames−1.
    """
    span = (clip_frames - 1) * stride
    if n_frames <= span:  # too short for one clip: independent uniform starts
        return int(rng.integers(n_frames)), int(rng.integers(n_frames))
    valid = n_frames - span  # T
    support = valid if max_gap is None else min(valid, max_gap + 1)  # G
    gap = int(rng.choice(support, p=interval_gap_probs(support)))  # Δ, P(Δ) ∝ G − Δ
    first = int(rng.integers(valid - gap))  # uniform on [0, T − Δ)
    pair = (first, first + gap)
    return pair[::-1] if rng.integers(2) else pair


def clip_indices(start: int | np.ndarray, clip_frames: int, stride: int, n_frames: int) -> np.ndarray:
    """Frame indices start + i·stride (i < ``clip_frames``), clamped to [0, n_frames − 1]:
    (clip_frames,) for one start, (n, clip_frames) for an array of n starts."""
    offsets = stride * np.arange(clip_frames)  # (T,)
    return np.clip(np.asarray(start)[..., None] + offsets, 0, n_frames - 1)


def anchored_clip_indices(n: int, clip_frames: int, anchor: str = "end") -> np.ndarray:
    """(n, T) indices of every frame's clip of consecutive frames, edges repeating the first / last
    frame. "end": frame k's clip is k-T+1 … k; "centre": k-T//2 … k+(T-1)//2."""
    first = -(clip_frames - 1) if anchor == "end" else -(clip_frames // 2)
    return clip_indices(np.arange(n) + first, clip_frames, 1, n)


class _ClipSource(Dataset):
    """Shared bookkeeping: shards of one split, length-weighted shard draws, per-item RNG."""

    def __init__(self, cache: Cache, shard_ids: list[str], split: str | None, clip_frames: int,
                 stride: int, length: int, seed: int) -> None:
        require_split(cache, shard_ids, split)
        if not shard_ids:
            raise DataError(f"{cache.root}: no recordings to draw clips from in the '{split}' split")
        if clip_frames < 1 or stride < 1 or length < 1:
            raise ValueError(f"clip_frames, stride and length must be >= 1, got {clip_frames}, {stride}, {length}")
        self.cache, self.shard_ids = cache, list(shard_ids)
        self.clip_frames, self.stride, self.length, self.seed = clip_frames, stride, length, seed
        self.epoch = 0
        self.n_frames = np.array([len(cache.shard(s)) for s in self.shard_ids], dtype=np.float64)
        self.shard_probs = self.n_frames / self.n_frames.sum()
        self.subjects = sorted({cache.shard(s).subject for s in self.shard_ids})

    def set_epoch(self, epoch: int) -> None:
        """New draws every epoch (called by the training engine)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _draw_shard(self, rng: np.random.Generator):
        return self.cache.shard(self.shard_ids[int(rng.choice(len(self.shard_ids), p=self.shard_probs))])

    def _clip(self, shard, start: int) -> torch.Tensor:
        """(1, clip_frames, H, W) float in [0, 1]."""
        idx = clip_indices(start, self.clip_frames, self.stride, len(shard))
        frames = np.asarray(shard.frames[idx], dtype=np.float32) / 255.0  # (n, H, W)
        return torch.from_numpy(frames)[None]


class ClipPairDataset(_ClipSource):
    """Two clips of the same recording at CVRL's sampled interval.

    Args:
        cache: the ingested cache.
        shard_ids: recordings to draw from; all must belong to ``split``.
        split: the split every shard must belong to ("train"), or None.
        clip_frames: frames per clip n (CVRL: 16).
        stride: temporal stride s between clip frames (CVRL: 2).
        pairs_per_epoch: items per epoch.
        seed: base of the per-item draws.
        max_gap_s: largest gap between the two clip starts in seconds, converted with each shard's
            fps (ours, see the module docstring; None: the whole recording, the paper).

    Items: ``video_a``, ``video_b`` (1, n, H, W) float in [0, 1]; ``start_a``, ``start_b``,
    ``subject``, ``index`` () long.
    """

    def __init__(self, cache: Cache, shard_ids: list[str], split: str | None = "train", clip_frames: int = 16,
                 stride: int = 2, pairs_per_epoch: int = 2048, seed: int = 0,
                 max_gap_s: float | None = MAX_GAP_S) -> None:
        super().__init__(cache, shard_ids, split, clip_frames, stride, pairs_per_epoch, seed)
        if max_gap_s is not None and max_gap_s < 0:
            raise ValueError(f"max_gap_s must be >= 0 or None, got {max_gap_s}")
        self.max_gap_s = max_gap_s

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        shard = self._draw_shard(rng)
        max_gap = None if self.max_gap_s is None else int(round(self.max_gap_s * shard.fps))
        start_a, start_b = sample_interval_starts(len(shard), self.clip_frames, self.stride, rng, max_gap)
        return {
            "video_a": self._clip(shard, start_a),
            "video_b": self._clip(shard, start_b),
            "start_a": torch.tensor(start_a),
            "start_b": torch.tensor(start_b),
            "subject": torch.tensor(self.subjects.index(shard.subject)),
            "index": torch.tensor(index),
        }


class ClipDataset(_ClipSource):
    """One clip per item, its start uniform over the valid starts (the order + transform pretext).

    Args: as :class:`ClipPairDataset`, with ``clips_per_epoch`` items per epoch.

    Items: ``video`` (1, n, H, W) float in [0, 1]; ``start``, ``subject``, ``index`` () long.
    """

    def __init__(self, cache: Cache, shard_ids: list[str], split: str | None = "train", clip_frames: int = 4,
                 stride: int = 8, clips_per_epoch: int = 2048, seed: int = 0) -> None:
        super().__init__(cache, shard_ids, split, clip_frames, stride, clips_per_epoch, seed)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        shard = self._draw_shard(rng)
        valid = max(len(shard) - (self.clip_frames - 1) * self.stride, 1)
        start = int(rng.integers(valid)) if valid > 1 else int(rng.integers(len(shard)))
        return {
            "video": self._clip(shard, start),
            "start": torch.tensor(start),
            "subject": torch.tensor(self.subjects.index(shard.subject)),
            "index": torch.tensor(index),
        }

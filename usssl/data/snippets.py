"""Snippet tuples for TCGL: 3 snippets of a recording with gaps between them, shuffled.

TCGL (Liu et al., IEEE TIP 2022, Sec. III-A) samples from one video n = 3 snippets of L frames
(16) separated by gaps of g frames (8) and shows them in a random order; the target is the
permutation (3! = 6 classes). At frame stride s the tuple spans (3L + 2g − 1)·s + 1 cached frames
(64 at s = 1). A recording too short for the configured stride is sampled at the largest stride
that fits, down to 1, and skipped below that (``tuple_stride``); the dataset counts both
(``n_reduced``, ``n_skipped``) and logs them.

Every item is drawn from ``np.random.default_rng([seed, epoch, index])``; recordings are drawn with
probability proportional to their number of frames.

    >>> ds = SnippetTupleDataset(cache, cache.shard_ids("train"), snippet_frames=16, gap_frames=8)
    >>> item = ds[0]; item["snippets"].shape                  # (3, 1, 16, H, W), in the shuffled order
"""

from __future__ import annotations

import logging
from itertools import permutations

import numpy as np
import torch
from torch.utils.data import Dataset

from usssl.data.cache import Cache
from usssl.data.splits import require_split
from usssl.errors import DataError

log = logging.getLogger(__name__)

N_SNIPPETS = 3  # TCGL's tuple length: 3! = 6 orders
PERMUTATIONS = tuple(permutations(range(N_SNIPPETS)))  # the 6 orders, lexicographic: class k = PERMUTATIONS[k]


def tuple_span(snippet_frames: int, gap_frames: int, stride: int, n_snippets: int = N_SNIPPETS) -> int:
    """Cached frames a tuple covers: (n·L + (n−1)·g − 1)·s + 1."""
    return (n_snippets * snippet_frames + (n_snippets - 1) * gap_frames - 1) * stride + 1


def tuple_stride(n_frames: int, snippet_frames: int, gap_frames: int, stride: int,
                 n_snippets: int = N_SNIPPETS) -> int:
    """The largest frame stride ≤ ``stride`` whose tuple fits in ``n_frames`` frames; 0: none fits (skip)."""
    for s in range(stride, 0, -1):
        if tuple_span(snippet_frames, gap_frames, s, n_snippets) <= n_frames:
            return s
    return 0


def tuple_indices(start: int, snippet_frames: int, gap_frames: int, stride: int,
                  n_snippets: int = N_SNIPPETS) -> np.ndarray:
    """(n, L) cached frame indices of the n snippets in time order, from frame ``start``."""
    step = snippet_frames + gap_frames  # sampled frames from one snippet's start to the next
    offsets = np.arange(n_snippets)[:, None] * step + np.arange(snippet_frames)[None, :]  # (n, L)
    return start + offsets * stride


class SnippetTupleDataset(Dataset):
    """Shuffled 3-snippet tuples of the given recordings (TCGL's pretext input).

    Args:
        cache: the ingested cache.
        shard_ids: recordings to draw from; all must belong to ``split``.
        split: the split every shard must belong to ("train"), or None.
        snippet_frames: frames per snippet L (paper: 16).
        gap_frames: sampled frames skipped between snippets g (paper: 8).
        stride: cached frames between sampled frames (reduced per recording when it is too short).
        tuples_per_epoch: items per epoch.
        seed: base of the per-item draws.

    Items: ``snippets`` (3, 1, L, H, W) float in [0, 1], position p holding the snippet of time index
    ``order[p]``; ``order`` (3,) long; ``label`` () long, the index of ``order`` in ``PERMUTATIONS``;
    ``stride``, ``subject``, ``index`` () long.
    """

    def __init__(self, cache: Cache, shard_ids: list[str], split: str | None = "train", snippet_frames: int = 16,
                 gap_frames: int = 8, stride: int = 1, tuples_per_epoch: int = 1024, seed: int = 0) -> None:
        require_split(cache, shard_ids, split)
        if snippet_frames < 1 or gap_frames < 0 or stride < 1 or tuples_per_epoch < 1:
            raise ValueError("snippet_frames, stride and tuples_per_epoch must be >= 1 and gap_frames >= 0, got "
                             f"{snippet_frames}, {stride}, {tuples_per_epoch}, {gap_frames}")
        self.cache, self.seed, self.epoch, self.length = cache, seed, 0, tuples_per_epoch
        self.snippet_frames, self.gap_frames = snippet_frames, gap_frames
        kept, strides, skipped = [], [], []
        for shard_id in shard_ids:
            s = tuple_stride(len(cache.shard(shard_id)), snippet_frames, gap_frames, stride)
            (kept if s else skipped).append(shard_id)
            if s:
                strides.append(s)
        self.shard_ids, self.strides = kept, np.array(strides, dtype=np.int64)
        self.n_skipped, self.n_reduced = len(skipped), int((self.strides < stride).sum())
        need = tuple_span(snippet_frames, gap_frames, 1)
        if skipped or self.n_reduced:
            log.warning("TCGL snippets: %d of %d recording(s) sampled at a smaller frame stride than %d, %d skipped "
                        "(shorter than the %d frames a tuple needs at stride 1)", self.n_reduced, len(shard_ids),
                        stride, len(skipped), need)  # fmt: skip
        if not kept:
            raise DataError(f"{cache.root}: all {len(shard_ids)} training recording(s) are shorter than the {need} "
                            "frames a TCGL tuple needs (3 snippets + 2 gaps at stride 1); lower "
                            "pretrain.tcgl.snippet_frames or gap_frames")
        n_frames = np.array([len(cache.shard(s)) for s in kept], dtype=np.float64)
        self.shard_probs = n_frames / n_frames.sum()
        self.subjects = sorted({cache.shard(s).subject for s in kept})

    def set_epoch(self, epoch: int) -> None:
        """New draws every epoch (called by the training engine)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k = int(rng.choice(len(self.shard_ids), p=self.shard_probs))
        shard, stride = self.cache.shard(self.shard_ids[k]), int(self.strides[k])
        span = tuple_span(self.snippet_frames, self.gap_frames, stride)
        start = int(rng.integers(len(shard) - span + 1))
        idx = tuple_indices(start, self.snippet_frames, self.gap_frames, stride)  # (3, L), time order
        label = int(rng.integers(len(PERMUTATIONS)))
        order = np.array(PERMUTATIONS[label])
        frames = np.asarray(shard.frames[idx[order].ravel()], dtype=np.float32) / 255.0  # (3·L, H, W), shuffled
        snippets = torch.from_numpy(frames).view(N_SNIPPETS, 1, self.snippet_frames, *frames.shape[1:])
        return {
            "snippets": snippets,  # (3, 1, L, H, W)
            "order": torch.from_numpy(order),
            "label": torch.tensor(label),
            "stride": torch.tensor(stride),
            "subject": torch.tensor(self.subjects.index(shard.subject)),
            "index": torch.tensor(index),
        }

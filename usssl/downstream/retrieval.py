"""Clip retrieval: how well a frozen encoder's nearest neighbours share a query's label.

The video-retrieval protocol of the self-supervised video literature (Xu et al., CVPR 2019; TCGL,
Liu et al., IEEE TIP 2022, Sec. IV-E), for ultrasound: queries are clips of test subjects, the
gallery clips of training subjects (never the same subject); each clip is embedded by the frozen
encoder, and its k nearest gallery clips by cosine similarity are retrieved. Recall@k is the share
of queries with at least one of their k neighbours of the same label. A clip's label is its centre
frame's (the standard plane on the synthetic corpus; the recording's label where every frame
carries it).

``k`` is never above a quarter of the gallery (``valid_ks``): with a gallery of a few clips
Recall@k would approach 1 for any encoder. The **recording-level** variant (the paper's video
retrieval) averages the features of ``n_clips`` (10) uniformly spaced clips per recording and
retrieves recordings; it applies where a recording carries one label.

    >>> q, g = clip_features(encoder, queries), clip_features(encoder, gallery)        # (Nq, D), (Ng, D)
    >>> recall_at_k(q, queries.labels, g, gallery.labels, ks=[1, 5, 10])            # {1: 0.62, 5: ...}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from usssl.data.cache import Cache


def valid_ks(ks: Sequence[int], n_gallery: int) -> list[int]:
    """The ks with 1 ≤ k ≤ n_gallery / 4, sorted (k larger than that makes Recall@k meaningless)."""
    return sorted(k for k in set(ks) if 1 <= k <= n_gallery // 4)


def recall_at_k(queries: torch.Tensor, query_labels: np.ndarray, gallery: torch.Tensor, gallery_labels: np.ndarray,
                ks: Sequence[int]) -> dict[int, float]:
    """Recall@k by cosine similarity, for the ks of ``valid_ks(ks, len(gallery))``.

    Args:
        queries: (Nq, D) query features; query_labels: (Nq,).
        gallery: (Ng, D) gallery features; gallery_labels: (Ng,).

    Returns:
        {k: share of queries with at least one same-label clip among their k nearest gallery clips}.
    """
    ks = valid_ks(ks, len(gallery))
    if not ks or not len(queries):
        return {}
    sim = F.normalize(queries.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T  # (Nq, Ng)
    top = sim.topk(max(ks), dim=1).indices.numpy()  # (Nq, k_max), most similar first
    hits = np.asarray(gallery_labels)[top] == np.asarray(query_labels)[:, None]  # (Nq, k_max)
    return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


@torch.no_grad()
def clip_features(encoder: nn.Module, dataset: Dataset, batch_size: int = 64) -> torch.Tensor:
    """(N, D) features of every clip of ``dataset`` (items ``video`` (C, T, H, W) in [0, 1]), encoder in eval
    mode, normalised as in every downstream task ((x − 0.5) / 0.25)."""
    from usssl.downstream.plane_detection import extract_features

    return extract_features(encoder, dataset, batch_size)


class RecordingClips(Dataset):
    """``n_clips`` clips of ``clip_frames`` frames per recording, centred on uniformly spaced frames
    (the first clip centred on frame 0, the last on the final frame; edges repeated).

    Only recordings whose labelled frames carry one label are kept (``labels``: that label, one per
    recording); items are ``video`` (1, T, H, W) and ``recording`` (the position in ``shard_ids``).
    """

    def __init__(self, cache: Cache, shard_ids: list[str], clip_frames: int = 16, n_clips: int = 10) -> None:
        self.cache, self.clip_frames, self.n_clips = cache, clip_frames, n_clips
        self.shard_ids, labels = [], []
        for shard_id in shard_ids:
            lab = np.asarray(cache.shard(shard_id).labels)
            present = np.unique(lab[lab >= 0])
            if present.size == 1:
                self.shard_ids.append(shard_id)
                labels.append(int(present[0]))
        self.labels = np.array(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.shard_ids) * self.n_clips

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rec, j = divmod(index, self.n_clips)
        frames = self.cache.shard(self.shard_ids[rec]).frames
        n = len(frames)
        centre = int(round(j * (n - 1) / max(self.n_clips - 1, 1)))
        first = centre - self.clip_frames // 2
        idx = np.clip(np.arange(first, first + self.clip_frames), 0, n - 1)
        clip = np.asarray(frames[idx], dtype=np.float32) / 255.0  # (T, H, W)
        return {"video": torch.from_numpy(clip)[None], "recording": torch.tensor(rec)}


def recording_features(encoder: nn.Module, clips: RecordingClips) -> torch.Tensor:
    """(R, D) per recording: the mean of its ``n_clips`` clip features."""
    feats = clip_features(encoder, clips)  # (R·n_clips, D)
    return feats.view(len(clips.shard_ids), clips.n_clips, -1).mean(dim=1)

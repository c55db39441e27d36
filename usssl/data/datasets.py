"""Datasets over the cache: reading a clip is a slice of a memory-mapped array, never a decode.

``AudioVisualDataset`` pairs a video frame with the speech window around it (the video–speech
method); ``FrameDataset`` serves labelled frames (standard-plane detection). Both are built from a
list of shard ids and refuse shards outside the split they were asked for, so held-out subjects
cannot leak into pretraining.

Batch keys (docs/architecture.md): ``video`` (C, T, H, W) float in [0, 1], ``audio`` (n_samples,),
``affinity`` () float, ``label`` () long, ``subject`` () long, ``index`` () long.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from usssl.data.cache import Cache
from usssl.errors import DataError
from usssl.speech.vad import energy_vad


def _check_split(cache: Cache, shard_ids: list[str], split: str | None) -> None:
    """Refuse shards whose subject is not in ``split`` (None allows every shard)."""
    if split is None:
        return
    allowed = set(cache.shard_ids(split))
    outside = [s for s in shard_ids if s not in allowed]
    if outside:
        raise DataError(
            f"{len(outside)} shard(s) are not in the '{split}' split (e.g. {outside[0]}); "
            "pretraining and fine-tuning must read only training subjects"
        )


@dataclass
class _SpeechCandidates:
    shard: str
    frames: np.ndarray  # (n,) frame indices whose time is inside detected speech
    affinity: np.ndarray  # (n,) speech fraction of each frame's interval


class AudioVisualDataset(Dataset):
    """Frames paired with the speech window centred on their time.

    For a frame in clip interval T (``interval_frames`` frames), the positive speech window has
    length ``window_s``, is centred on the frame's time and clamped to T (Jiao et al., MICCAI 2020).
    Frames are drawn at times the energy VAD marks as speech, from intervals whose speech fraction
    (the affinity) is at least ``affinity_threshold``; every draw is a fresh pair, deterministic in
    (seed, epoch, index).

    Args:
        cache: the ingested cache.
        shard_ids: shards to draw from.
        split: the split every shard must belong to (``"train"``), or None.
        window_s: speech window length in seconds.
        interval_frames: frames per interval T.
        affinity_threshold: minimum interval speech fraction for a pair.
        pairs_per_epoch: the dataset's length.
        seed: base of the per-item random draws.
    """

    def __init__(
        self,
        cache: Cache,
        shard_ids: list[str],
        split: str | None = "train",
        window_s: float = 0.6,
        interval_frames: int = 30,
        affinity_threshold: float = 0.5,
        pairs_per_epoch: int = 2048,
        seed: int = 0,
    ) -> None:
        _check_split(cache, shard_ids, split)
        self.cache = cache
        self.window_s = window_s
        self.interval_frames = interval_frames
        self.pairs_per_epoch = pairs_per_epoch
        self.seed = seed
        self.epoch = 0
        self.rate = int(cache.settings["audio_rate"])
        self.window = int(round(window_s * self.rate))
        self.subjects = sorted({cache.shard(s).subject for s in shard_ids})
        self.candidates: list[_SpeechCandidates] = []
        self.n_intervals = 0
        self.n_high_affinity = 0
        for shard_id in shard_ids:
            found = self._speech_frames(shard_id, affinity_threshold)
            if found is not None and found.frames.size:
                self.candidates.append(found)
        if not self.candidates:
            raise DataError(
                "no speech found in the training recordings: the video–speech method needs "
                "narration (check that ingest kept audio: ingest.audio: true)"
            )
        sizes = np.array([c.frames.size for c in self.candidates], dtype=np.float64)
        self.shard_probs = sizes / sizes.sum()

    def _speech_frames(self, shard_id: str, threshold: float) -> _SpeechCandidates | None:
        shard = self.cache.shard(shard_id)
        if shard.audio is None:
            return None
        vad = energy_vad(np.asarray(shard.audio), self.rate)  # (n_10ms,)
        n = len(shard.frames)
        times = np.arange(n) / shard.fps
        vad_idx = np.minimum((times * 100).astype(int), max(len(vad) - 1, 0))
        frame_speech = vad[vad_idx] if len(vad) else np.zeros(n, dtype=bool)  # (T,)
        interval = np.arange(n) // self.interval_frames
        n_int = int(interval.max()) + 1
        fraction = np.bincount(interval, weights=frame_speech, minlength=n_int) / np.bincount(
            interval, minlength=n_int
        )  # (n_intervals,)
        self.n_intervals += n_int
        self.n_high_affinity += int((fraction >= threshold).sum())
        keep = frame_speech & (fraction[interval] >= threshold)
        frames = np.flatnonzero(keep)
        return _SpeechCandidates(shard_id, frames, fraction[interval[frames]])

    def set_epoch(self, epoch: int) -> None:
        """New draws every epoch (called by the training engine)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.pairs_per_epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        cand = self.candidates[rng.choice(len(self.candidates), p=self.shard_probs)]
        k = rng.integers(cand.frames.size)
        frame = int(cand.frames[k])
        shard = self.cache.shard(cand.shard)
        # speech window centred on the frame's time, clamped to its interval
        start_f = (frame // self.interval_frames) * self.interval_frames
        lo = int(start_f / shard.fps * self.rate)
        hi = int(min(start_f + self.interval_frames, len(shard.frames)) / shard.fps * self.rate)
        centre = int(frame / shard.fps * self.rate)
        begin = min(max(centre - self.window // 2, lo), max(hi - self.window, lo))
        audio = np.zeros(self.window, dtype=np.float32)
        piece = np.asarray(shard.audio[begin : begin + self.window], dtype=np.float32)
        audio[: piece.size] = piece
        video = torch.from_numpy(np.array(shard.frames[frame], dtype=np.float32) / 255.0)
        return {
            "video": video[None, None],  # (C=1, T=1, H, W)
            "audio": torch.from_numpy(audio),  # (n_samples,)
            "affinity": torch.tensor(float(cand.affinity[k])),
            "subject": torch.tensor(self.subjects.index(shard.subject)),
            "index": torch.tensor(index),
        }


class FrameDataset(Dataset):
    """Labelled single frames of the given shards, every ``stride``-th frame.

    Args:
        cache: the ingested cache.
        shard_ids: shards to read.
        split: the split every shard must belong to, or None.
        stride: keep every n-th cached frame.
        indices: optional subset (positions into the full list), e.g. a label fraction.
    """

    def __init__(
        self,
        cache: Cache,
        shard_ids: list[str],
        split: str | None = None,
        stride: int = 1,
        indices: np.ndarray | None = None,
    ) -> None:
        _check_split(cache, shard_ids, split)
        self.cache = cache
        items, labels, subjects = [], [], []
        for shard_id in shard_ids:
            shard = cache.shard(shard_id)
            frames = np.arange(0, len(shard.labels), stride)
            frames = frames[np.asarray(shard.labels)[frames] >= 0]
            items += [(shard_id, int(f)) for f in frames]
            labels.append(np.asarray(shard.labels)[frames])
            subjects += [shard.subject] * frames.size
        self.items = items
        self.labels = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
        self.subject_ids = np.array(subjects)
        if indices is not None:
            self.items = [self.items[i] for i in indices]
            self.labels = self.labels[indices]
            self.subject_ids = self.subject_ids[indices]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        shard_id, frame = self.items[index]
        image = np.array(self.cache.shard(shard_id).frames[frame], dtype=np.float32) / 255.0
        return {
            "video": torch.from_numpy(image)[None, None],  # (1, 1, H, W)
            "label": torch.tensor(int(self.labels[index])),
            "index": torch.tensor(index),
        }

"""Datasets over the cache: reading a clip is a slice of a memory-mapped array, never a decode.

``AudioVisualDataset`` pairs a video frame with the speech window around it (the video–speech
method); ``FrameDataset`` serves labelled frames (standard-plane detection). Both are built from a
list of shard ids and refuse shards outside the split they were asked for, so held-out subjects
cannot leak into pretraining.

Batch keys (docs/architecture.md): ``video`` (C, T, H, W) float in [0, 1], ``audio`` (n_samples,)
(also ``audio_hard_pos``, ``audio_hard_neg``, ``hard_neg_valid``), ``affinity`` () float, ``label`` () long,
``subject`` () long, ``index`` () long.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from usssl.data.cache import Cache
from usssl.data.splits import require_split
from usssl.errors import DataError
from usssl.speech.affinity import interval_affinity
from usssl.speech.vad import energy_vad


@dataclass
class _ShardSpeech:
    shard: str
    frame_speech: np.ndarray  # (T,) bool: the VAD marks speech at the frame's time
    affinity: np.ndarray  # (n_intervals,) speech fraction of each interval
    frames: np.ndarray  # (n,) high-affinity candidates: speech frames inside a high-affinity interval
    low_frames: np.ndarray  # (m,) low-affinity candidates: every frame of a low-affinity interval


class AudioVisualDataset(Dataset):
    """Frames paired with speech windows: positive, hard positive and hard negative.

    For a frame v_t in clip interval T (``interval_frames`` frames; Jiao et al., MICCAI 2020,
    Sec. 2.2), each item carries

    - ``audio``: the positive speech window (``window_s`` long) centred on the frame's time and
      clamped to T;
    - ``audio_hard_pos``: a window at another speech time of the same interval T (another time
      of T when T has no other speech);
    - ``audio_hard_neg``: a window from a nearby interval T + δ of the same scan, 0 < |δ| < D
      (``hard_negative_range``), centred on a speech time there when it has one; a scan of one
      interval has none: ``hard_neg_valid`` is 0, the window silent and ``neg_interval`` −1, and the
      losses drop that term;
    - ``affinity``: T's speech fraction (the VAD frames flagged as speech);
    - ``order_clip`` (when ``order_frames`` > 0): (1, order_frames, H, W) frames ``order_stride``
      apart from a uniformly drawn place in any training scan, with or without speech (the paper's
      L_ord covers every interval of the video).

    A share ``low_affinity_share`` of the pairs comes from low-affinity intervals (affinity below
    ``affinity_threshold``: noise, silence), any frame of them; the rest are frames at times the
    VAD marks as speech inside high-affinity intervals. The method's gate (or its self-paced
    weights) decides what the low-affinity pairs count for; the paper's cross-modal terms drop them.
    Each high-affinity interval is drawn about equally often (``pairs_per_interval`` pair groups
    per high-affinity interval and epoch, the paper's K = 2), unless ``pairs_per_epoch`` fixes the
    epoch length. Draws are deterministic in (seed, epoch, index). Alignment is by cached time: the
    cache stores audio with sample 0 at the first frame's timestamp, so a track that started late is
    already aligned.

    Args:
        cache: the ingested cache.
        shard_ids: shards to draw from.
        split: the split every shard must belong to (``"train"``), or None.
        window_s: speech window length in seconds.
        interval_frames: frames per interval T.
        affinity_threshold: minimum interval affinity of a high-affinity interval.
        pairs_per_epoch: fixed epoch length, or None for ``pairs_per_interval`` × high intervals.
        pairs_per_interval: K pair groups per high-affinity interval and epoch.
        hard_negative_range: D, in intervals.
        seed: base of the per-item random draws.
        order_frames, order_stride: the order clip (0 frames: none).
        vad: ``energy`` or ``silero``.
        low_affinity_share: share of pairs from low-affinity intervals, in [0, 1) (0 when the
            scans have none).
    """

    def __init__(
        self,
        cache: Cache,
        shard_ids: list[str],
        split: str | None = "train",
        window_s: float = 0.6,
        interval_frames: int = 30,
        affinity_threshold: float = 0.5,
        pairs_per_epoch: int | None = 2048,
        pairs_per_interval: int = 2,
        hard_negative_range: int = 5,
        seed: int = 0,
        order_frames: int = 0,
        order_stride: int = 4,
        vad: str = "energy",
        low_affinity_share: float = 0.0,
    ) -> None:
        require_split(cache, shard_ids, split)
        if vad not in ("energy", "silero"):
            raise ValueError(f"vad must be 'energy' or 'silero', got {vad!r}")
        if not 0.0 <= low_affinity_share < 1.0:
            raise ValueError(f"low_affinity_share must be in [0, 1), got {low_affinity_share}")
        self.order_frames, self.order_stride, self.vad = order_frames, order_stride, vad
        if hard_negative_range < 2:
            raise ValueError("hard_negative_range D must be >= 2 (0 < δ < D)")
        self.cache = cache
        self.window_s = window_s
        self.interval_frames = interval_frames
        self.threshold = affinity_threshold
        self.hard_negative_range = hard_negative_range
        self.seed = seed
        self.epoch = 0
        self.rate = int(cache.settings["audio_rate"])
        self.window = int(round(window_s * self.rate))
        self.subjects = sorted({cache.shard(s).subject for s in shard_ids})
        self.speech: list[_ShardSpeech] = []
        self.low: list[_ShardSpeech] = []
        for shard_id in shard_ids:
            found = self._shard_speech(shard_id)
            if found is not None and found.frames.size:
                self.speech.append(found)
            if found is not None and found.low_frames.size:
                self.low.append(found)
        self.n_intervals = sum(-(-len(cache.shard(s).frames) // interval_frames) for s in shard_ids)
        self.n_high_affinity = sum(int((s.affinity >= affinity_threshold).sum()) for s in self.speech)
        self.n_low_affinity = sum(int((s.affinity < affinity_threshold).sum()) for s in self.low)
        if not self.speech:
            raise DataError(
                "no speech found in the training recordings: the video–speech method needs "
                "narration (check that ingest kept audio: ingest.audio: true, and lower "
                "pretrain.speech.affinity_threshold if the narration is sparse)"
            )
        # each high-affinity interval about equally often: shard weight = its number of them
        weights = np.array([(s.affinity >= affinity_threshold).sum() for s in self.speech], np.float64)
        self.shard_probs = weights / weights.sum()
        low = np.array([(s.affinity < affinity_threshold).sum() for s in self.low], np.float64)
        self.low_probs = low / low.sum() if low.size else low
        self.low_share = low_affinity_share if self.low else 0.0
        # the order clip: every training scan, speech or not, in proportion to its frames
        self.order_shards = list(shard_ids)
        n_frames = np.array([len(cache.shard(s).frames) for s in shard_ids], np.float64)
        self.order_probs = n_frames / n_frames.sum()
        self.length = pairs_per_epoch or pairs_per_interval * self.n_high_affinity

    def _shard_speech(self, shard_id: str) -> _ShardSpeech | None:
        shard = self.cache.shard(shard_id)
        if shard.audio is None:
            return None
        if self.vad == "silero":
            from usssl.speech.silero import silero_vad  # the model ships inside the silero-vad wheel

            vad = silero_vad(np.asarray(shard.audio), self.rate)  # (n_10ms,), the energy VAD's grid
        else:
            vad = energy_vad(np.asarray(shard.audio), self.rate)  # (n_10ms,)
        if not len(vad):
            return None
        n = len(shard.frames)
        vad_idx = np.minimum((np.arange(n) / shard.fps * 100).astype(int), len(vad) - 1)
        frame_speech = vad[vad_idx]  # (T,)
        interval = np.arange(n) // self.interval_frames
        affinity, _ = interval_affinity(frame_speech, float(self.interval_frames), self.threshold, frame_ms=1000.0)
        high = affinity[interval] >= self.threshold  # (T,)
        return _ShardSpeech(shard_id, frame_speech, affinity, np.flatnonzero(frame_speech & high),
                            np.flatnonzero(~high))

    def set_epoch(self, epoch: int) -> None:
        """New draws every epoch (called by the training engine)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _window(self, shard, frame: int) -> np.ndarray:
        """(window,) float32 centred on ``frame``'s time, clamped to its interval, zero-padded."""
        start_f = (frame // self.interval_frames) * self.interval_frames
        lo = int(start_f / shard.fps * self.rate)
        hi = int(min(start_f + self.interval_frames, len(shard.frames)) / shard.fps * self.rate)
        centre = int(frame / shard.fps * self.rate)
        begin = min(max(centre - self.window // 2, lo), max(hi - self.window, lo))
        out = np.zeros(self.window, dtype=np.float32)
        piece = np.asarray(shard.audio[begin : begin + self.window], dtype=np.float32)
        out[: piece.size] = piece
        return out

    def _frame_in(self, rng: np.random.Generator, sp: _ShardSpeech, interval: int, avoid: int) -> int:
        """A speech frame of ``interval`` other than ``avoid`` when there is one, else another frame
        of it (``avoid`` itself only in a one-frame interval)."""
        lo = interval * self.interval_frames
        hi = min(lo + self.interval_frames, sp.frame_speech.size)
        speech = lo + np.flatnonzero(sp.frame_speech[lo:hi])
        others = speech[speech != avoid]
        if not others.size:
            others = np.setdiff1d(np.arange(lo, hi), [avoid]) if hi - lo > 1 else np.arange(lo, hi)
        return int(rng.choice(others))

    def _order_clip(self, rng: np.random.Generator) -> torch.Tensor:
        """(1, order_frames, H, W) in time order from any training scan (L_ord's input)."""
        shard = self.cache.shard(self.order_shards[rng.choice(len(self.order_shards), p=self.order_probs)])
        n = len(shard.frames)
        span = (self.order_frames - 1) * self.order_stride
        start = int(rng.integers(max(n - span, 1)))
        idx = np.minimum(start + self.order_stride * np.arange(self.order_frames), n - 1)
        return torch.from_numpy(np.asarray(shard.frames[idx], np.float32) / 255.0)[None]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.low_share and rng.random() < self.low_share:  # a low-affinity interval: any frame
            sp = self.low[rng.choice(len(self.low), p=self.low_probs)]
            frame = int(rng.choice(sp.low_frames))
        else:  # a speech frame of a high-affinity interval
            sp = self.speech[rng.choice(len(self.speech), p=self.shard_probs)]
            frame = int(rng.choice(sp.frames))
        shard = self.cache.shard(sp.shard)
        interval = frame // self.interval_frames
        hard_pos = self._frame_in(rng, sp, interval, avoid=frame)
        n_int = sp.affinity.size
        deltas = [d for d in range(-self.hard_negative_range + 1, self.hard_negative_range) if d and 0 <= interval + d < n_int]
        if deltas:
            neg_interval = interval + int(rng.choice(deltas))
            hard_neg = self._frame_in(rng, sp, neg_interval, avoid=-1)
            neg_window = self._window(shard, hard_neg)
        else:  # a one-interval scan has no nearby interval: no hard negative (never T itself)
            neg_interval = hard_neg = -1
            neg_window = np.zeros(self.window, np.float32)
        video = torch.from_numpy(np.array(shard.frames[frame], dtype=np.float32) / 255.0)
        item = {"order_clip": self._order_clip(rng)} if self.order_frames else {}
        return item | {
            "video": video[None, None],  # (C=1, T=1, H, W)
            "audio": torch.from_numpy(self._window(shard, frame)),  # (n_samples,)
            "audio_hard_pos": torch.from_numpy(self._window(shard, hard_pos)),
            "audio_hard_neg": torch.from_numpy(neg_window),
            "hard_neg_valid": torch.tensor(float(bool(deltas))),  # 0: no nearby interval, the losses drop it
            "affinity": torch.tensor(float(sp.affinity[interval])),
            "interval": torch.tensor(interval),
            "neg_interval": torch.tensor(neg_interval),
            "frame": torch.tensor(frame),
            "hard_pos_frame": torch.tensor(hard_pos),
            "hard_neg_frame": torch.tensor(hard_neg),
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
        clip_frames: frames read per item, centred on the labelled frame k (k − T//2 … k + (T−1)//2,
            edges repeating the first / last frame; the encoder's ``EncoderConfig.clip_frames``); 1: the frame.
    """

    def __init__(
        self,
        cache: Cache,
        shard_ids: list[str],
        split: str | None = None,
        stride: int = 1,
        indices: np.ndarray | None = None,
        clip_frames: int = 1,
    ) -> None:
        require_split(cache, shard_ids, split)
        if clip_frames < 1:
            raise ValueError(f"clip_frames must be >= 1, got {clip_frames}")
        self.cache, self.clip_frames = cache, clip_frames
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
        frames = self.cache.shard(shard_id).frames
        first = frame - self.clip_frames // 2  # centred clip, edges repeated
        idx = np.clip(np.arange(first, first + self.clip_frames), 0, len(frames) - 1)
        clip = np.array(frames[idx], dtype=np.float32) / 255.0  # (T, H, W)
        return {
            "video": torch.from_numpy(clip)[None],  # (1, T, H, W)
            "label": torch.tensor(int(self.labels[index])),
            "index": torch.tensor(index),
        }

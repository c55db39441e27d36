"""Per-interval speech affinity from frame-level voice activity.

Jiao et al. (MICCAI 2020, Sec. 2.2) split a scan into clip intervals T and mark each one
high-affinity (the sonographer speaks) or low-affinity (noise) with an energy VAD; cross-modal
losses use high-affinity intervals only. The paper does not say how frame decisions become an
interval decision: our affinity score is the fraction of the interval's VAD frames flagged as
speech, and an interval is high-affinity when that fraction is at least ``threshold`` (0.5 by
default, ``speech.affinity_threshold`` in the config).

    >>> scores, high = interval_affinity(energy_vad(audio, 16000), interval_s=2.0)
    >>> scores.shape, high.dtype                  # ((n_intervals,), bool)
"""

from __future__ import annotations

import math

import numpy as np


def interval_affinity(
    flags_10ms: np.ndarray,
    interval_s: float,
    threshold: float = 0.5,
    frame_ms: float = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Affinity score in [0, 1] and a high/low flag per interval.

    A frame belongs to the interval that contains its centre, so interval lengths that are not a
    multiple of the frame (e.g. 60 frames at 29.97 fps) are handled exactly. The last interval may
    be partial; its score is the fraction over the frames it has.

    Args:
        flags_10ms: (n_frames,) bool or float in [0, 1] voice activity per frame (probabilities
            from :func:`usssl.speech.silero.silero_speech_prob` give a soft score).
        interval_s: interval length in seconds (the paper: 60 frames at 30 fps = 2 s).
        threshold: an interval is high-affinity when its score is at least this.
        frame_ms: frame length of ``flags_10ms``.

    Returns:
        scores: float64 (n_intervals,) in [0, 1], ``n_intervals = ceil(n_frames·frame / interval)``.
        high: bool (n_intervals,), ``scores >= threshold``.
    """
    if interval_s <= 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    flags = np.asarray(flags_10ms, dtype=np.float64).reshape(-1)  # (n_frames,)
    if flags.size == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    frame_s = frame_ms / 1000
    n_intervals = max(1, math.ceil(flags.size * frame_s / interval_s - 1e-9))
    centres = (np.arange(flags.size) + 0.5) * frame_s  # (n_frames,)
    interval = np.minimum((centres / interval_s).astype(int), n_intervals - 1)  # (n_frames,)
    counts = np.bincount(interval, minlength=n_intervals)
    sums = np.bincount(interval, weights=flags, minlength=n_intervals)
    scores = np.clip(sums / np.maximum(counts, 1), 0.0, 1.0)  # (n_intervals,)
    return scores, scores >= threshold

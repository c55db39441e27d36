"""silero-vad as an optional voice activity detector, on the same 10 ms frame grid as ``energy_vad``.

silero-vad (Silero Team, https://github.com/snakers4/silero-vad, MIT) is a small recurrent
network that scores 32 ms chunks (512 samples at 16 kHz) with a speech probability. Its TorchScript
model ships inside the ``silero-vad`` wheel, so loading it reads a packaged file and never touches
the network. We resample to 16 kHz, score every chunk, and map the chunk probabilities to 10 ms
frames (each frame takes the chunk that contains its centre). Frames are then flagged with
silero's own hysteresis: speech starts at ``p >= threshold`` and lasts while
``p >= threshold - 0.15`` (the rule of its ``get_speech_timestamps``; its minimum-duration and
padding rules are left out so the output stays frame-level).

    >>> flags = silero_vad(audio, 16000)          # (n_frames,) bool, one per 10 ms
    >>> probs = silero_speech_prob(batch, 48000)  # (B, n_frames) float in [0, 1]
"""

from __future__ import annotations

import functools
import logging
import warnings

import numpy as np
import torch
import torchaudio.functional as AF

from usssl.errors import ConfigError

log = logging.getLogger(__name__)

SILERO_RATE = 16000
"""Rate the model is run at (it also supports 8 kHz; 16 kHz is its better-tested setting)."""
CHUNK = 512
"""Samples per scored chunk at 16 kHz (32 ms), fixed by the model."""


@functools.lru_cache(maxsize=1)
def _load_model() -> torch.nn.Module:
    """The packaged TorchScript model (CPU), loaded once. No download happens."""
    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad
    except ImportError as err:
        raise ConfigError(
            "vad='silero' needs the silero-vad package (its model ships in the wheel and runs "
            "offline): `pip install silero-vad`; or use the default vad='energy'."
        ) from err
    finally:
        torch.set_num_threads(threads)  # silero_vad.model calls torch.set_num_threads(1) on import
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)  # importlib.resources.path inside
        model = load_silero_vad(onnx=False)
    log.debug("loaded silero-vad TorchScript model from its wheel")
    return model


def _as_batch(audio: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, bool]:
    wave = torch.as_tensor(np.asarray(audio) if not torch.is_tensor(audio) else audio)
    wave = wave.detach().to("cpu", torch.float32)
    if wave.ndim not in (1, 2):
        raise ValueError(f"audio must be (N,) or (B, N), got shape {tuple(wave.shape)}")
    return (wave[None], True) if wave.ndim == 1 else (wave, False)


@torch.no_grad()
def silero_speech_prob(
    audio: np.ndarray | torch.Tensor, rate: int, frame_ms: float = 10.0
) -> np.ndarray:
    """silero-vad speech probability per ``frame_ms`` frame.

    Args:
        audio: (N,) or (B, N) float mono samples in about [-1, 1], any rate.
        rate: sample rate of ``audio`` in Hz.
        frame_ms: output frame length (10 ms matches ``energy_vad``).

    Returns:
        float32 (n_frames,) or (B, n_frames), ``n_frames = N // (rate * frame_ms / 1000)``.
    """
    wave, single = _as_batch(audio)  # (B, N)
    frame = max(1, int(round(rate * frame_ms / 1000)))
    n_frames = wave.shape[1] // frame
    if n_frames == 0:
        out = np.zeros((wave.shape[0], 0), np.float32)
        return out[0] if single else out
    if rate != SILERO_RATE:
        wave = AF.resample(wave, rate, SILERO_RATE)  # (B, N16)
    model = _load_model()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # its ops are tiny: one thread is 5-30x faster than several
    try:
        probs = model.audio_forward(wave, SILERO_RATE)  # (B, n_chunks), state reset inside
    finally:
        torch.set_num_threads(threads)
    probs = probs.numpy().astype(np.float32)
    centres = (np.arange(n_frames) + 0.5) * frame_ms / 1000  # (n_frames,) seconds
    chunk_idx = np.minimum((centres * SILERO_RATE / CHUNK).astype(int), probs.shape[1] - 1)
    out = probs[:, chunk_idx]  # (B, n_frames)
    return out[0] if single else out


def hysteresis(probs: np.ndarray, threshold: float, neg_threshold: float) -> np.ndarray:
    """Flags that switch on at ``p >= threshold`` and off at ``p < neg_threshold``.

    Args:
        probs: (..., n) probabilities along the last axis.

    Returns:
        bool array of the same shape.
    """
    flat = probs.reshape(-1, probs.shape[-1])
    out = np.zeros(flat.shape, dtype=bool)
    for row, p in enumerate(flat):
        on = False
        for i, value in enumerate(p):
            on = value >= threshold or (on and value >= neg_threshold)
            out[row, i] = on
    return out.reshape(probs.shape)


def silero_vad(
    audio: np.ndarray | torch.Tensor,
    rate: int,
    threshold: float = 0.5,
    neg_threshold: float | None = None,
    frame_ms: float = 10.0,
) -> np.ndarray:
    """Speech flag per 10 ms frame from silero-vad.

    Args:
        audio: (N,) or (B, N) float mono samples, any rate (resampled to 16 kHz).
        rate: sample rate in Hz.
        threshold: speech probability that starts speech (silero's default 0.5).
        neg_threshold: probability below which speech ends; default ``threshold - 0.15`` as in
            silero's ``get_speech_timestamps``.
        frame_ms: output frame length.

    Returns:
        bool (n_frames,) or (B, n_frames), on the same grid as :func:`energy_vad`.
    """
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"silero threshold must be in (0, 1), got {threshold}")
    neg = max(threshold - 0.15, 0.01) if neg_threshold is None else neg_threshold
    return hysteresis(silero_speech_prob(audio, rate, frame_ms), threshold, neg)

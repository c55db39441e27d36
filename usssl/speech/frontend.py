"""Spectrogram front-ends: speech windows → 2-D log-spectrogram images.

The video–speech paper (Jiao et al., MICCAI 2020, Sec. 2.1) turns 0.6 s of speech at 24 kHz into a
256×256 log-spectrogram (256 frequency bands, 10 ms window, 5 ms hop). It does not say how ~121
STFT columns become 256: we resize with bilinear interpolation to ``spec_size`` (configurable).
Each window is normalised to zero mean and unit variance (our choice; the paper is silent).

    >>> front = LogSpectrogram(rate=16000, n_fft=256, win_ms=10, hop_ms=5, spec_size=(64, 64))
    >>> spec = front(audio)          # audio: (B, N) -> spec: (B, 1, 64, 64)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LogSpectrogram(nn.Module):
    """Log-magnitude STFT of a batch of mono windows, resized and normalised per window.

    Args:
        rate: sample rate of the input in Hz.
        n_fft: FFT size; ``n_fft // 2 + 1`` frequency bins before resizing.
        win_ms: analysis window length in ms (zero-padded to ``n_fft``).
        hop_ms: hop between columns in ms.
        spec_size: output (F, T') after bilinear resizing; None keeps the STFT's size.
    """

    def __init__(
        self,
        rate: int,
        n_fft: int = 256,
        win_ms: float = 10.0,
        hop_ms: float = 5.0,
        spec_size: tuple[int, int] | None = (256, 256),
    ) -> None:
        super().__init__()
        self.rate = rate
        self.n_fft = n_fft
        self.win_length = min(n_fft, max(8, int(round(rate * win_ms / 1000))))
        self.hop_length = max(1, int(round(rate * hop_ms / 1000)))
        self.spec_size = tuple(spec_size) if spec_size is not None else None
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio: (B, N) float → (B, 1, F, T') standardised log-magnitude."""
        stft = torch.stft(
            audio.float(),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=True,
            return_complex=True,
        )  # (B, n_fft//2+1, frames)
        spec = torch.log1p(stft.abs() * 100.0).unsqueeze(1)  # (B, 1, F, T)
        if self.spec_size is not None:
            spec = F.interpolate(spec, size=self.spec_size, mode="bilinear", align_corners=False)
        mean = spec.mean(dim=(2, 3), keepdim=True)
        std = spec.std(dim=(2, 3), keepdim=True)
        return (spec - mean) / (std + 1e-5)

"""Spectrogram front-ends: speech windows → 2-D log-spectrogram images, batched on CPU or GPU.

The video–speech paper (Jiao et al., MICCAI 2020, Sec. 2.1) turns 0.6 s of speech at 24 kHz into a
256×256 log-spectrogram (256 frequency bands, 10 ms window, 5 ms hop). It does not say how ~121
STFT columns become 256: we resize with bilinear interpolation to ``spec_size`` (configurable).
Nor does it say how 256 bands arise: :meth:`LogSpectrogram.paper` reads it as ``n_fft = 510``
(256 one-sided bins of 47 Hz, the 240-sample window zero-padded). Each window is normalised to zero
mean and unit variance (our choice; the paper is silent). :class:`LogMel` is our extension.

    >>> front = LogSpectrogram(rate=16000, n_fft=256, win_ms=10, hop_ms=5, spec_size=(64, 64))
    >>> spec = front(audio)          # audio: (B, N) -> spec: (B, 1, 64, 64)
    >>> LogSpectrogram.paper(rate=16000)(audio_06s).shape   # (B, 1, 256, 256), via 24 kHz
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn
from torchaudio.transforms import Resample

PAPER_RATE = 24000
"""Rate the paper resamples speech to before its STFT."""


def _standardise(spec: torch.Tensor, spec_size: tuple[int, int] | None) -> torch.Tensor:
    """(B, 1, F, T) → optionally resized (B, 1, *spec_size), zero mean / unit variance per window."""
    if spec_size is not None:
        spec = F.interpolate(spec, size=spec_size, mode="bilinear", align_corners=False)
    mean = spec.mean(dim=(2, 3), keepdim=True)
    std = spec.std(dim=(2, 3), keepdim=True)
    return (spec - mean) / (std + 1e-5)


def _resampler(rate: int, resample_to: int | None) -> nn.Module:
    """A band-limited sinc resampler (torchaudio) from ``rate`` to ``resample_to``, or identity."""
    if resample_to is None or resample_to == rate:
        return nn.Identity()
    if resample_to <= 0:
        raise ValueError(f"resample_to must be a positive rate in Hz, got {resample_to}")
    return Resample(rate, resample_to)


def _stft(audio: torch.Tensor, front: nn.Module) -> torch.Tensor:
    """Centred complex STFT of (B, N) audio with a front-end's n_fft, hop, window → (B, F, T)."""
    return torch.stft(audio, n_fft=front.n_fft, hop_length=front.hop_length, win_length=front.win_length,
                      window=front.window, center=True, return_complex=True)


class LogSpectrogram(nn.Module):
    """Log-magnitude STFT of a batch of mono windows, resized and normalised per window.

    Args:
        rate: sample rate of the input in Hz.
        n_fft: FFT size; ``n_fft // 2 + 1`` frequency bins before resizing.
        win_ms: analysis window length in ms (Hann, zero-padded to ``n_fft``).
        hop_ms: hop between columns in ms.
        spec_size: output (F, T') after bilinear resizing; None keeps the STFT's size.
        resample_to: resample the input to this rate first (the paper: 24000); None keeps ``rate``.
            Window, hop and bins are then in terms of the new rate.
    """

    def __init__(
        self,
        rate: int,
        n_fft: int = 256,
        win_ms: float = 10.0,
        hop_ms: float = 5.0,
        spec_size: tuple[int, int] | None = (256, 256),
        resample_to: int | None = None,
    ) -> None:
        super().__init__()
        self.input_rate = rate
        self.rate = resample_to or rate  # analysis rate
        self.n_fft = n_fft
        self.win_length = min(n_fft, max(8, int(round(self.rate * win_ms / 1000))))
        self.hop_length = max(1, int(round(self.rate * hop_ms / 1000)))
        self.spec_size = tuple(spec_size) if spec_size is not None else None
        self.resample = _resampler(rate, resample_to)
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)

    @classmethod
    def paper(cls, rate: int, spec_size: tuple[int, int] | None = (256, 256)) -> LogSpectrogram:
        """The paper's settings: 24 kHz, 256 bands (``n_fft`` 510), 10 ms window, 5 ms hop, 256×256."""
        return cls(rate, n_fft=510, win_ms=10.0, hop_ms=5.0, spec_size=spec_size,
                   resample_to=PAPER_RATE)

    @property
    def bin_hz(self) -> float:
        """Width of one STFT frequency bin in Hz (before resizing)."""
        return self.rate / self.n_fft

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio: (B, N) float at ``rate`` → (B, 1, F, T') standardised log-magnitude."""
        audio = self.resample(audio.float())  # (B, N') at the analysis rate
        stft = _stft(audio, self)  # (B, n_fft//2+1, frames) complex
        spec = torch.log1p(stft.abs() * 100.0).unsqueeze(1)  # (B, 1, F, T)
        return _standardise(spec, self.spec_size)


class LogMel(nn.Module):
    """Log-power mel spectrogram of a batch of mono windows, resized and normalised per window.

    Not in the paper (which uses a linear-frequency log-spectrogram); offered because most speech
    encoders expect mel features. Filters are HTK-scale triangles (torchaudio), power in dB with a
    floor of -100 dB.

    Args:
        rate: sample rate of the input in Hz.
        n_fft: FFT size.
        win_ms: analysis window length in ms (Hann, zero-padded to ``n_fft``).
        hop_ms: hop between columns in ms.
        n_mels: number of mel bands (rows before resizing).
        spec_size: output (F, T') after bilinear resizing; None keeps (n_mels, frames).
        resample_to: resample the input to this rate first; None keeps ``rate``.
        f_min: lowest filter edge in Hz.
        f_max: highest filter edge in Hz; None is Nyquist of the analysis rate.

    Example:
        >>> front = LogMel(16000, n_mels=64, spec_size=None)
        >>> front(torch.randn(2, 9600)).shape        # (2, 1, 64, 61)
    """

    def __init__(
        self,
        rate: int,
        n_fft: int = 512,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        n_mels: int = 128,
        spec_size: tuple[int, int] | None = None,
        resample_to: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
    ) -> None:
        super().__init__()
        self.input_rate = rate
        self.rate = resample_to or rate
        f_max = self.rate / 2 if f_max is None else f_max
        if not 0 <= f_min < f_max <= self.rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= {self.rate / 2} Hz, got {f_min}, {f_max}")
        self.n_fft = n_fft
        self.n_mels = n_mels
        self.f_min, self.f_max = f_min, f_max
        self.win_length = min(n_fft, max(8, int(round(self.rate * win_ms / 1000))))
        self.hop_length = max(1, int(round(self.rate * hop_ms / 1000)))
        self.spec_size = tuple(spec_size) if spec_size is not None else None
        self.resample = _resampler(rate, resample_to)
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        fbanks = AF.melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, self.rate)  # (F, M)
        self.register_buffer("fbanks", fbanks, persistent=False)

    def center_freqs(self) -> torch.Tensor:
        """(n_mels,) centre frequency of each mel filter in Hz (HTK mel scale)."""
        lo, hi = (2595.0 * torch.log10(torch.tensor(1.0 + f / 700.0)) for f in (self.f_min, self.f_max))
        mels = torch.linspace(float(lo), float(hi), self.n_mels + 2)[1:-1]
        return 700.0 * (10 ** (mels / 2595.0) - 1.0)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio: (B, N) float at ``rate`` → (B, 1, n_mels or F, T') standardised log-mel."""
        audio = self.resample(audio.float())  # (B, N')
        stft = _stft(audio, self)  # (B, n_fft//2+1, frames) complex
        power = stft.abs() ** 2
        mel = torch.einsum("bft,fm->bmt", power, self.fbanks)  # (B, n_mels, frames)
        spec = (10.0 * torch.log10(mel.clamp_min(1e-10))).unsqueeze(1)  # (B, 1, n_mels, T)
        return _standardise(spec, self.spec_size)

"""Energy VAD on a tone burst in noise, and the spectrogram front-end."""

import numpy as np
import pytest
import torch

from usssl.speech.frontend import LogSpectrogram
from usssl.speech.vad import energy_vad, frame_energy_db, speech_fraction


def burst(rate=16000, seconds=4.0, start=1.0, stop=2.0, noise=0.001):
    rng = np.random.default_rng(0)
    audio = rng.normal(0, noise, int(rate * seconds)).astype(np.float32)
    t = np.arange(int(rate * (stop - start))) / rate
    audio[int(start * rate):int(stop * rate)] += 0.3 * np.sin(2 * np.pi * 220 * t)
    return audio


def test_frame_energy_of_a_constant():
    assert frame_energy_db(np.full(1600, 0.1), 16000)[0] == pytest.approx(-20.0, abs=1e-6)


def test_vad_finds_the_burst_only():
    flags = energy_vad(burst(), 16000, hangover=0)
    assert flags.shape == (400,)
    assert flags[100:200].all()
    assert not flags[:100].any() and not flags[205:].any()
    assert speech_fraction(burst(), 16000) == pytest.approx(0.25 + 8 / 400, abs=0.01)  # with hangover


def test_vad_on_noise_only_finds_nothing():
    assert speech_fraction(np.random.default_rng(1).normal(0, 0.05, 32000), 16000) == 0.0
    assert speech_fraction(None, None) == 0.0


def test_spectrogram_of_pure_tone_peaks_in_its_band():
    rate, freq = 16000, 2000.0
    t = torch.arange(9600) / rate
    tone = torch.sin(2 * torch.pi * freq * t)[None]
    front = LogSpectrogram(rate, n_fft=256, win_ms=10, hop_ms=5, spec_size=None)
    spec = front(tone)  # (1, 1, 129, 121)
    assert spec.shape == (1, 1, 129, 9600 // 80 + 1)
    peak_bin = spec[0, 0].mean(1).argmax().item()
    assert peak_bin == round(freq / (rate / 256))  # 2000 Hz / 62.5 Hz = bin 32
    resized = LogSpectrogram(rate, spec_size=(64, 64))(tone)
    assert resized.shape == (1, 1, 64, 64)
    assert resized.mean().item() == pytest.approx(0.0, abs=1e-5)

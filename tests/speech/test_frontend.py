"""Spectrogram front-ends: a pure tone peaks in its band, shapes follow the paper's spec."""

import pytest
import torch

from usssl.speech.frontend import LogMel, LogSpectrogram


def tone(freq: float, rate: int, seconds: float = 0.6, batch: int = 1) -> torch.Tensor:
    t = torch.arange(int(rate * seconds)) / rate
    return torch.sin(2 * torch.pi * freq * t).repeat(batch, 1)  # (B, N)


def test_spectrogram_of_pure_tone_peaks_in_its_band():
    rate, freq = 16000, 2000.0
    front = LogSpectrogram(rate, n_fft=256, win_ms=10, hop_ms=5, spec_size=None)
    spec = front(tone(freq, rate))  # (1, 1, 129, 121)
    assert spec.shape == (1, 1, 129, 9600 // 80 + 1)
    peak_bin = spec[0, 0].mean(1).argmax().item()
    assert peak_bin == round(freq / (rate / 256))  # 2000 Hz / 62.5 Hz = bin 32
    resized = LogSpectrogram(rate, spec_size=(64, 64))(tone(freq, rate))
    assert resized.shape == (1, 1, 64, 64)
    assert resized.mean().item() == pytest.approx(0.0, abs=1e-5)


def test_positional_construction_is_unchanged():
    front = LogSpectrogram(16000, 256, 10.0, 5.0, (64, 64))
    assert (front.n_fft, front.win_length, front.hop_length, front.spec_size) == (256, 160, 80, (64, 64))
    assert front.rate == 16000 and isinstance(front.resample, torch.nn.Identity)


@pytest.mark.parametrize("rate", [16000, 22050, 48000])
def test_paper_settings_give_256x256_at_24khz(rate):
    front = LogSpectrogram.paper(rate)
    assert (front.rate, front.n_fft, front.win_length, front.hop_length) == (24000, 510, 240, 120)
    raw = LogSpectrogram.paper(rate, spec_size=None)
    audio = tone(1000.0, rate, seconds=0.6, batch=3)
    assert raw(audio).shape == (3, 1, 256, 14400 // 120 + 1)  # 256 bands x 121 columns
    out = front(audio)
    assert out.shape == (3, 1, 256, 256)
    per_window = out.flatten(1)
    assert torch.allclose(per_window.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(per_window.std(1), torch.ones(3), atol=1e-3)


def test_resampled_tone_peaks_in_the_24khz_bin():
    rate, freq = 16000, 3000.0
    front = LogSpectrogram.paper(rate, spec_size=None)
    peak = front(tone(freq, rate))[0, 0].mean(1).argmax().item()
    assert peak == round(freq / front.bin_hz)  # 3000 / (24000 / 510) = bin 64


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0, 6000.0])
def test_log_mel_of_pure_tone_peaks_in_its_band(freq):
    rate = 16000
    front = LogMel(rate, n_fft=512, win_ms=25, hop_ms=10, n_mels=64, spec_size=None)
    spec = front(tone(freq, rate))  # (1, 1, 64, 61)
    assert spec.shape == (1, 1, 64, 9600 // 160 + 1)
    peak = spec[0, 0].mean(1).argmax().item()
    expected = (front.center_freqs() - freq).abs().argmin().item()
    assert abs(peak - expected) <= 1


def test_log_mel_resampling_and_resizing():
    front = LogMel(48000, n_mels=80, spec_size=(128, 64), resample_to=16000)
    assert front.rate == 16000 and front.fbanks.shape == (257, 80)
    out = front(tone(440.0, 48000, batch=2))
    assert out.shape == (2, 1, 128, 64)
    assert out.flatten(1).mean(1).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="f_max"):
        LogMel(16000, f_max=9000.0)


def test_center_freqs_are_increasing_within_range():
    centres = LogMel(16000, n_mels=40, f_min=50.0, f_max=7600.0).center_freqs()
    assert centres.shape == (40,)
    assert (centres.diff() > 0).all() and 50.0 < centres[0] and centres[-1] < 7600.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cls", [LogSpectrogram, LogMel])
def test_front_ends_match_on_gpu(cls):
    front = cls(16000, resample_to=24000, spec_size=(64, 64))
    audio = tone(1234.0, 16000, batch=4) + 0.01 * torch.randn(4, 9600)
    cpu = front(audio)
    gpu = front.cuda()(audio.cuda())
    assert gpu.device.type == "cuda"
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-3)

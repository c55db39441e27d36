"""Energy VAD on a tone burst in noise, and per-interval affinity.

The spectrogram test moved to test_frontend.py.
"""

import numpy as np
import pytest

from usssl.speech.affinity import interval_affinity
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


def test_vad_still_finds_speech_12_db_above_noise():
    # The gate moved from 12 to 6 dB (see vad.py): a burst 9 dB above the noise is detected now.
    rng = np.random.default_rng(2)
    audio = rng.normal(0, 0.1, 48000).astype(np.float32)
    t = np.arange(16000) / 16000
    audio[16000:32000] += 0.4 * np.sin(2 * np.pi * 300 * t)  # 0.08 W over 0.01 W: +9.5 dB
    flags = energy_vad(audio, 16000, hangover=0)
    assert flags[105:195].mean() > 0.95 and flags[:95].mean() < 0.05


def test_interval_affinity_by_hand():
    flags = np.zeros(500, dtype=bool)  # 5 s of 10 ms frames
    flags[0:150] = True  # interval 0 (0-2 s): 150/200 speech
    flags[250:300] = True  # interval 1 (2-4 s): 50/200
    flags[450:500] = True  # interval 2 (4-5 s, partial): 50/100
    scores, high = interval_affinity(flags, interval_s=2.0)
    assert scores == pytest.approx([0.75, 0.25, 0.5], abs=1e-12)
    assert high.tolist() == [True, False, True]
    _, strict = interval_affinity(flags, interval_s=2.0, threshold=0.6)
    assert strict.tolist() == [True, False, False]


def test_interval_affinity_assigns_frames_by_their_centre():
    # 60 frames at 29.97 fps = 2.002 s: frames 0-199 (centres up to 1.995 s) are interval 0,
    # 200-399 interval 1, frame 400 (centre 4.005 s) a partial interval 2.
    flags = np.zeros(401, dtype=bool)
    flags[[199, 200, 400]] = True
    scores, _ = interval_affinity(flags, interval_s=60 / 29.97)
    assert scores == pytest.approx([1 / 200, 1 / 200, 1.0])


def test_interval_affinity_of_probabilities_and_empty_input():
    scores, high = interval_affinity(np.array([0.2, 0.4, 0.9, 1.0]), interval_s=0.02)
    assert scores == pytest.approx([0.3, 0.95]) and high.tolist() == [False, True]
    scores, high = interval_affinity(np.zeros(0, dtype=bool), interval_s=2.0)
    assert scores.shape == (0,) and high.shape == (0,)
    with pytest.raises(ValueError, match="interval_s"):
        interval_affinity(np.ones(10, dtype=bool), interval_s=0.0)


def test_affinity_of_energy_vad_on_a_burst():
    scores, high = interval_affinity(energy_vad(burst(), 16000, hangover=0), interval_s=1.0)
    assert scores == pytest.approx([0.0, 1.0, 0.0, 0.0]) and high.tolist() == [False, True, False, False]

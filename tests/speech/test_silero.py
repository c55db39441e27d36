"""silero-vad wrapper: frame grid, resampling, hysteresis, offline loading, missing package."""

import importlib.util
import socket
import sys

import numpy as np
import pytest

from usssl.errors import ConfigError
from usssl.speech import silero
from usssl.speech.silero import hysteresis, silero_speech_prob, silero_vad

needs_silero = pytest.mark.skipif(
    importlib.util.find_spec("silero_vad") is None,
    reason="silero-vad is not installed (pip install silero-vad)",
)


def test_hysteresis_by_hand():
    probs = np.array([0.1, 0.6, 0.4, 0.3, 0.55, 0.2, 0.5])
    assert hysteresis(probs, 0.5, 0.35).tolist() == [False, True, True, False, True, False, True]
    batch = hysteresis(np.stack([probs, 1 - probs]), 0.5, 0.35)
    assert batch.shape == (2, 7) and batch[0].tolist() == hysteresis(probs, 0.5, 0.35).tolist()


def test_missing_package_is_a_clear_config_error(monkeypatch):
    silero._load_model.cache_clear()
    monkeypatch.setitem(sys.modules, "silero_vad", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match="pip install silero-vad"):
        silero_vad(np.zeros(16000, np.float32), 16000)
    silero._load_model.cache_clear()


@needs_silero
def test_model_loads_from_the_wheel_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("silero-vad tried to open a network socket")

    silero._load_model.cache_clear()
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    probs = silero_speech_prob(np.zeros(8000, np.float32), 16000)
    assert probs.shape == (50,) and probs.max() < 0.5


@needs_silero
@pytest.mark.parametrize("rate", [8000, 16000, 22050, 48000])
def test_frame_grid_matches_energy_vad_at_any_rate(rate):
    audio = np.random.default_rng(0).normal(0, 0.01, int(1.5 * rate)).astype(np.float32)
    flags = silero_vad(audio, rate)
    assert flags.shape == (150,) and flags.dtype == bool
    assert not flags.any()  # quiet white noise is not speech


@needs_silero
def test_batch_rows_equal_single_calls():
    rng = np.random.default_rng(1)
    batch = rng.normal(0, 0.05, (3, 16000)).astype(np.float32)
    together = silero_speech_prob(batch, 16000)
    assert together.shape == (3, 100)
    assert np.allclose(together[1], silero_speech_prob(batch[1], 16000), atol=1e-5)


@needs_silero
def test_threshold_is_validated():
    with pytest.raises(ConfigError, match="threshold"):
        silero_vad(np.zeros(1600, np.float32), 16000, threshold=1.5)

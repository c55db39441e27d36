"""Voice activity on real speech placed in white and speech-shaped noise at 20, 10 and 0 dB SNR.

Runs the harness of ``benchmarks/vad_snr.py`` (mixing, ground truth within 30 dB of the clean
utterance's loudest 10 ms frame, pooled frame-level precision / recall) on three of the real files:
a Common Voice sentence, an LJ Speech sentence and an AudioMNIST digit. The full table over all
files is in ``benchmarks/results/vad_snr.md``.

Thresholds are the values measured on these files (seeds 0-2 agree within 0.04) less a margin of
about 0.05, except silero at 10 dB white noise, which the issue fixes at recall >= 0.9. Energy VAD
in 0 dB speech-shaped noise is a known weak cell: the noise's own frame energies spread as widely
as speech, and the detector flags much of it (precision about 0.45); the test only guards against
it getting worse.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

SPEECH_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "speech_wav"
FILES = ["commonvoice/common_voice_en_17299458.wav", "ljspeech/LJ050-0075.wav", "audiomnist/0_01_0.wav"]
HAVE_SILERO = importlib.util.find_spec("silero_vad") is not None

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(
        not all((SPEECH_DIR / f).is_file() for f in FILES),
        reason=f"real speech files not found under {SPEECH_DIR} (../shared/realdata is only in CI)",
    ),
]

# (detector, noise, snr_db): (min precision, min recall)
ENERGY = {
    ("white", 20.0): (0.90, 0.88), ("white", 10.0): (0.92, 0.86), ("white", 0.0): (0.93, 0.70),
    ("speech-shaped", 20.0): (0.89, 0.90), ("speech-shaped", 10.0): (0.89, 0.87),
    ("speech-shaped", 0.0): (0.35, 0.90),
}
SILERO = {
    ("white", 20.0): (0.85, 0.90), ("white", 10.0): (0.83, 0.90), ("white", 0.0): (0.80, 0.88),
    ("speech-shaped", 20.0): (0.85, 0.90), ("speech-shaped", 10.0): (0.84, 0.90),
    ("speech-shaped", 0.0): (0.80, 0.82),
}


def load_harness():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "vad_snr.py"
    spec = importlib.util.spec_from_file_location("vad_snr", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("vad_snr", module)  # dataclasses look their module up by name
    spec.loader.exec_module(sys.modules["vad_snr"])
    return sys.modules["vad_snr"]


@pytest.fixture(scope="module")
def scores():
    harness = load_harness()
    detectors = harness.default_detectors()
    if not HAVE_SILERO:
        detectors.pop("silero")
    return harness.evaluate([SPEECH_DIR / f for f in FILES], detectors,
                            spectrum_files=harness.speech_files(SPEECH_DIR))


def check(scores, detector, limits):
    failures = []
    for (noise, snr), (min_p, min_r) in limits.items():
        s = scores[(detector, noise, snr)]
        if s.precision < min_p or s.recall < min_r:
            failures.append(f"{noise} {snr:g} dB: P {s.precision:.3f} (>= {min_p}), "
                            f"R {s.recall:.3f} (>= {min_r})")
    assert not failures, f"{detector} VAD below its thresholds: " + "; ".join(failures)


def test_energy_vad_precision_recall(scores):
    assert scores[("energy", "white", 20.0)].tp + scores[("energy", "white", 20.0)].fn > 400
    check(scores, "energy", ENERGY)


@pytest.mark.skipif(not HAVE_SILERO, reason="silero-vad is not installed (pip install silero-vad)")
def test_silero_vad_precision_recall(scores):
    assert scores[("silero", "white", 10.0)].recall >= 0.9  # the bar
    check(scores, "silero", SILERO)

"""Frame-level precision and recall of the voice activity detectors on real speech in noise.

Every real speech file of ``../shared/realdata/speech_wav`` (LJ Speech, Common Voice, AudioMNIST)
is resampled to 16 kHz, scaled to an active speech level of -26 dBFS, and placed 1 s into a noise
recording that extends 1 s past its end. Two noises: white, and speech-shaped (white noise filtered
by the average magnitude spectrum of the speech files' speech frames). SNR is the active speech
power (mean power of the ground-truth speech frames, in the spirit of ITU-T P.56) over the noise
power, at 20, 10 and 0 dB.

Ground truth: a 10 ms frame of the mixture is speech when the clean utterance's energy in that frame
is within 30 dB of the utterance's loudest 10 ms frame (so pauses inside an utterance and the file's
own leading/trailing silence are not speech). Precision and recall are pooled over files (every
frame of every mixture counts once).

    python benchmarks/vad_snr.py            # writes benchmarks/results/vad_snr.md

``tests/speech/test_vad_realdata.py`` runs this same harness on three files.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
from scipy.io import wavfile

log = logging.getLogger("vad_snr")

RATE = 16000
FRAME = RATE // 100  # 10 ms
LEAD_S, TAIL_S = 1.0, 1.0
SPEECH_DBFS = -26.0
TRUTH_RANGE_DB = 30.0
SNRS_DB = (20.0, 10.0, 0.0)
NOISES = ("white", "speech-shaped")
SPEECH_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "speech_wav"

Detector = Callable[[np.ndarray, int], np.ndarray]
"""(B, N) float32 audio, rate -> (B, n_frames) bool speech flags per 10 ms."""


def load_speech(path: Path) -> np.ndarray:
    """float32 (N,) mono 16 kHz samples of a wav file, scaled to -26 dBFS active speech level."""
    rate, pcm = wavfile.read(path)
    wave = pcm.astype(np.float32)
    if pcm.dtype.kind == "i":
        wave /= float(np.iinfo(pcm.dtype).max + 1)
    if wave.ndim == 2:
        wave = wave.mean(axis=1)
    if rate != RATE:
        wave = AF.resample(torch.from_numpy(wave), rate, RATE).numpy()
    n = len(wave) // FRAME * FRAME
    wave = wave[:n]
    active = np.mean(wave.reshape(-1, FRAME)[truth_frames(wave)] ** 2)
    return (wave * 10 ** (SPEECH_DBFS / 20) / np.sqrt(active)).astype(np.float32)


def truth_frames(clean: np.ndarray, range_db: float = TRUTH_RANGE_DB) -> np.ndarray:
    """bool (n_frames,): 10 ms frames of ``clean`` within ``range_db`` of its loudest frame."""
    energy = 10 * np.log10(np.mean(clean[: len(clean) // FRAME * FRAME].reshape(-1, FRAME) ** 2, 1) + 1e-20)
    return energy >= energy.max() - range_db


def average_spectrum(speeches: Sequence[np.ndarray], n_fft: int = 512) -> np.ndarray:
    """(n_fft//2+1,) mean magnitude spectrum over the speech frames of each file, files weighted equally."""
    window = np.hanning(n_fft)
    spectra = []
    for wave in speeches:
        starts = np.arange(0, len(wave) - n_fft, n_fft // 2)
        frames = np.stack([wave[s : s + n_fft] for s in starts])  # (M, n_fft)
        speech = truth_frames(wave)[np.minimum((starts + n_fft // 2) // FRAME, len(wave) // FRAME - 1)]
        mag = np.abs(np.fft.rfft(frames[speech] * window, axis=1))  # (M', n_fft//2+1)
        spectra.append(mag.mean(0) / np.sqrt(np.mean(mag.mean(0) ** 2)))
    return np.mean(spectra, axis=0)


def make_noise(kind: str, n: int, rng: np.random.Generator, spectrum: np.ndarray) -> np.ndarray:
    """float64 (n,) unit-power white or speech-shaped noise."""
    white = rng.standard_normal(n)
    if kind == "white":
        return white / white.std()
    if kind != "speech-shaped":
        raise ValueError(f"unknown noise {kind!r}")
    grid = np.linspace(0, 1, len(spectrum))
    gain = np.interp(np.linspace(0, 1, n // 2 + 1), grid, spectrum)  # (n//2+1,)
    shaped = np.fft.irfft(np.fft.rfft(white) * gain, n=n)
    return shaped / shaped.std()


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Mixture (float32) with ``clean`` at ``LEAD_S`` in ``noise``, and its truth flags (n_frames,)."""
    truth = truth_frames(clean)
    active = np.mean(clean.reshape(-1, FRAME)[truth] ** 2)
    audio = noise * np.sqrt(active / 10 ** (snr_db / 10))
    lead = int(LEAD_S * RATE)
    audio[lead : lead + len(clean)] += clean
    flags = np.zeros(len(audio) // FRAME, dtype=bool)
    flags[lead // FRAME : lead // FRAME + len(truth)] = truth
    return audio.astype(np.float32), flags


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, pred: np.ndarray, truth: np.ndarray) -> None:
        n = min(len(pred), len(truth))
        pred, truth = pred[:n], truth[:n]
        self.tp += int(np.sum(pred & truth))
        self.fp += int(np.sum(pred & ~truth))
        self.fn += int(np.sum(~pred & truth))

    @property
    def precision(self) -> float:
        return self.tp / max(self.tp + self.fp, 1)

    @property
    def recall(self) -> float:
        return self.tp / max(self.tp + self.fn, 1)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / max(p + r, 1e-12)


def evaluate(
    files: Sequence[Path],
    detectors: dict[str, Detector],
    noises: Sequence[str] = NOISES,
    snrs_db: Sequence[float] = SNRS_DB,
    spectrum_files: Sequence[Path] | None = None,
    seed: int = 0,
) -> dict[tuple[str, str, float], Score]:
    """Pooled frame-level scores keyed by (detector, noise, snr_db)."""
    speeches = [load_speech(f) for f in files]
    shape_from = speeches if spectrum_files is None else [load_speech(f) for f in spectrum_files]
    spectrum = average_spectrum(shape_from)
    scores: dict[tuple[str, str, float], Score] = {}
    for i, clean in enumerate(speeches):
        n = len(clean) + int((LEAD_S + TAIL_S) * RATE)
        keys, audios, truths = [], [], []
        for j, noise_kind in enumerate(noises):
            for k, snr in enumerate(snrs_db):
                rng = np.random.default_rng([seed, i, j, k])
                audio, truth = mix(clean, make_noise(noise_kind, n, rng, spectrum), snr)
                keys.append((noise_kind, snr))
                audios.append(audio)
                truths.append(truth)
        batch = np.stack(audios)  # (conditions, N): one batched call per file and detector
        for name, detect in detectors.items():
            flags = np.asarray(detect(batch, RATE), dtype=bool)  # (conditions, n_frames)
            for (noise_kind, snr), pred, truth in zip(keys, flags, truths):
                scores.setdefault((name, noise_kind, snr), Score()).add(pred, truth)
    return scores


def speech_files(folder: Path = SPEECH_DIR) -> list[Path]:
    return sorted(folder.rglob("*.wav"))


def default_detectors() -> dict[str, Detector]:
    from usssl.speech.silero import silero_vad
    from usssl.speech.vad import energy_vad

    def energy(batch: np.ndarray, rate: int) -> np.ndarray:
        return np.stack([energy_vad(audio, rate) for audio in batch])

    return {"energy": energy, "silero": silero_vad}


def table(scores: dict[tuple[str, str, float], Score]) -> str:
    lines = ["| detector | noise | SNR dB | precision | recall | F1 | speech frames |",
             "|---|---|---|---|---|---|---|"]
    order = sorted(scores, key=lambda k: (NOISES.index(k[1]) if k[1] in NOISES else 99, -k[2], k[0]))
    for name, noise, snr in order:
        s = scores[(name, noise, snr)]
        lines.append(f"| {name} | {noise} | {snr:g} | {s.precision:.3f} | {s.recall:.3f} | "
                     f"{s.f1:.3f} | {s.tp + s.fn} |")
    return "\n".join(lines)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    files = speech_files()
    if not files:
        sys.exit(f"no speech files under {SPEECH_DIR}")
    start = time.perf_counter()
    scores = evaluate(files, default_detectors())
    took = time.perf_counter() - start
    out = Path(__file__).resolve().parent / "results" / "vad_snr.md"
    doc = __doc__.split("\n\n    python")[0].strip()
    text = (f"# VAD precision / recall on real speech in noise\n\n{doc}\n\n"
            f"{len(files)} files: {', '.join(f.name for f in files)}. Energy VAD: "
            f"`energy_vad` defaults; silero: `silero_vad` defaults (threshold 0.5).\n\n"
            f"{table(scores)}\n\n_{took:.1f} s on {torch.get_num_threads()} CPU threads._\n")
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    log.info("%s\nwrote %s", table(scores), out)


if __name__ == "__main__":
    main()

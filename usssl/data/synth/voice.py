"""Narration voices of the synthetic corpus: a deterministic built-in voice and espeak-ng.

The built-in voice is not speech: each word is a fixed sequence of 2–3 "syllables", each a
harmonic tone (glottal-pulse-like harmonics of a word-specific pitch contour) whose spectrum is
shaped by two formant-like Gaussian bands, under an attack/decay envelope, optionally led by a
short band-limited noise "consonant". All word parameters come from SHA-256 of the word, so a
word sounds the same on every machine; the speaker only scales the pitch.

    >>> wave = builtin_word("femur", rate=16000)            # float32 (N,), RMS 1
    >>> wave = speak("femur", rate=16000, voice="espeak")   # needs the espeak-ng binary
"""

from __future__ import annotations

import functools
import hashlib
import io
import shutil
import subprocess
import wave as wavelib

import numpy as np

from usssl.errors import DataError

VOICES: tuple[str, ...] = ("builtin", "espeak")

SPOKEN_TEXT: dict[str, str] = {
    "3vt": "three vessel", "4ch": "four chamber", "brain_tv": "ventricles",
    "brain_cb": "cerebellum", "spine_sag": "spine", "spine_cor": "spine coronal",
    "lvot": "left outflow", "rvot": "right outflow",
}
"""What espeak says for a plane name (other names are said as written)."""


def _unit_floats(word: str, n: int) -> np.ndarray:
    """(n,) floats in [0, 1) from SHA-256 of ``word`` — stable on every machine and numpy."""
    out, counter = [], 0
    while len(out) < n:
        digest = hashlib.sha256(f"{word}|{counter}".encode()).digest()
        out += [int.from_bytes(digest[i : i + 4], "little") / 2**32 for i in range(0, 32, 4)]
        counter += 1
    return np.array(out[:n])


def _envelope(n: int, rate: int, attack_s: float = 0.015, release_s: float = 0.04) -> np.ndarray:
    """(n,) raised-cosine attack, slow decay, raised-cosine release."""
    env = np.exp(-np.arange(n) / (0.6 * n))
    na, nr = max(1, int(attack_s * rate)), max(1, int(release_s * rate))
    env[:na] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(na) / na)
    env[-nr:] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(nr) / nr)
    return env


@functools.lru_cache(maxsize=256)
def _builtin_cached(word: str, rate: int, pitch: float) -> np.ndarray:
    u = iter(_unit_floats(word, 64))
    n_syl = 2 + int(next(u) * 2)
    total = 0.5 + 0.3 * next(u)
    gaps = [0.02 + 0.04 * next(u) for _ in range(n_syl - 1)]
    weights = np.array([0.6 + next(u) for _ in range(n_syl)])
    durs = (total - sum(gaps)) * weights / weights.sum()
    f0_word = (95 + 110 * next(u)) * pitch
    tilt = next(u)  # word-specific spectral tilt
    f1_word, f2_word = 250 + 850 * next(u), 900 + 2000 * next(u)  # the word's vowel colour
    noise_seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
    noise = np.random.default_rng(noise_seed)
    parts: list[np.ndarray] = []
    for k, dur in enumerate(durs):
        n = int(dur * rate)
        t = np.arange(n) / rate
        f0 = f0_word * np.interp(t, [0, dur], [0.85 + 0.35 * next(u), 0.8 + 0.35 * next(u)])
        phase = 2 * np.pi * np.cumsum(f0) / rate  # (n,)
        formants = ((f1_word * (0.85 + 0.3 * next(u)), 80.0),
                    (f2_word * (0.85 + 0.3 * next(u)), 120.0), (3000.0, 250.0))
        n_harm = int(min(4000.0, 0.45 * rate) // f0.max())
        h = np.arange(1, n_harm + 1)[:, None]  # (K, 1)
        fh = h * f0[None, :]  # (K, n) harmonic frequencies
        amp = sum(g * np.exp(-0.5 * ((fh - fc) / bw) ** 2)
                  for (fc, bw), g in zip(formants, (1.0, 0.5 + next(u), 0.2)))
        amp = (amp + 0.01) / h**tilt
        syl = (amp * np.sin(h * phase[None, :])).sum(axis=0) * _envelope(n, rate)
        if next(u) < 0.5:  # leading noise consonant, band around 2–3.5 kHz
            m = int((0.03 + 0.03 * next(u)) * rate)
            burst = noise.standard_normal(m)
            fc = min(2000 + 1500 * next(u), 0.4 * rate)
            burst = np.real(np.fft.ifft(np.fft.fft(burst) * _band(m, rate, fc, 600.0)))
            burst *= _envelope(m, rate, 0.005, 0.01) * 0.5 / (burst.std() + 1e-12)
            syl = np.concatenate([burst, syl])
        parts.append(syl)
        if k < n_syl - 1:
            parts.append(np.zeros(int(gaps[k] * rate)))
    out = np.concatenate(parts)
    return (out / np.sqrt(np.mean(out**2))).astype(np.float32)


def _band(n: int, rate: int, fc: float, bw: float) -> np.ndarray:
    f = np.abs(np.fft.fftfreq(n, 1 / rate))
    return np.exp(-0.5 * ((f - fc) / bw) ** 2)


def builtin_word(word: str, rate: int = 16000, pitch: float = 1.0) -> np.ndarray:
    """The built-in voice saying ``word``.

    Args:
        word: plane name (any string; its SHA-256 fixes the sound).
        rate: sample rate in Hz.
        pitch: speaker pitch factor (1 = 95–205 Hz fundamental, word-dependent).

    Returns:
        float32 (N,) waveform of 0.5–0.8 s (plus ≤ 60 ms per noise consonant), RMS 1.
    """
    return _builtin_cached(word, int(rate), float(pitch)).copy()


def resample(audio: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Band-limited (FFT) resampling of float (N,) audio from ``src`` Hz to ``dst`` Hz."""
    if src == dst:
        return audio.astype(np.float32)
    n_out = int(round(len(audio) * dst / src))
    spec = np.fft.rfft(audio)
    out = np.zeros(n_out // 2 + 1, complex)
    k = min(len(spec), len(out))
    out[:k] = spec[:k]
    return (np.fft.irfft(out, n=n_out) * n_out / len(audio)).astype(np.float32)


@functools.lru_cache(maxsize=256)
def _espeak_cached(word: str, rate: int, pitch: float) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError("voice='espeak' needs the espeak-ng binary on PATH "
                        "(e.g. `apt-get install espeak-ng`); or use voice='builtin'.")
    text = SPOKEN_TEXT.get(word, word.replace("_", " "))
    espeak_pitch = str(int(np.clip(50 * pitch, 0, 99)))
    proc = subprocess.run([exe, "--stdout", "-v", "en", "-p", espeak_pitch, text],
                          capture_output=True, check=True, timeout=60)
    with wavelib.open(io.BytesIO(proc.stdout)) as wav:
        src, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
        raw = wav.readframes(wav.getnframes())
    if width != 2:
        raise DataError(f"espeak-ng wrote {8 * width}-bit audio; expected 16-bit PCM.")
    pcm = np.frombuffer(raw, "<i2").reshape(-1, channels).mean(axis=1) / 32768.0
    pcm = resample(pcm, src, rate)
    loud = np.nonzero(np.abs(pcm) > 0.02 * np.abs(pcm).max())[0]
    if loud.size == 0:
        raise DataError(f"espeak-ng returned silence for {text!r}.")
    pcm = pcm[loud[0] : loud[-1] + 1]
    return (pcm / np.sqrt(np.mean(pcm**2))).astype(np.float32)


def speak(word: str, rate: int = 16000, voice: str = "builtin", pitch: float = 1.0) -> np.ndarray:
    """float32 (N,) waveform (RMS 1, no leading/trailing silence) of ``word`` in ``voice``."""
    if voice == "builtin":
        return builtin_word(word, rate, pitch)
    if voice == "espeak":
        return _espeak_cached(word, int(rate), float(pitch)).copy()
    raise DataError(f"unknown voice {voice!r}; choose one of {', '.join(VOICES)}.")

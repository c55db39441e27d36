"""Standalone WAV/FLAC narration: decoding and resampling, and its use as a recording's narration."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import fixtures_dicom as fd  # noqa: E402
import fixtures_video as fx  # noqa: E402

from usssl.errors import DataError  # noqa: E402
from usssl.io.audio import narration_file, read_audio  # noqa: E402


def write_audio(path: Path, samples: np.ndarray, rate: int, codec: str = "pcm_s16le") -> Path:
    """(channels, n) float32 samples in [-1, 1] to a WAV (pcm) or FLAC file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = "mono" if len(samples) == 1 else "stereo"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        pcm = np.ascontiguousarray((samples * 32767).astype(np.int16))
        frame = av.AudioFrame.from_ndarray(pcm, format="s16p", layout=layout)
        frame.sample_rate = rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _tone(rate: int, seconds: float, freq: float) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(x))) * rate / len(x))


@pytest.mark.parametrize("codec,ext", [("pcm_s16le", ".wav"), ("flac", ".flac")])
def test_stereo_8k_becomes_mono_16k(tmp_path, codec, ext):
    left = _tone(8000, 1.0, 440.0)
    path = write_audio(tmp_path / f"n{ext}", np.stack([left, left]), 8000, codec)
    samples, rate = read_audio(path, 16000)
    assert rate == 16000 and samples.dtype == np.float32
    assert len(samples) == pytest.approx(16000, abs=64)
    assert _peak_hz(samples, 16000) == pytest.approx(440.0, abs=2.0)
    assert np.abs(samples).max() == pytest.approx(0.5 * np.sqrt(2), abs=0.03)  # FFmpeg's (L + R) / sqrt(2)
    native, native_rate = read_audio(path)
    assert native_rate == 8000 and len(native) == 8000


def test_errors_and_side_file_lookup(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"RIFF not really")
    with pytest.raises(DataError, match="x.wav: cannot be read as audio"):
        read_audio(tmp_path / "x.wav")
    write_audio(tmp_path / "scan_1.FLAC", _tone(8000, 0.1, 300.0)[None], 8000, "flac")
    assert narration_file(tmp_path, "scan_1") == tmp_path / "scan_1.FLAC"
    assert narration_file(tmp_path, "scan_2") is None


def test_ingest_uses_a_side_file_as_narration_and_reports_lone_audio(tmp_path, monkeypatch):
    from usssl.config import IngestConfig
    from usssl.data.cache import Cache
    from usssl.data.ingest import ingest

    monkeypatch.setenv("USSSL_SUBJECT_KEY", "audio-key")
    src = tmp_path / "src"
    fd.write_dicom(src / "cine.dcm", fd.ramp_frames(t=10), FrameTime=100.0)  # 1 s, no audio track
    write_audio(src / "cine.wav", _tone(16000, 2.0, 500.0)[None], 16000)  # longer: cut at 1 s
    fx.make_scan(src / "talk.mp4", seconds=2.0)  # has its own narration: the side file is ignored
    write_audio(src / "talk.wav", _tone(16000, 1.0, 2000.0)[None], 16000)
    write_audio(src / "alone.flac", _tone(16000, 0.5, 700.0)[None], 16000, "flac")
    cfg = IngestConfig(size=(16, 16), fps=10, workers=1)
    summary = ingest([src], tmp_path / "cache", cfg, progress=False)
    report = pd.read_csv(summary.report_path).set_index("source")
    assert (summary.n_ok, summary.n_skipped) == (2, 1)  # the lone FLAC is reported, not a shard
    assert sorted(report.index) == ["alone.flac", "cine.dcm", "talk.mp4"]
    assert report.loc["alone.flac", "status"] == "skipped"
    assert report.loc["alone.flac", "reason"].startswith("audio-only file: not a recording")
    cache = Cache(tmp_path / "cache")
    cine = cache.shard(report.loc["cine.dcm", "shard"])
    assert cine.audio is not None and cine.audio.shape == (16000,)
    assert _peak_hz(np.asarray(cine.audio), 16000) == pytest.approx(500.0, abs=2.0)
    talk = cache.shard(report.loc["talk.mp4", "shard"])
    assert _peak_hz(np.asarray(talk.audio), 16000) == pytest.approx(1000.0, abs=5.0)  # its own track
    card = (tmp_path / "cache" / "DATA_CARD.md").read_text()
    assert "Audio kept: yes (16000 Hz mono; 2 recording(s) with narration" in card and "1 from a side WAV/FLAC" in card
    quiet = ingest([src], tmp_path / "cache_quiet", cfg.model_copy(update={"audio": False}), progress=False)
    assert not Cache(quiet.cache_dir).index["has_audio"].any()
    assert "Audio kept: no" in (quiet.cache_dir / "DATA_CARD.md").read_text()

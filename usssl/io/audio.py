"""Standalone narration files (WAV, FLAC) through PyAV, as mono float32 at the cache's rate.

An audio-only file is **not** a recording: there are no frames to pretrain on, so ingest never
writes a shard for it. Instead a WAV/FLAC beside a video, DICOM or NIfTI file with the same stem
(``scan_007.dcm`` + ``scan_007.wav``) is that recording's narration when the recording has no
audio track of its own (a DICOM never has one). Its sample 0 is taken to be the first frame's
time; a recording's own audio track always wins over a side file.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from usssl.errors import DataError

AUDIO_EXTENSIONS = (".wav", ".flac")
_READ_ERRORS = (av.FFmpegError, OSError, ValueError, IndexError)


def read_audio(path: str | Path, rate: int | None = None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of ``path`` to mono float32.

    Args:
        path: a WAV or FLAC file (anything FFmpeg reads with an audio stream works).
        rate: resample to this rate in Hz; None keeps the file's rate.

    Returns:
        (samples (n,) float32 in [-1, 1], rate in Hz); sample 0 is the file's first sample.

    Raises:
        DataError: the file cannot be read or has no audio stream.
    """
    path = Path(path)
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DataError(f"{path}: no audio stream; remove it from the sources")
            stream = container.streams.audio[0]
            rate = int(rate or stream.codec_context.sample_rate or 16000)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):  # flush
                chunks.append(out.to_ndarray().reshape(-1))
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: cannot be read as audio ({exc}); check that the file is complete") from None
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return np.ascontiguousarray(samples, dtype=np.float32), rate


def narration_file(folder: Path, stem: str) -> Path | None:
    """The WAV/FLAC named ``stem`` in ``folder`` (extension in any case), or None."""
    for ext in AUDIO_EXTENSIONS:
        for name in (stem + ext, stem + ext.upper()):
            if (Path(folder) / name).is_file():
                return Path(folder) / name
    return None

"""Encapsulated video inside DICOM (MPEG-2, MPEG-4 AVC/H.264, HEVC/H.265), decoded through PyAV.

These transfer syntaxes (1.2.840.10008.1.2.4.100-.108, and their "fragmentable" .1 variants) hold
one compressed video stream split over the Pixel Data fragments (PS3.5 A.4, 8.2.5-8.2.7). The
fragments after the Basic Offset Table are concatenated into one byte stream and opened with
``av.open(io.BytesIO(...))``; the elementary stream (or MPEG-2 program stream) is probed by
FFmpeg, with a format hint as fallback.

Frame count and rate come from the header when it states them (Number of Frames; the frame-rate
order of ``usssl.io.dicom``), else from the stream: its packet count and its average (or
guessed) rate (``probe_video``). The compressed stream sits in memory while it is decoded (a DICOM video is
compressed, so this is the file's size, not the decoded frames').
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pydicom
from av.video.reformatter import VideoReformatter
from pydicom.encaps import generate_fragments, parse_basic_offsets

from usssl.errors import DataError
from usssl.io.recording import FrameBlocks

VIDEO_SYNTAX_PREFIX = "1.2.840.10008.1.2.4.10"  # .100-.108 and their fragmentable .1 variants
_FORMAT_HINTS = {"1.2.840.10008.1.2.4.100": "mpegvideo", "1.2.840.10008.1.2.4.101": "mpegvideo",
                 "1.2.840.10008.1.2.4.107": "hevc", "1.2.840.10008.1.2.4.108": "hevc"}  # fmt: skip
_READ_ERRORS = (av.FFmpegError, OSError, ValueError, IndexError, EOFError, KeyError)


def is_video_syntax(syntax: str) -> bool:
    """Whether ``syntax`` (a transfer syntax UID) is MPEG-2, H.264 or HEVC video."""
    return str(syntax).startswith(VIDEO_SYNTAX_PREFIX)


def _format_hint(syntax: str) -> str:
    base = ".".join(str(syntax).split(".")[:8])  # the fragmentable ".1" variants share the codec
    return _FORMAT_HINTS.get(base, "h264")


def video_stream(path: Path) -> bytes:
    """The compressed video stream of an encapsulated-video DICOM: its fragments, concatenated.

    Raises:
        DataError: the Pixel Data is not encapsulated or cannot be parsed.
    """
    try:
        ds = pydicom.dcmread(path, force=True)
        buffer = io.BytesIO(ds.PixelData)
        parse_basic_offsets(buffer)  # moves past the Basic Offset Table
        return b"".join(generate_fragments(buffer))
    except (AttributeError, ValueError, OSError, EOFError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: the encapsulated video in Pixel Data cannot be parsed ({exc})") from None


def _open(stream: bytes, syntax: str) -> av.container.InputContainer:
    try:
        return av.open(io.BytesIO(stream))
    except av.FFmpegError:  # a bare elementary stream FFmpeg does not recognise by probing
        return av.open(io.BytesIO(stream), format=_format_hint(syntax))


def probe_video(path: Path, syntax: str) -> tuple[int, float | None, int, int]:
    """(frames, rate or None, height, width) of the stream, from its packets (no decoding).

    The rate is the codec's own (H.264 VUI timing, the MPEG-2 frame rate code), else FFmpeg's
    guess, else the demuxer's average: a bare elementary stream has no container timing, and
    FFmpeg's raw H.264 demuxer reports a default 25 fps as its average.

    Raises:
        DataError: the stream cannot be opened or holds no video frames.
    """
    stream_bytes = video_stream(path)
    try:
        with _open(stream_bytes, syntax) as container:
            if not container.streams.video:
                raise DataError(f"{path}: the encapsulated stream holds no video")
            vstream = container.streams.video[0]
            n = sum(1 for p in container.demux(vstream) if p.size and not p.is_discard)
            rates = (vstream.codec_context.framerate, vstream.guessed_rate, vstream.average_rate)
            rate = next((float(r) for r in rates if r and float(r) > 0), None)
            height, width = vstream.codec_context.height, vstream.codec_context.width
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: the encapsulated video cannot be opened ({exc})") from None
    if n == 0:
        raise DataError(f"{path}: the encapsulated video has no frames")
    return n, rate, height, width


class DicomVideoFrames:
    """Picklable frame source of an encapsulated-video DICOM: decodes the stream from the start on
    every call and yields uint8 (t, H, W) grey (or (t, H, W, 3) RGB without ``grayscale``) blocks,
    at most ``chunk`` frames each and ``n_frames`` in total, scaled to (height, width)."""

    def __init__(self, path: Path, syntax: str, n_frames: int, height: int, width: int,
                 grayscale: bool = True) -> None:  # fmt: skip
        self.path, self.syntax, self.n_frames = Path(path), str(syntax), n_frames
        self.height, self.width, self.grayscale = height, width, grayscale

    def __call__(self, chunk: int) -> Iterator[np.ndarray]:
        fmt = "gray" if self.grayscale else "rgb24"
        reformatter, blocks = VideoReformatter(), FrameBlocks(chunk, self.n_frames)
        stream_bytes = video_stream(self.path)
        try:
            with _open(stream_bytes, self.syntax) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                frames = (reformatter.reformat(f, width=self.width, height=self.height, format=fmt).to_ndarray()
                          for f in container.decode(stream))  # fmt: skip
                yield from blocks(frames)
        except _READ_ERRORS as exc:
            raise DataError(f"{self.path}: video decoding failed after {blocks.count} frames ({exc}); the "
                            "encapsulated video is damaged: export the file again") from None  # fmt: skip

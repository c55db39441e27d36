"""Video files (mp4, mov, avi, mkv, mpeg, gif, ...) through PyAV: frames, timestamps, narration.

One demux pass at open time reads the video packets' timestamps (no decoding) and decodes the
audio; frames are decoded later, on demand, by ``Recording.iter_frames``. Container tags (title,
creation time, comments, encoder, location) can carry patient data and are never copied.

Timing is checked, here and for every reader (:func:`checked_timing`), because ingest resamples by
time: a frame rate outside [``MIN_FPS``, ``MAX_FPS``] is not believed, and a pause between two
frames longer than ``MAX_FRAME_GAP_S`` (a corrupt timestamp: a 3-frame file claiming an hour) is
shortened to that limit, the narration of the cut time with it. Each such change is a note in
``Recording.meta["notes"]``, which ingest writes to the report.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from usssl.errors import DataError
from usssl.io.recording import FrameBlocks, Recording

VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".ogv", ".gif",
)  # fmt: skip

MAX_FRAME_GAP_S = 10.0  # longest pause between two frames taken at face value (see the module docstring)
MIN_FPS, MAX_FPS = 1.0 / MAX_FRAME_GAP_S, 10_000.0  # stated frame rates outside these are not believed
FALLBACK_FPS = 30.0
_READ_ERRORS = (av.FFmpegError, OSError, ValueError, IndexError)
_THREADED_PIXELS = 320 * 240  # smaller videos decode faster without frame threads


def relative_source(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` in posix form; the file name alone when outside ``root``."""
    if root is not None:
        try:
            return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return Path(path).name


def printable(text: str) -> str:
    """``text`` (a source path, a reason naming one) with the bytes of a file name that are not
    UTF-8 (Python's surrogate escapes) written as ``\\xNN``: such a file is reported like any
    other (a report, a table, a log line cannot hold the raw bytes). Valid text is unchanged."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class VideoFrames:
    """Picklable frame source: decodes ``path`` from the start on every call.

    Yields uint8 blocks (t, H, W) when ``grayscale`` else (t, H, W, 3) RGB, at most ``chunk``
    frames each and ``n_frames`` in total; frames whose size changes mid-stream are rescaled.
    """

    def __init__(self, path: Path, stream_index: int, n_frames: int, height: int, width: int,
                 grayscale: bool = True) -> None:  # fmt: skip
        self.path, self.stream_index, self.n_frames = Path(path), stream_index, n_frames
        self.height, self.width, self.grayscale = height, width, grayscale

    def __call__(self, chunk: int) -> Iterator[np.ndarray]:
        fmt = "gray" if self.grayscale else "rgb24"
        reformatter = VideoReformatter()  # one scaler for every frame (to_ndarray makes one each)
        blocks = FrameBlocks(chunk, self.n_frames)
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[self.stream_index]
                if self.height * self.width >= _THREADED_PIXELS:
                    stream.thread_type = "AUTO"
                frames = (reformatter.reformat(f, width=self.width, height=self.height, format=fmt).to_ndarray()
                          for f in container.decode(stream))
                yield from blocks(frames)
        except _READ_ERRORS as exc:
            raise DataError(f"{self.path}: decoding failed after {blocks.count} frames ({exc}); check that the "
                            "file is complete, or re-encode it (e.g. with ffmpeg)") from None  # fmt: skip


def read_video(
    path: str | Path,
    root: str | Path | None = None,
    *,
    grayscale: bool = True,
    audio: bool = True,
    audio_rate: int | None = None,
) -> Recording:
    """Open a video file and return its lazy :class:`Recording`.

    Args:
        path: the video file.
        root: the ingest root; ``Recording.source`` is ``path`` relative to it.
        grayscale: frames as (t, H, W) luma rather than (t, H, W, 3) RGB.
        audio: decode the first audio stream (False: ``audio`` is None).
        audio_rate: resample the narration to this mono rate in Hz (None keeps the stream's rate).

    Returns:
        A Recording whose ``timestamps`` are seconds from the first frame and whose ``audio``
        (float32 (n,), or None without an audio stream) has sample 0 at the first frame's time.

    Raises:
        DataError: the file cannot be opened, has no video stream or no frames.
    """
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream; remove it from the sources")
            vstream = container.streams.video[0]
            astream = container.streams.audio[0] if (audio and container.streams.audio) else None
            streams = [vstream] + ([astream] if astream is not None else [])
            pts: list[int | None] = []  # presentation time of each video packet (no decoding)
            decoder = _AudioDecoder(astream, audio_rate) if astream is not None else None
            for packet in container.demux(*streams):
                if packet.stream.index == vstream.index:
                    if packet.size and not packet.is_discard:
                        pts.append(packet.pts if packet.pts is not None else packet.dts)
                elif decoder is not None:
                    decoder.add(packet)
            meta = {
                "format": container.format.name,
                "video_codec": vstream.codec_context.name,
                "pix_fmt": vstream.codec_context.pix_fmt,
            }
            height, width = vstream.codec_context.height, vstream.codec_context.width
            time_base = vstream.time_base or Fraction(1, 1)
            rates = [vstream.average_rate, vstream.guessed_rate]
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(
            f"{path}: cannot be read as a video ({exc}); check that the file is complete "
            "or remove it from the sources"
        ) from None
    if not pts:
        raise DataError(f"{path}: the video stream has no frames")
    timed = None not in pts
    stamps = np.sort(np.asarray(pts if timed else np.arange(len(pts)), dtype=np.int64))
    timestamps = (stamps - stamps[0]).astype(np.float64) * float(time_base)  # (n_frames,)
    fps = _frame_rate(rates, timestamps if timed else np.zeros(0))
    if not timed or (len(timestamps) > 1 and timestamps[-1] <= 0):
        timestamps = np.arange(len(stamps)) / fps  # no usable packet times: a constant rate
    stated = timestamps
    timestamps, jumps = shortened_gaps(timestamps)
    meta["notes"] = [gap_note(jumps, len(stamps))] if jumps else []
    samples, rate = None, None
    if decoder is not None:
        t0 = float(stamps[0] * time_base) if timed else 0.0
        samples, rate = decoder.aligned(t0, float(timestamps[-1]) + 1.0 / fps)
        samples = without_pauses(samples, rate, stated, jumps)
        meta["audio_codec"] = astream.codec_context.name
    return Recording(
        source=relative_source(path, Path(root) if root is not None else None),
        fps=fps,
        n_frames=len(stamps),
        height=height,
        width=width,
        timestamps=timestamps,
        audio=samples,
        sample_rate=rate,
        meta=meta,
        frame_source=VideoFrames(path, 0, len(stamps), height, width, grayscale),
    )


def _frame_rate(rates: list[Fraction | None], timestamps: np.ndarray) -> float:
    """The stream's average rate, else its guessed rate, else 1 / median frame interval, else 25
    (the first of them that is plausible: ``plausible_fps``)."""
    for rate in rates:
        if rate is not None and plausible_fps(float(rate)):
            return float(rate)
    steps = np.diff(timestamps)
    steps = steps[steps > 0]
    if steps.size and plausible_fps(1.0 / float(np.median(steps))):
        return float(1.0 / np.median(steps))
    return 25.0  # no timing at all (or a single still frame): a common video rate


def plausible_fps(fps: float | None) -> bool:
    """Whether ``fps`` is a frame rate to believe: finite and within [``MIN_FPS``, ``MAX_FPS``]."""
    return fps is not None and bool(np.isfinite(fps)) and MIN_FPS <= fps <= MAX_FPS


def shortened_gaps(timestamps: np.ndarray,
                   limit: float = MAX_FRAME_GAP_S) -> tuple[np.ndarray, list[tuple[int, float]]]:  # fmt: skip
    """``timestamps`` (n,) seconds with every step longer than ``limit`` shortened to ``limit``.

    Returns:
        (the new (n,) timestamps, [(i, step), ...] for each shortened step, between frames i and i + 1
        of the original, in seconds). Without such steps the input array itself and [].
    """
    steps = np.diff(np.asarray(timestamps, dtype=np.float64))  # (n - 1,)
    long = np.flatnonzero(steps > limit)
    if not long.size:
        return timestamps, []
    fixed = timestamps[0] + np.concatenate([[0.0], np.cumsum(np.minimum(steps, limit))])
    return fixed, [(int(i), float(steps[i])) for i in long]


def gap_note(jumps: list[tuple[int, float]], n_frames: int, limit: float = MAX_FRAME_GAP_S) -> str:
    """The report note of ``shortened_gaps``: the longest jump, how many, and what was done."""
    i, step = max(jumps, key=lambda j: j[1])
    more = f" ({len(jumps)} such pauses)" if len(jumps) > 1 else ""
    return (f"timestamps jump by {step:.1f} s after frame {i + 1} of {n_frames}{more}, more than the "
            f"{limit:g} s a pause between two frames may last: shortened to {limit:g} s (narration of the "
            "cut time removed too) instead of filling the pause with copies of one frame; if the pause "
            "is real, split the recording there")  # fmt: skip


def without_pauses(audio: np.ndarray | None, rate: int | None, timestamps: np.ndarray,
                   jumps: list[tuple[int, float]], limit: float = MAX_FRAME_GAP_S) -> np.ndarray | None:  # fmt: skip
    """``audio`` (sample 0 at ``timestamps[0]``) without the time ``shortened_gaps`` cut: the samples
    from ``limit`` s after frame i to frame i + 1 of each jump, so the narration stays with its frames."""
    if audio is None or not jumps:
        return audio
    keep, start = [], 0
    for i, _ in jumps:
        cut_from = int(round((timestamps[i] - timestamps[0] + limit) * rate))
        keep.append(audio[start:cut_from])
        start = max(cut_from, int(round((timestamps[i + 1] - timestamps[0]) * rate)))
    keep.append(audio[start:])
    return np.ascontiguousarray(np.concatenate(keep), dtype=np.float32)


def checked_timing(rec: Recording) -> Recording:
    """``rec`` with timing ingest can trust, whatever its reader: a frame rate outside [``MIN_FPS``,
    ``MAX_FPS``] is replaced (by 1 / the median frame interval when that is plausible, else
    ``FALLBACK_FPS``) and pauses longer than ``MAX_FRAME_GAP_S`` are shortened (``shortened_gaps``,
    narration with them). Each change adds a note to ``meta["notes"]``; ``rec`` itself is unchanged.
    """
    notes = list(rec.meta.get("notes") or [])
    fps, stamps = float(rec.fps), rec.timestamps
    if not plausible_fps(fps):
        steps = np.diff(stamps) if stamps is not None else np.zeros(0)
        steps = steps[steps > 0]
        median = 1.0 / float(np.median(steps)) if steps.size else None
        new = median if plausible_fps(median) else FALLBACK_FPS
        notes.append(f"stated frame rate {fps:g} fps is not plausible (usssl believes {MIN_FPS:g} to "
                     f"{MAX_FPS:g} fps): read at {new:g} fps")  # fmt: skip
        fps = new
        if stamps is None or not plausible_fps(median):
            stamps = np.arange(rec.n_frames) / fps
    jumps: list[tuple[int, float]] = []
    audio = rec.audio
    if stamps is not None:
        stated = stamps
        stamps, jumps = shortened_gaps(stamps)
        if jumps:
            notes.append(gap_note(jumps, rec.n_frames))
            audio = without_pauses(audio, rec.sample_rate, stated, jumps)
    if fps == rec.fps and not jumps and stamps is rec.timestamps:
        return rec
    return replace(rec, fps=fps, timestamps=stamps, audio=audio, meta={**rec.meta, "notes": notes})


class _AudioDecoder:
    """Decodes audio packets and resamples them to float32 mono at one rate."""

    def __init__(self, stream: av.audio.stream.AudioStream, rate: int | None) -> None:
        self.rate = int(rate or stream.codec_context.sample_rate or 16000)
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
        self.chunks: list[np.ndarray] = []
        self.start: float | None = None  # seconds, the first decoded sample's time

    def add(self, packet: av.Packet) -> None:
        for frame in packet.decode():  # the final empty packet flushes the decoder
            if self.start is None:
                self.start = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
            for out in self.resampler.resample(frame):
                self.chunks.append(out.to_ndarray().reshape(-1))

    def aligned(self, t0: float, duration: float) -> tuple[np.ndarray, int]:
        """(n,) float32 with sample 0 at time ``t0`` (zeros before the audio starts, for at most the
        video's ``duration`` in seconds whatever the audio's start time says), and rate."""
        for out in self.resampler.resample(None):
            self.chunks.append(out.to_ndarray().reshape(-1))
        samples = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        start = t0 if self.start is None else self.start
        shift = int(round((start - t0) * self.rate))
        if shift > 0:
            shift = min(shift, int(np.ceil(duration * self.rate)))  # audio after the last frame is never used
            samples = np.concatenate([np.zeros(shift, np.float32), samples])
        elif shift < 0:
            samples = samples[-shift:]
        return np.ascontiguousarray(samples, dtype=np.float32), self.rate

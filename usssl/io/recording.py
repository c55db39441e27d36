"""The one shape every reader returns: metadata plus a lazy frame source.

A reader never decodes the whole recording up front: ``iter_frames(chunk)`` decodes on demand and
yields blocks of frames, so a one-hour scan never sits in memory whole.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

FrameSource = Callable[[int], Iterator[np.ndarray]]


class FrameBlocks:
    """Groups single frames into stacked blocks: (t, H, W) or (t, H, W, 3), at most ``chunk`` frames
    each and ``limit`` frames in total; ``count`` says how many were taken (for error messages).
    Every reader's lazy frame source uses it. Each block is allocated once and filled in place (no
    list of frames to stack: one copy per frame); frames must all have the first one's shape."""

    def __init__(self, chunk: int, limit: int) -> None:
        self.chunk, self.limit, self.count = chunk, limit, 0

    def __call__(self, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        block, k = None, 0
        for frame in frames:
            if block is None:
                size = max(1, min(self.chunk, self.limit - self.count))
                block = np.empty((size, *frame.shape), frame.dtype)
            block[k] = frame
            k += 1
            self.count += 1
            if k == len(block) or self.count >= self.limit:
                yield block[:k]
                block, k = None, 0
            if self.count >= self.limit:
                return
        if block is not None and k:
            yield block[:k]


@dataclass
class Recording:
    """One recording (a cine loop, a screen-recorded video) as read from its source.

    Attributes:
        source: path relative to the ingest root (never absolute: it may name the patient's folder).
        fps: frame rate in frames per second (the container's average rate when it varies).
        n_frames: number of frames ``iter_frames`` yields.
        height, width: frame size in pixels.
        timestamps: (n_frames,) float64 seconds from the first frame, or None when unknown.
        audio: (n_samples,) float32 mono with sample 0 at the first frame's time, or None.
        sample_rate: audio sample rate in Hz, or None without audio.
        spacing_mm: (row, column) pixel spacing in millimetres when the source states it.
        meta: technical facts (format, codec, ...); never patient identifiers or container tags.
        frame_source: ``chunk -> iterator of frame blocks``; called once per ``iter_frames``.
    """

    source: str
    fps: float
    n_frames: int
    height: int
    width: int
    timestamps: np.ndarray | None = None
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    spacing_mm: tuple[float, float] | None = None
    meta: dict = field(default_factory=dict)
    frame_source: FrameSource | None = field(default=None, repr=False, compare=False)

    def iter_frames(self, chunk: int = 64) -> Iterator[np.ndarray]:
        """Decode on demand: uint8 blocks (t, H, W) grey or (t, H, W, 3) colour, t <= ``chunk``.

        Every call starts again from the first frame.
        """
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        if self.frame_source is None:
            raise ValueError(f"{self.source}: this Recording has no frame source")
        yield from self.frame_source(chunk)

    def as_colour(self) -> Recording | None:
        """This recording with frames decoded as (t, H, W, 3) RGB, or None when it cannot.

        A frame source that can decode colour has a ``grayscale`` attribute (the video and DICOM
        sources do); the copy sets it to False. Metadata, timing and audio are shared.
        """
        if self.frame_source is None or not hasattr(self.frame_source, "grayscale"):
            return None
        source = copy.copy(self.frame_source)
        source.grayscale = False
        return dataclasses.replace(self, frame_source=source)

    @property
    def duration_s(self) -> float:
        """Time from the first frame to the end of the last one, in seconds."""
        if self.timestamps is not None and len(self.timestamps):
            return float(self.timestamps[-1]) + 1.0 / self.fps
        return self.n_frames / self.fps

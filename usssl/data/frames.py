"""The frame path shared by ingest and ``usssl predict``: what is kept of a recording, and how.

Both must turn a recording into the same pixels byte for byte, so both call these functions:
:func:`imaging_geometry` (refuse burned-in text it cannot crop, probe colour, choose the output
frames, decode once when small, find the imaging region and the static overlays) and
:func:`resampled_blocks` (decode in blocks, take the kept frames, blank, crop and resize).

    >>> geo = imaging_geometry(rec, path, "auto", fps=15.0)
    >>> for small in resampled_blocks(geo, (64, 64)):
    ...     grey(small)                      # (t, 64, 64) uint8
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from usssl.errors import DataError
from usssl.io.recording import Recording
from usssl.privacy.overlay_text import TextMask, text_mask
from usssl.privacy.region import (Box, check_box, colour_fraction, crop_resize, imaging_mask, mask_box, static_mask,
                                  temporal_stats)  # fmt: skip

REGION_SAMPLES = 60  # frames spread over a recording for the imaging-region and static-pixel detection
IN_MEMORY_BYTES = 1 << 28  # recordings smaller than this are decoded once, not twice
BURNED_IN_REFUSED = "BurnedInAnnotation is YES"  # start of the reason of a refused DICOM
BLOCK_FRAMES = 64  # frames decoded per block when a recording is read twice
TEXT_FRAMES = 20  # sampled frames searched for burned-in text (the same result as all 60 on the real data)


def kept_frames(timestamps: np.ndarray, fps: float | None, source_fps: float | None = None) -> np.ndarray:
    """(T,) index of the source frame nearest to each output time k / fps.

    Output times cover the recording up to the end of its last frame (last timestamp + one
    source frame interval); ``fps`` None keeps every frame, and so does a one-frame recording (a
    still image or a 1-frame DICOM is one cached frame, not one per 1 / fps of its stated duration).
    """
    if fps is None or len(timestamps) == 1:
        return np.arange(len(timestamps))
    if source_fps is None:
        steps = np.diff(timestamps)
        source_fps = 1.0 / float(np.median(steps)) if steps.size else fps
    duration = float(timestamps[-1]) + 1.0 / source_fps
    targets = np.arange(max(1, int(np.ceil(duration * fps - 1e-6)))) / fps  # (T,)
    after = np.clip(np.searchsorted(timestamps, targets), 0, len(timestamps) - 1)
    before = np.clip(after - 1, 0, None)
    closer = np.abs(timestamps[before] - targets) <= np.abs(timestamps[after] - targets) + 1e-9
    return np.where(closer, before, after)


@dataclass
class ImagingGeometry:
    """Where the image is in a recording and which frames are kept: everything ingest (and
    ``usssl predict``, which must match it byte for byte) decides before writing a frame.

    Attributes:
        src: the recording to decode frames from: its RGB copy when ``colour``, else grey.
        colour: whether the recording holds colour (:func:`colour_source`).
        timestamps: (n,) float64 seconds of the source frames from the first.
        src_idx: (P,) int source frame kept at each output time (:func:`kept_frames`).
        frames: (n, H, W) or (n, H, W, 3) uint8, the whole recording when it fits in
            ``IN_MEMORY_BYTES`` (decoded once, reused to write); None: decode again in blocks.
        box: (x0, y0, x1, y1) crop in source pixels, end-exclusive.
        crop_method: how ``box`` was found: "box" (given), "full_frame", "ultrasound_region"
            (DICOM) or "motion" (:func:`usssl.privacy.region.imaging_mask`).
        mask: (H, W) bool imaging region found from motion, or None.
        static: (H, W) bool constant overlay pixels inside the region (blanked), or None.
        text: burned-in text found inside the region (``usssl.privacy.overlay_text``; its
            ``mask`` is blanked, its ``fraction`` and ``heavy`` reported).
        keep: (H, W) bool pixels kept (``mask`` or the box, less ``static`` and ``text.mask``), or
            None: all of the box.
    """

    src: Recording
    colour: bool
    timestamps: np.ndarray
    src_idx: np.ndarray
    frames: np.ndarray | None
    box: Box
    crop_method: str
    mask: np.ndarray | None
    static: np.ndarray | None
    keep: np.ndarray | None
    text: TextMask | None = None


def imaging_geometry(rec: Recording, path: Path, crop, fps: float | None) -> ImagingGeometry:
    """Refuse, colour probe, kept frames, decode, crop box, imaging mask and static overlay of ``rec``.

    The region and overlay detection share one sample of ``REGION_SAMPLES`` grey frames spread
    over the recording and one pass of per-pixel statistics over it.

    Args:
        rec: the recording as its reader returned it (grey).
        path: its file (a video's keyframes are probed for colour).
        crop: ``ingest.crop``: "auto", "none" or an (x0, y0, x1, y1) box in source pixels.
        fps: output frame rate, or None to keep every source frame.

    Raises:
        DataError: the recording is refused (``refuse_burned_in``; text inside the region that
            cannot be blanked with confidence: moving, or covering much of the image), the crop box
            does not fit the frame, or no frame can be decoded.
    """
    refuse_burned_in(rec, crop)
    colour = colour_source(rec, path)  # the RGB recording, or None: decode grey
    src = colour if colour is not None else rec
    timestamps = rec.timestamps if rec.timestamps is not None else np.arange(rec.n_frames) / rec.fps
    src_idx = kept_frames(timestamps, fps, rec.fps)  # (P,)
    frames = None
    if rec.n_frames * rec.height * rec.width * (3 if colour is not None else 1) <= IN_MEMORY_BYTES:
        frames = _decode_all(src)  # (n, H, W) or (n, H, W, 3): decode once
    sample = _sample_frames(src, frames)  # (s, H, W) grey, spread over the recording
    stats = temporal_stats(sample)  # (mean, std), each (H, W)
    box, mask = _crop_box(rec, crop, sample, stats)
    inside = mask if mask is not None else _box_mask(box, rec.height, rec.width)
    static = static_mask(sample, inside, stats=stats)  # (H, W) overlay pixels to blank, or None
    text = text_mask(sample, inside, mean=stats[0], max_frames=TEXT_FRAMES)  # burned-in text inside
    if text.unsure:
        raise DataError(f"{rec.source}: refused: {text.reason}")
    blank = text.mask if static is None else static | text.mask  # (H, W)
    method = ("box" if not isinstance(crop, str) else "full_frame" if crop == "none" else
              "ultrasound_region" if rec.meta.get("region_box") is not None else
              "motion" if mask is not None else "full_frame")  # fmt: skip
    return ImagingGeometry(src=src, colour=colour is not None, timestamps=timestamps, src_idx=src_idx,
                           frames=frames, box=tuple(int(v) for v in box), crop_method=method, mask=mask,
                           static=static, text=text,
                           keep=mask if not blank.any() else inside & ~blank)  # fmt: skip


def _decode_all(rec: Recording) -> np.ndarray:
    """Every frame of ``rec`` as one uint8 array (n, H, W[, 3]), n <= ``rec.n_frames``: a single
    block (the frame sources fill it in place), so no block list is joined."""
    blocks = list(rec.iter_frames(max(rec.n_frames, 1)))
    if not blocks:
        raise DataError(f"{rec.source}: no frame could be decoded")
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def refuse_burned_in(rec: Recording, crop) -> None:
    """DataError for a recording flagged BurnedInAnnotation YES whose text ingest cannot locate.

    Such a DICOM is ingested only when its ultrasound region bounds the image (``crop: auto``) or
    when the config gives a manual box (``crop: [x0, y0, x1, y1]``) that the user checked.
    """
    if rec.meta.get("burned_in_annotation") is not True or not isinstance(crop, str):
        return
    if crop == "auto" and rec.meta.get("region_box") is not None:
        return
    why = ("crop is 'none'" if crop == "none" else
           "the file has no ultrasound region (Sequence of Ultrasound Regions) to crop to")  # fmt: skip
    raise DataError(
        f"{rec.source}: {BURNED_IN_REFUSED} (patient data burned into the pixels) and {why}: refused. "
        f"To ingest it, set ingest.crop: [x0, y0, x1, y1] to a box that holds only the image "
        f"(frame width x height {rec.width} x {rec.height}), or remove the file from the sources"
    )


def colour_source(rec: Recording, path: Path) -> Recording | None:
    """The RGB-decoding copy of ``rec`` when it holds colour; None for a grey recording (decoded
    grey: faster, and exactly as without colour support).

    A DICOM holds colour when its photometric interpretation is not MONOCHROME (decoding it in
    colour costs little: the decoder makes RGB anyway). A video holds colour when its pixel format
    is not grey and one of its keyframes (the only frames decoded for this probe: cheap) has
    strongly coloured pixels.
    """
    photometric, pix_fmt = rec.meta.get("photometric"), rec.meta.get("pix_fmt")
    if photometric is not None:
        colour = not str(photometric).startswith("MONOCHROME")
    else:
        grey_format = pix_fmt is None or str(pix_fmt).startswith(("gray", "mono", "ya"))
        colour = not grey_format and _keyframes_have_colour(path)
    return rec.as_colour() if colour else None


def _keyframes_have_colour(path: Path) -> bool:
    """Whether a keyframe of the first video stream (at 1/4 size) has strongly coloured pixels."""
    scaler = VideoReformatter()  # one scaler for every keyframe (frame.reformat makes one each)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                small = scaler.reformat(frame, width=max(frame.width // 4, 2), height=max(frame.height // 4, 2),
                                        format="rgb24").to_ndarray()  # fmt: skip
                if colour_fraction(small[None]).any():
                    return True
    except (av.FFmpegError, OSError, ValueError, IndexError):
        return False
    return False


def grey(frames: np.ndarray) -> np.ndarray:
    """(t, H, W, 3) RGB -> (t, H, W) BT.601 luma; grey frames pass through."""
    if frames.ndim == 3:
        return frames
    t, h, w, _ = frames.shape
    return cv2.cvtColor(np.ascontiguousarray(frames).reshape(t * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(t, h, w)


def _sample_frames(rec: Recording, frames: np.ndarray | None) -> np.ndarray:
    """(s, H, W) grey frames spread over the recording (``REGION_SAMPLES`` at most)."""
    picks = np.linspace(0, rec.n_frames - 1, min(REGION_SAMPLES, rec.n_frames)).round().astype(int)
    picks = np.unique(picks)
    if frames is not None:
        return grey(frames[picks[picks < len(frames)]])
    blocks, start = [], 0
    for block in rec.iter_frames(BLOCK_FRAMES):
        inside = picks[(picks >= start) & (picks < start + len(block))]
        blocks.append(grey(block[inside - start]))
        start += len(block)
    if not blocks:
        raise DataError(f"{rec.source}: no frame could be decoded")
    return np.concatenate(blocks)


def _box_mask(box, height: int, width: int) -> np.ndarray:
    inside = np.zeros((height, width), bool)
    inside[box[1] : box[3], box[0] : box[2]] = True
    return inside


def _crop_box(rec: Recording, crop, sample: np.ndarray, stats=None) -> tuple[tuple, np.ndarray | None]:
    """(box, mask): the crop box in source pixels and, for "auto", the imaging mask (H, W)
    (``stats``: ``temporal_stats(sample)`` when already computed)."""
    if crop == "none":
        return (0, 0, rec.width, rec.height), None
    if crop != "auto":
        try:
            return check_box(crop, rec.height, rec.width), None
        except ValueError as exc:
            raise DataError(f"{rec.source}: ingest.crop: {exc}") from None
    if rec.meta.get("region_box") is not None:  # DICOM ultrasound region: no detection needed
        return check_box(rec.meta["region_box"], rec.height, rec.width), None
    mask = imaging_mask(sample, stats=stats)  # (H, W) or None: nothing varies
    if mask is None:
        return (0, 0, rec.width, rec.height), None
    return mask_box(mask), mask


def resampled_blocks(geo: ImagingGeometry, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """The kept frames of ``geo.src_idx``, in order, cropped to ``geo.box``, blanked outside
    ``geo.keep`` and resized (INTER_AREA) to ``size``: one (t, h, w) or (t, h, w, 3) uint8 block per
    decoded block that holds kept frames (colour stays colour: callers convert with :func:`grey`)."""
    src_idx = geo.src_idx
    blocks = [geo.frames] if geo.frames is not None else geo.src.iter_frames(BLOCK_FRAMES)
    start = pos = 0
    for block in blocks:
        stop = int(np.searchsorted(src_idx, start + len(block)))
        for lo in range(pos, stop, BLOCK_FRAMES):  # at most a block of outputs at once, however slow the source
            hi = min(lo + BLOCK_FRAMES, stop)
            yield crop_resize(block[src_idx[lo:hi] - start], geo.box, size, geo.keep)
        pos = max(pos, stop)
        start += len(block)
        if pos >= len(src_idx):
            break

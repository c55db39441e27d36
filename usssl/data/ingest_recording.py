"""Ingest of one recording: read, crop, mask, resample, flag, and write its shard.

``ingest_one`` is the top-level (spawn-safe) worker that ``usssl.data.ingest`` runs for each file;
``READERS`` maps file extensions to readers. The whole per-recording pipeline is described in
``usssl.data.ingest``'s docstring.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from usssl.data import cache as cache_io
from usssl.errors import DataError, UssslError
from usssl.io.audio import read_audio
from usssl.io.dicom import DICOM_EXTENSIONS, is_dicom_file, read_dicom
from usssl.io.nifti import NIFTI_EXTENSIONS, read_nifti
from usssl.io.recording import Recording
from usssl.io.video import VIDEO_EXTENSIONS, read_video
from usssl.privacy.region import (Box, check_box, colour_fraction, crop_resize, imaging_mask, map_points,
                                  mask_box, static_mask, temporal_stats)  # fmt: skip

log = logging.getLogger(__name__)

# extension -> reader(path, root, *, audio, audio_rate); matched on the end of the file name, so
# two-part extensions (".nii.gz") work. Standalone WAV/FLAC are narration, not recordings.
READERS: dict[str, Callable[..., Recording]] = {ext: read_video for ext in VIDEO_EXTENSIONS}
READERS |= {ext: read_dicom for ext in DICOM_EXTENSIONS}
READERS |= {ext: read_nifti for ext in NIFTI_EXTENSIONS}
REGION_SAMPLES = 60  # frames spread over a recording for the imaging-region and static-pixel detection
FROZEN_MAD = 0.5  # mean absolute grey-level difference below which a frame repeats the last one
IN_MEMORY_BYTES = 1 << 28  # recordings smaller than this are decoded once, not twice
BURNED_IN_REFUSED = "BurnedInAnnotation is YES"  # start of the reason of a refused DICOM
DOPPLER_FRACTION = 0.01  # share of coloured pixels in the region from which a frame is colour Doppler


def reader_for(path: Path) -> tuple[str, Callable[..., Recording]] | None:
    """(format name, reader) of ``path``: by its extension, else ``dicom`` when the file carries
    the DICM magic (PACS exports often have no extension); None for any other file."""
    ext = media_extension(path)
    if ext is not None:
        name = "dicom" if ext in DICOM_EXTENSIONS else "nifti" if ext in NIFTI_EXTENSIONS else ext.lstrip(".")
        return name, READERS[ext]
    if is_dicom_file(path):
        return "dicom", read_dicom
    return None


def media_extension(path: Path, extensions=None) -> str | None:
    """The extension of ``path`` among ``extensions`` (default: ``READERS``), longest match first."""
    name = Path(path).name.lower()
    for ext in sorted(READERS if extensions is None else extensions, key=len, reverse=True):
        if name.endswith(ext) and len(name) > len(ext):
            return ext
    return None


def recording_stem(path: Path) -> str:
    """The file name without its reader extension (``scan.nii.gz`` -> ``scan``; an extension-less
    DICOM keeps its whole name, ``IM0001``): the key of the label, gaze and subject tables and of
    a narration side file."""
    ext = media_extension(path)
    if ext:
        return Path(path).name[: -len(ext)]
    return Path(path).name if is_dicom_file(path) else Path(path).stem


def result_row(job: dict, status: str, reason: str, info: dict | None, source: dict | None = None) -> dict:
    """One ingest_report.csv row (``cache.REPORT_COLUMNS``), plus the shard info for the index.

    ``frames``, ``fps`` and ``duration_s`` describe the SOURCE recording (its header or
    container), from the shard's info when it was ingested, else from ``source`` (what the
    reader saw before a later step failed) when given, else empty.
    """
    if info is not None:
        frames, fps = info.get("source_frames"), info.get("source_fps")
        duration = info.get("source_duration_s", frames / fps if frames and fps else None)
    elif source is not None:
        frames, fps, duration = source["frames"], source["fps"], source["duration_s"]
    else:
        frames = fps = duration = None
    return {"source": job["source"], "status": status, "reason": reason, "frames": frames,
            "duration_s": None if duration is None else round(float(duration), 4),
            "fps": None if fps is None else round(float(fps), 4), "shard": job["shard"],
            "cached_frames": int(info["n_frames"]) if info else 0, "info": info}  # fmt: skip


def kept_frames(timestamps: np.ndarray, fps: float | None, source_fps: float | None = None) -> np.ndarray:
    """(T,) index of the source frame nearest to each output time k / fps.

    Output times cover the recording up to the end of its last frame (last timestamp + one
    source frame interval); ``fps`` None keeps every frame.
    """
    if fps is None:
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


def ingest_one(job: dict) -> dict:
    """Ingest one recording described by a ``_make_jobs`` dict (top level: spawn-safe).

    Returns its report row: ``ok``, or ``failed`` with the reason (the file cannot be read or
    decoded, or ingest refuses it); the absolute path never appears in the reason.
    """
    seen: dict = {}  # the source's frames / fps / duration, once the reader has opened it
    try:
        return result_row(job, "ok", "", _ingest(job, seen))
    except Exception as exc:  # bad input is data: recorded in the report, the run goes on
        reason = str(exc) if isinstance(exc, UssslError) else f"{type(exc).__name__}: {exc}"
        reason = reason.replace(str(Path(job["path"]).resolve()), job["source"])
        return result_row(job, "failed", reason.replace(job["path"], job["source"]), None, seen or None)


def _ingest(job: dict, seen: dict) -> dict:
    path, size = Path(job["path"]), job["size"]
    found = reader_for(path)
    if found is None:
        raise DataError(f"{path}: not a recording usssl can read (unknown extension, no DICOM magic)")
    rec = found[1](path, Path(job["root"]), audio=job["audio"], audio_rate=job["audio_rate"])
    seen.update(frames=int(rec.n_frames), fps=float(rec.fps), duration_s=float(rec.duration_s))
    geo = imaging_geometry(rec, path, job["crop"], job["fps"])
    narration = _attach_narration(rec, job)
    src_idx, box, static = geo.src_idx, geo.box, geo.static  # (T,); (x0, y0, x1, y1); (H, W) or None
    fps = float(job["fps"] or rec.fps)
    writer = cache_io.ShardWriter(Path(job["out"]), job["shard"], len(src_idx), size)
    try:
        flags, written = _write_frames(geo.src, geo.frames, src_idx, box, geo.keep, size, writer,
                                       job["drop_frozen"], job["drop_doppler"])  # fmt: skip
        if len(written) and not written.any():
            raise DataError(f"{rec.source}: every frame is flagged and dropped (ingest.drop_frozen / "
                            "ingest.drop_doppler)")  # fmt: skip
        src_idx = src_idx[: len(flags)][written]
        labels = np.full(writer.n, -1, np.int16)
        if job["labels"] is not None:
            labels = _per_frame(job["labels"], rec.n_frames, -1, np.int16)[src_idx]
        gaze = np.full((writer.n, 2), np.nan, np.float32)
        if job["gaze"] is not None:
            gaze = map_points(_per_frame(job["gaze"], rec.n_frames, np.nan, np.float64)[src_idx], box, size)
            outside = (gaze < -0.5) | (gaze > np.array([size[1], size[0]]) - 0.5)
            gaze[outside.any(axis=1)] = np.nan
        audio = None
        if job["audio"] and rec.audio is not None:
            audio = _cached_audio(rec.audio, written, fps, job["audio_rate"])
        spacing = _cached_spacing(rec.spacing_mm, box, size)  # (row, column) mm or None
        info = {"subject": job["subject"], "fps": fps, "height": int(size[0]), "width": int(size[1]),
                "has_audio": audio is not None, "has_speech": _has_speech(audio, job["audio_rate"]),
                "n_labelled": int((labels >= 0).sum()), "crop_box": list(box),
                "spacing_mm": None if spacing is None else list(spacing),
                "spacing_mm_x": None if spacing is None else spacing[1],
                "spacing_mm_y": None if spacing is None else spacing[0],
                "static_pixels": 0 if static is None else int(static.sum()),
                "colour": geo.colour, "narration_file": narration is not None,
                "n_frozen": int((flags & cache_io.FLAG_FROZEN).astype(bool).sum()),
                "n_doppler": int((flags & cache_io.FLAG_DOPPLER).astype(bool).sum()),
                "n_dropped": int((~written).sum()), "source_format": job["format"],
                "source_fps": float(rec.fps), "source_frames": int(rec.n_frames),
                "source_duration_s": float(rec.duration_s),
                "source_height": int(rec.height), "source_width": int(rec.width),
                "manufacturer": rec.meta.get("manufacturer") or None,
                "input_digest": job["input_digest"]}  # fmt: skip
        return writer.finish(audio=audio, labels=labels, gaze=gaze, flags=flags[written], info=info)
    except BaseException:
        writer.abort()
        raise


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
        keep: (H, W) bool pixels kept (``mask`` or the box, less ``static``), or None: all of the box.
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
        DataError: the recording is refused (``refuse_burned_in``), the crop box does not fit
            the frame, or no frame can be decoded.
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
    method = ("box" if not isinstance(crop, str) else "full_frame" if crop == "none" else
              "ultrasound_region" if rec.meta.get("region_box") is not None else
              "motion" if mask is not None else "full_frame")  # fmt: skip
    return ImagingGeometry(src=src, colour=colour is not None, timestamps=timestamps, src_idx=src_idx,
                           frames=frames, box=tuple(int(v) for v in box), crop_method=method, mask=mask,
                           static=static, keep=mask if static is None else inside & ~static)  # fmt: skip


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


def _attach_narration(rec: Recording, job: dict) -> str | None:
    """Use the same-named WAV/FLAC as narration when ``rec`` has no audio track; returns its source."""
    if not job["narration"] or not job["audio"] or rec.audio is not None:
        return None
    rec.audio, rec.sample_rate = read_audio(job["narration"], job["audio_rate"])
    return job["narration"]


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


def _grey(frames: np.ndarray) -> np.ndarray:
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
        return _grey(frames[picks[picks < len(frames)]])
    blocks, start = [], 0
    for block in rec.iter_frames(64):
        inside = picks[(picks >= start) & (picks < start + len(block))]
        blocks.append(_grey(block[inside - start]))
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


def _cached_spacing(spacing: tuple[float, float] | None, box, size) -> tuple[float, float] | None:
    """Source (row, column) spacing in mm -> the cached pixel's, after the crop and the resize."""
    if spacing is None:
        return None
    x0, y0, x1, y1 = box
    return float(spacing[0]) * (y1 - y0) / size[0], float(spacing[1]) * (x1 - x0) / size[1]


def _cached_audio(audio: np.ndarray, written: np.ndarray, fps: float, rate: int) -> np.ndarray:
    """The narration of the written frames: (n,) float32, sample 0 at cached frame 0.

    Without dropped frames this is the audio from the first frame for T / fps seconds (zeros where
    it is shorter). Where frames were dropped, the audio of each dropped frame's 1 / fps interval
    is cut out too, so cached frame k still sits at sample k / fps * rate.
    """
    if written.all():
        n_audio = int(round(len(written) / fps * rate))
        out = np.zeros(n_audio, np.float32)
        out[: min(n_audio, len(audio))] = audio[:n_audio]
        return out
    bounds = np.round(np.arange(len(written) + 1) * rate / fps).astype(np.int64)  # (P + 1,)
    padded = np.zeros(int(bounds[-1]), np.float32)
    padded[: min(len(padded), len(audio))] = audio[: len(padded)]
    return padded[np.repeat(written, np.diff(bounds))]


def _write_frames(rec: Recording, frames: np.ndarray | None, src_idx: np.ndarray, box, keep, size,
                  writer: cache_io.ShardWriter, drop_frozen: bool = False,
                  drop_doppler: bool = False) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Crop, blank, resize and append the kept frames.

    Returns:
        flags (P,) uint8 of every resampled frame decoded (bit 0 frozen, bit 1 colour Doppler) and
        written (P,) bool: False where the frame was dropped by ``drop_frozen`` / ``drop_doppler``.
    """
    x0, y0, x1, y1 = box
    small_keep = None  # the region in cached pixels, where colour is counted
    if keep is not None:
        small_keep = cv2.resize(keep[y0:y1, x0:x1].astype(np.uint8) * 255, (int(size[1]), int(size[0])),
                                interpolation=cv2.INTER_AREA) >= 128  # fmt: skip
    blocks = [frames] if frames is not None else rec.iter_frames(64)
    flags, written, prev, start, pos = [], [], None, 0, 0
    for block in blocks:
        stop = int(np.searchsorted(src_idx, start + len(block)))
        if stop > pos:
            small = crop_resize(block[src_idx[pos:stop] - start], box, size, keep)  # (t, h, w[, 3])
            doppler = np.zeros(len(small), bool)
            if small.ndim == 4:  # colour: flag Doppler, then grey
                doppler = colour_fraction(small, small_keep) >= DOPPLER_FRACTION
                small = _grey(small)
            ref = np.concatenate([small[:1] if prev is None else prev, small[:-1]]).astype(np.int16)
            mad = np.abs(small.astype(np.int16) - ref).mean(axis=(1, 2))  # (t,)
            frozen = mad < FROZEN_MAD
            if prev is None:
                frozen[0] = False
            drop = (frozen & drop_frozen) | (doppler & drop_doppler)
            writer.append(small[~drop])
            flags.append(frozen.astype(np.uint8) * cache_io.FLAG_FROZEN
                         | doppler.astype(np.uint8) * cache_io.FLAG_DOPPLER)  # fmt: skip
            written.append(~drop)
            prev, pos = small[-1:], stop
        start += len(block)
        if pos >= len(src_idx):
            break
    if not flags:
        return np.zeros(0, np.uint8), np.zeros(0, bool)
    return np.concatenate(flags), np.concatenate(written)


def _per_frame(table: tuple[np.ndarray, np.ndarray], n: int, fill, dtype) -> np.ndarray:
    """Spread (frame indices, values) over (n, ...) source frames, ``fill`` elsewhere."""
    index, values = table
    out = np.full((n, *values.shape[1:]), fill, dtype=dtype)
    keep = (index >= 0) & (index < n)
    out[index[keep]] = values[keep]
    return out


def _has_speech(audio: np.ndarray | None, rate: int) -> bool:
    if audio is None:
        return False
    try:
        from usssl.speech.vad import speech_fraction
    except ImportError:  # TODO(vad): usssl.speech.vad not available; has_speech stays False
        return False
    return bool(speech_fraction(audio, rate) > 0.02)

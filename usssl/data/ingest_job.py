"""Ingest of one recording: read, crop, mask, resample, flag, and write its shard.

``ingest_one`` is the top-level (spawn-safe) worker that ``usssl.data.ingest`` runs for each file's
job; the frame path it shares with ``usssl predict`` is ``usssl.data.frames``, the readers are picked
by ``usssl.io.registry``. The whole per-recording pipeline is described in ``usssl.data.ingest``'s
docstring.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from usssl.data import cache as cache_io
from usssl.config import IngestConfig
from usssl.engine.lock import die_with_parent
from usssl.engine.progress import progress as progress_bar
from usssl.errors import DataError, UssslError
from usssl.io.audio import narration_file, read_audio
from usssl.io.recording import Recording
from usssl.io.dicom import dicom_subject_id
from usssl.io.registry import reader_for, recording_stem
from usssl.io.tables import ALL_FRAMES, Tables
from usssl.io.video import checked_timing, printable, relative_source
from usssl.privacy.pseudonym import pseudonym
from usssl.data.frames import ImagingGeometry, grey, imaging_geometry, resampled_blocks
from usssl.data.shard_masks import cached_masks, cached_region, mask_file_of, source_masks
from usssl.privacy.region import colour_fraction, map_points

log = logging.getLogger(__name__)

FROZEN_MAD = 0.5  # mean absolute grey-level difference below which a frame repeats the last one
DOPPLER_FRACTION = 0.01  # share of coloured pixels in the region from which a frame is colour Doppler


@dataclass(frozen=True)
class IngestJob:
    """Everything one worker needs to ingest one recording (picklable for "spawn" workers).

    Attributes:
        path, root: the file and the ingest root it was found under (absolute or as given).
        source: ``path`` relative to ``root``: the only form of the path in reports.
        out: the cache folder; shard: the pseudonymous shard id; subject: the pseudonymous subject;
        subject_source: where the subject came from ("subjects table", "DICOM patient ID" or
        "one per recording"), for the data card.
        size, fps, audio, audio_rate, crop, drop_frozen, drop_doppler: the ingest settings.
        narration: the same-named WAV/FLAC beside the file, or None; format: the reader's name.
        labels, gaze: (frame indices, values) from the side tables, or None.
        masks: the anatomy mask file beside the recording (``usssl.io.masks``), or None.
        input_digest: what the shard is made from (``cache.input_digest``), for resuming.
    """

    path: str
    root: str
    source: str
    out: str = ""
    shard: str = ""
    subject: str = ""
    subject_source: str = ""
    size: tuple[int, int] = (64, 64)
    fps: float | None = None
    audio: bool = True
    audio_rate: int = 16000
    crop: Any = "auto"
    drop_frozen: bool = False
    drop_doppler: bool = False
    narration: str | None = None
    format: str = "unknown"
    labels: tuple | None = None
    gaze: tuple | None = None
    masks: str | None = None
    input_digest: str = ""


def ingest_one(job: IngestJob) -> dict:
    """Ingest one recording described by its job (``make_jobs``; top level: spawn-safe).

    Returns its report row: ``ok``, or ``failed`` with the reason (unreadable, undecodable, refused;
    never the absolute path), then one-line notes: what the reader repaired (``meta["notes"]``) and
    what ``CAPTURED_LOGGERS`` logged or warned meanwhile, kept off the console; ``details`` holds
    those records whole (tracebacks too) for the debug log.
    """
    seen: dict = {}  # the source's frames / fps / duration, once the reader has opened it
    notes, details = [], []  # one line each for the report; the records whole for the debug log
    with captured_records(notes, details):
        try:
            row, reason = cache_io.result_row(job, "ok", "", _ingest(job, seen, notes)), ""
        except Exception as exc:  # bad input is data: recorded in the report, the run goes on
            reason = str(exc) if isinstance(exc, UssslError) else f"{type(exc).__name__}: {exc}"
            row = cache_io.result_row(job, "failed", "", None, seen or None)
    said = [" ".join(reason.split())] if reason else []  # one line, whatever the library's message
    for note in dict.fromkeys(notes):  # pydicom logs, warns and raises the same text: say it once
        if not any(note.split(": ", 1)[-1][:80] in s for s in said):
            said.append(note)
    text = "; ".join(renamed(said, job, job.source))
    return {**row, "reason": printable(text), "details": renamed(details, job, f"shard {job.shard}")}


def renamed(texts: list[str], job: IngestJob, name: str) -> list[str]:
    """``texts`` with the job's file path (absolute or as given) replaced by ``name``, printable."""
    for path in (str(Path(job.path).resolve()), job.path):
        texts = [t.replace(path, name) for t in texts]
    return [printable(t) for t in texts]


CAPTURED_LOGGERS = ("pydicom", "libav", "av", "usssl.io", "usssl.privacy.region", "usssl.data.frames",
                    "usssl.data.shard_masks")  # the input's
_QUOTED = re.compile(r"""(?<!\w)(['"])([^'"]*?)\1(?!\w)""")  # a quoted value


def unquoted(text: str) -> str:
    """``text`` with every quoted value that holds letters replaced by '…': a library quotes the header
    value it complains about (``Invalid value for VR PN: 'Doe^Jane'``), which may name the patient."""
    return _QUOTED.sub(lambda m: f"{m[1]}…{m[1]}" if re.search("[A-Za-z]", m[2]) else m[0], text)


class _NoteHandler(logging.Handler):
    def __init__(self, notes: list[str], details: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.notes, self.details = notes, details
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split())
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and " ".join(str(exc).split())[:80] not in text:
            text += f" ({type(exc).__name__}: {' '.join(str(exc).split())})"
        ours = record.name.startswith("usssl")  # our messages hold no header values; a library's may
        self.notes.append(f"{record.name.split('.')[0]}: {text[:300] if ours else unquoted(text)[:300]}")
        self.details.append(self.format(record) if ours else unquoted(self.format(record)))


@contextmanager
def captured_records(notes: list[str], details: list[str]) -> Iterator[None]:
    """Inside the block, WARNING and worse records of ``CAPTURED_LOGGERS`` and Python warnings (but
    deprecations) become one-line ``notes`` (and full ``details``) instead of reaching the console."""
    handler = _NoteHandler(notes, details)
    loggers = [logging.getLogger(name) for name in CAPTURED_LOGGERS]
    saved = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):  # about code, not data
                warnings.simplefilter("ignore", category)
            yield
    finally:
        for logger, propagate in zip(loggers, saved):
            logger.removeHandler(handler)
            logger.propagate = propagate
    for w in caught:
        message = unquoted(" ".join(str(w.message).split()))
        if not any(message[:80] in n for n in notes):
            notes.append(f"{w.category.__name__}: {message[:300]}")
            details.append(f"{w.category.__name__} ({Path(w.filename).name}:{w.lineno}): {message}")


def _ingest(job: IngestJob, seen: dict, notes: list[str]) -> dict:
    path, size = Path(job.path), job.size
    found = reader_for(path)
    if found is None:
        raise DataError(f"{path}: not a recording usssl can read (unknown extension, no DICOM magic)")
    stated = found[1](path, Path(job.root), audio=job.audio, audio_rate=job.audio_rate)
    seen.update(frames=int(stated.n_frames), fps=float(stated.fps), duration_s=float(stated.duration_s))
    rec = checked_timing(stated)  # whatever the reader: no implausible rate, no hour-long pause
    notes.extend(rec.meta.get("notes") or [])
    geo = imaging_geometry(rec, path, job.crop, job.fps)
    narration = _attach_narration(rec, job)
    src_idx, box, static = geo.src_idx, geo.box, geo.static  # (T,); (x0, y0, x1, y1); (H, W) or None
    fps = float(job.fps or rec.fps)
    writer = cache_io.ShardWriter(Path(job.out), job.shard, len(src_idx), size)
    try:
        flags, written = _write_frames(geo, size, writer, job.drop_frozen, job.drop_doppler)
        if len(written) and not written.any():
            raise DataError(f"{rec.source}: every frame is flagged and dropped (ingest.drop_frozen / "
                            "ingest.drop_doppler)")  # fmt: skip
        src_idx = src_idx[: len(flags)][written]
        labels = np.full(writer.n, -1, np.int16)
        if job.labels is not None:
            labels = _per_frame(job.labels, rec.n_frames, -1, np.int16)[src_idx]
        gaze = np.full((writer.n, 2), np.nan, np.float32)
        if job.gaze is not None:
            gaze = map_points(_per_frame(job.gaze, rec.n_frames, np.nan, np.float64)[src_idx], box, size)
            outside = (gaze < -0.5) | (gaze > np.array([size[1], size[0]]) - 0.5)
            gaze[outside.any(axis=1)] = np.nan
        audio = None
        if job.audio and rec.audio is not None:
            audio = _cached_audio(rec.audio, written, fps, job.audio_rate)
        spacing = _cached_spacing(rec.spacing_mm, box, size)  # (row, column) mm or None
        masks = cached_masks(source_masks(job.masks, rec), src_idx, box, size)  # (T, h, w) or None
        info = {"subject": job.subject, "subject_source": job.subject_source, "fps": fps, "height": int(size[0]), "width": int(size[1]),
                "has_audio": audio is not None, "has_speech": _has_speech(audio, job.audio_rate),
                "n_labelled": int((labels >= 0).sum()), "crop_box": list(box),
                "spacing_mm": None if spacing is None else list(spacing),
                "spacing_mm_x": None if spacing is None else spacing[1],
                "spacing_mm_y": None if spacing is None else spacing[0],
                "static_pixels": 0 if static is None else int(static.sum()),
                "text_blanked_fraction": round(float(geo.text.fraction), 6) if geo.text is not None else 0.0,
                "text_heavy": bool(geo.text.heavy) if geo.text is not None else False,
                "colour": geo.colour, "narration_file": narration is not None,
                "n_frozen": int((flags & cache_io.FLAG_FROZEN).astype(bool).sum()),
                "n_doppler": int((flags & cache_io.FLAG_DOPPLER).astype(bool).sum()),
                "n_dropped": int((~written).sum()), "source_format": job.format,
                "source_fps": float(stated.fps), "source_frames": int(rec.n_frames),
                "source_duration_s": float(stated.duration_s),
                "notes": renamed(list(dict.fromkeys(notes)), job, "the file"),
                "source_height": int(rec.height), "source_width": int(rec.width),
                "manufacturer": rec.meta.get("manufacturer") or None,
                "input_digest": job.input_digest}  # fmt: skip
        return writer.finish(audio=audio, labels=labels, gaze=gaze, flags=flags[written], info=info,
                             region_mask=cached_region(geo, size), masks=masks)
    except BaseException:
        writer.abort()
        raise


def _attach_narration(rec: Recording, job: IngestJob) -> str | None:
    """Use the same-named WAV/FLAC as narration when ``rec`` has no audio track; returns its source."""
    if not job.narration or not job.audio or rec.audio is not None:
        return None
    rec.audio, rec.sample_rate = read_audio(job.narration, job.audio_rate)
    return job.narration


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


def _write_frames(geo: ImagingGeometry, size, writer: cache_io.ShardWriter, drop_frozen: bool = False,
                  drop_doppler: bool = False) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Crop, blank, resize (``resampled_blocks``), flag and append the kept frames.

    Returns:
        flags (P,) uint8 of every resampled frame decoded (bit 0 frozen, bit 1 colour Doppler) and
        written (P,) bool: False where the frame was dropped by ``drop_frozen`` / ``drop_doppler``.
    """
    x0, y0, x1, y1 = geo.box
    small_keep = None  # the region in cached pixels, where colour is counted
    if geo.keep is not None:
        small_keep = cv2.resize(geo.keep[y0:y1, x0:x1].astype(np.uint8) * 255, (int(size[1]), int(size[0])),
                                interpolation=cv2.INTER_AREA) >= 128  # fmt: skip
    flags, written, prev = [], [], None
    for small in resampled_blocks(geo, size):  # (t, h, w[, 3])
        doppler = np.zeros(len(small), bool)
        if small.ndim == 4:  # colour: flag Doppler, then grey
            doppler = colour_fraction(small, small_keep) >= DOPPLER_FRACTION
            small = grey(small)
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
        prev = small[-1:]
    if not flags:
        return np.zeros(0, np.uint8), np.zeros(0, bool)
    return np.concatenate(flags), np.concatenate(written)


def _per_frame(table: tuple[np.ndarray, np.ndarray], n: int, fill, dtype) -> np.ndarray:
    """Spread (frame indices, values) over (n, ...) source frames, ``fill`` elsewhere; a value at
    ``ALL_FRAMES`` (a recording-level label) goes to every frame."""
    index, values = table
    out = np.full((n, *values.shape[1:]), fill, dtype=dtype)
    out[:] = values[index == ALL_FRAMES][-1] if (index == ALL_FRAMES).any() else fill
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


# ----------------------------------------------------------------------------- jobs
def lone_audio_rows(audio_files: list[tuple[Path, Path]], jobs: list[IngestJob]) -> list[dict]:
    """Report rows for WAV/FLAC files that are nobody's narration (audio alone is not a shard)."""
    used = {str(Path(job.narration).resolve()) for job in jobs if job.narration}
    rows = []
    for path, root in audio_files:
        if str(path.resolve()) not in used:
            job = IngestJob(path=str(path), root=str(root), source=relative_source(path, root))
            rows.append(cache_io.result_row(job, "skipped", "audio-only file: not a recording (no frames); a WAV/FLAC "
                                "with the same name as a video, DICOM or NIfTI file beside it is used as "
                                "that recording's narration", None))  # fmt: skip
    return rows


def make_jobs(files: list[tuple[Path, Path]], tables: Tables, key: bytes, out: Path,
               cfg: IngestConfig) -> list[IngestJob]:  # fmt: skip
    """One (picklable) job per recording for the worker processes."""
    sources = [relative_source(path, root) for path, root in files]
    clashes = {s for s in sources if sources.count(s) > 1}
    jobs = []
    for (path, root), source in zip(files, sources):
        stem = recording_stem(path)
        found = reader_for(path)
        fmt = found[0] if found is not None else "unknown"
        patient_id, origin = tables.subjects.get(stem), "subjects table"
        if patient_id is None and fmt == "dicom":
            with captured_records([], []):  # pydicom's header warnings reach the report when the file is read
                patient_id, origin = dicom_subject_id(path), "DICOM patient ID"  # else StudyInstanceUID; hashed
        if patient_id is None:
            origin = "one per recording"
        subject = pseudonym(patient_id if patient_id is not None else stem, key, kind="subject")
        shard_key = str(path.resolve()) if source in clashes else source
        job = IngestJob(path=str(path), root=str(root), source=source, out=str(out),
                        shard=pseudonym(shard_key, key, kind="shard"), subject=subject, subject_source=origin,
                        size=tuple(cfg.size),
                        fps=cfg.fps, audio=cfg.audio, audio_rate=cfg.audio_rate, crop=cfg.crop,
                        drop_frozen=bool(cfg.drop_frozen), drop_doppler=bool(cfg.drop_doppler),
                        narration=narration_path(path, stem), format=fmt, labels=tables.labels.get(stem),
                        gaze=tables.gaze.get(stem), masks=mask_file_of(path, stem))  # fmt: skip
        jobs.append(replace(job, input_digest=cache_io.input_digest(job)))
    return jobs


def narration_path(path: Path, stem: str) -> str | None:
    """The same-named WAV/FLAC beside ``path`` (as a path string), or None."""
    found = narration_file(path.parent, stem)
    return str(found) if found is not None else None


def run_jobs(jobs: list[IngestJob], workers: int, progress: bool) -> list[dict]:
    """``ingest_one`` over ``jobs``, in worker processes ("spawn") when workers > 1; the workers exit
    when this process ends, however it ends (``usssl.engine.lock.die_with_parent``)."""
    results = []
    with progress_bar("ingest", len(jobs), progress, counts=True) as bar:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(ingest_one(job))
                bar.advance()
            return results
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                                 initializer=die_with_parent, initargs=(os.getpid(),)) as pool:  # fmt: skip
            futures = {pool.submit(ingest_one, job): job for job in jobs}
            for future in as_completed(futures):
                try:
                    results.append(future.result())
                except Exception as exc:  # the worker process died (e.g. a crash inside FFmpeg)
                    reason = (f"worker process failed ({exc!r}); if every file failed so, use "
                              "workers: 1 or start your script under if __name__ == '__main__'")  # fmt: skip
                    results.append(cache_io.result_row(futures[future], "failed", reason, None))
                bar.advance()
    return results

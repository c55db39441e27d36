"""Ingest: recordings in, a cache out (docs/architecture.md, "Cache").

For every recording: read it (``READERS`` by file extension), crop to the imaging region, blank
the pixels that never change inside it (calipers, markers, burned-in text: ``static_mask``),
resample to ``cfg.fps`` by nearest timestamp and to ``cfg.size``, keep the narration at
``cfg.audio_rate`` (a same-named WAV/FLAC is the narration of a recording without an audio track,
``usssl.io.audio``), flag frozen and colour-Doppler frames (optionally dropping them), carry labels
and gaze over to the kept frames, and write one shard named by a keyed hash. A DICOM with
BurnedInAnnotation YES and no ultrasound region is refused unless a manual ``crop`` box is set. Files are processed in parallel; a file that fails is recorded in
``ingest_report.csv`` and skipped. Re-running with the same settings resumes (complete shards
are kept); other settings are a :class:`CacheMismatchError` naming them. ``DATA_CARD.md`` is
written at the end (``usssl.data.datacard``).

Colour: a DICOM whose photometric interpretation is colour, and a video whose keyframes show
strongly coloured pixels, are decoded as RGB; each kept frame's share of coloured pixels in the
region sets the Doppler flag, then the frame is converted to grey (BT.601 luma). Other
recordings take the faster grey decode. Only keyframes are probed, so a video whose colour appears
after its last keyframe (a short clip switching mode mid-way) is read grey, without Doppler flags.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd

from usssl.config import IngestConfig
from usssl.data import cache as cache_io
from usssl.data.datacard import write_data_card
from usssl.data.splits import split_subjects, subject_split
from usssl.errors import CacheMismatchError, DataError, UssslError
from usssl.io.audio import AUDIO_EXTENSIONS, narration_file, read_audio
from usssl.io.dicom import DICOM_EXTENSIONS, dicom_subject_id, read_dicom
from usssl.io.nifti import NIFTI_EXTENSIONS, read_nifti
from usssl.io.recording import Recording
from usssl.io.tables import Tables, load_tables
from usssl.io.video import VIDEO_EXTENSIONS, read_video, relative_source
from usssl.privacy.pseudonym import key_check, pseudonym, subject_key
from usssl.privacy.region import (check_box, colour_fraction, crop_resize, imaging_mask, map_points,
                                  mask_box, static_mask)  # fmt: skip

log = logging.getLogger(__name__)

# extension -> reader(path, root, *, audio, audio_rate); matched on the end of the file name, so
# two-part extensions (".nii.gz") work. Standalone WAV/FLAC are narration, not recordings.
READERS: dict[str, Callable[..., Recording]] = {ext: read_video for ext in VIDEO_EXTENSIONS}
READERS |= {ext: read_dicom for ext in DICOM_EXTENSIONS}
READERS |= {ext: read_nifti for ext in NIFTI_EXTENSIONS}
REGION_SAMPLES = 60  # frames spread over a recording for the imaging-region and static-pixel detection
FROZEN_MAD = 0.5  # mean absolute grey-level difference below which a frame repeats the last one
IN_MEMORY_BYTES = 1 << 28  # recordings smaller than this are decoded once, not twice
DOPPLER_FRACTION = 0.01  # share of coloured pixels in the region from which a frame is colour Doppler
_FORMATS = {ext: "dicom" for ext in DICOM_EXTENSIONS} | {ext: "nifti" for ext in NIFTI_EXTENSIONS}
BURNED_IN_REFUSED = "BurnedInAnnotation is YES"  # start of the reason of a refused DICOM (data card)


@dataclass
class IngestSummary:
    """What an ingest produced."""

    cache_dir: Path
    n_ok: int
    n_skipped: int
    n_frames: int
    report_path: Path


def media_extension(path: Path, extensions=None) -> str | None:
    """The extension of ``path`` among ``extensions`` (default: ``READERS``), longest match first."""
    name = Path(path).name.lower()
    for ext in sorted(READERS if extensions is None else extensions, key=len, reverse=True):
        if name.endswith(ext) and len(name) > len(ext):
            return ext
    return None


def recording_stem(path: Path) -> str:
    """The file name without its reader extension (``scan.nii.gz`` -> ``scan``): the key of the
    label, gaze and subject tables and of a narration side file."""
    ext = media_extension(path)
    return Path(path).name[: -len(ext)] if ext else Path(path).stem


def find_recordings(sources: list[Path], extensions=None) -> list[tuple[Path, Path]]:
    """(file, root) for each supported file: a file is its own root's child, a folder is searched
    recursively. Hidden files are ignored; duplicates are kept once. In a synthetic corpus (a folder
    with ``corpus.json``) only ``videos/`` is read: ``dicom/`` holds the same scans again.
    ``extensions`` (default ``READERS``) selects the files, e.g. ``AUDIO_EXTENSIONS``."""
    found: dict[Path, tuple[Path, Path]] = {}
    for src in map(Path, sources):
        if src.is_file():
            if extensions is None or media_extension(src, extensions):
                found.setdefault(src.resolve(), (src, src.parent))
        elif src.is_dir():
            corpora = [c.parent for c in src.rglob("corpus.json")]
            for path in sorted(src.rglob("*")):
                if any(c in path.parents and c / "videos" not in path.parents for c in corpora):
                    continue
                if media_extension(path, extensions) and path.is_file() and not path.name.startswith("."):
                    found.setdefault(path.resolve(), (path, src))
        else:
            raise DataError(f"{src}: source not found; give existing files or folders")
    return list(found.values())


def cache_settings(cfg: IngestConfig, classes: list[str], key: bytes) -> dict:
    """The cache.json content: every setting that changes the cached data."""
    settings = cfg.model_dump(mode="json", exclude={"workers", "overwrite"})
    crop_mode = cfg.crop if isinstance(cfg.crop, str) else "manual"
    return {"cache_format": cache_io.CACHE_FORMAT, "usssl_version": version("usssl"), **settings,
            "crop_mode": crop_mode, "classes": classes, "subject_key_check": key_check(key)}  # fmt: skip


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _prepare_out(out: Path, settings: dict, overwrite: bool) -> None:
    """Check an existing cache's settings (or clear it on ``overwrite``), then write cache.json."""
    path = out / cache_io.SETTINGS_FILE
    if path.is_file():
        try:
            old, new = _flat(json.loads(path.read_text())), _flat(settings)
        except ValueError:
            raise DataError(f"{path}: unreadable cache settings; delete the cache folder") from None
        differ = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if differ and not overwrite:
            said = [f"{k} (cache: {old.get(k)!r}, now: {new.get(k)!r})" for k in differ]
            if "subject_key_check" in differ:  # never print key material, only that it differs
                said[differ.index("subject_key_check")] = "the subject key (USSSL_SUBJECT_KEY or key file)"
            raise CacheMismatchError(
                f"{out}: the cache was written with other ingest settings: {'; '.join(said)}. "
                "Use a new output folder, or set ingest.overwrite: true to rebuild it"
            )
        if overwrite:
            shutil.rmtree(out / "shards", ignore_errors=True)
            for name in (cache_io.INDEX_FILE, cache_io.SPLITS_FILE, cache_io.REPORT_FILE):
                (out / name).unlink(missing_ok=True)
    elif out.is_dir() and any(out.iterdir()):
        raise DataError(f"{out}: folder is not empty and is not a usssl cache; choose an empty folder")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    for tmp in (out / "shards").glob(".tmp-*"):  # partial shards of a killed run
        shutil.rmtree(tmp, ignore_errors=True)
    cache_io.write_json(path, settings)


def ingest(
    sources: list[Path],
    out: Path,
    cfg: IngestConfig,
    *,
    labels_csv: Path | None = None,
    gaze_csv: Path | None = None,
    subjects_csv: Path | None = None,
    progress: bool = True,
) -> IngestSummary:
    """Ingest recordings from ``sources`` (files or folders) into the cache folder ``out``.

    Side tables default to ``labels.csv``, ``gaze.csv``, ``subjects.csv`` found in a source folder.

    Raises:
        CacheMismatchError: ``out`` holds a cache made with other settings (and not overwrite).
        DataError: no source files, a malformed table, no recording ingested, too few subjects.
    """
    out = Path(out)
    files = find_recordings(sources)
    audio_files = [f for f in find_recordings(sources, AUDIO_EXTENSIONS) if f not in files]
    if not files:
        raise DataError(f"no recordings ({', '.join(sorted(READERS))}) under {[str(s) for s in sources]}")
    tables = load_tables([Path(s) for s in sources], labels_csv, gaze_csv, subjects_csv, frozenset(READERS))
    key = subject_key()
    _prepare_out(out, cache_settings(cfg, tables.classes, key), cfg.overwrite)
    jobs, results = _make_jobs(files, tables, key, out, cfg), []
    results += _lone_audio(audio_files, jobs)
    todo = []
    for job in jobs:
        info = cache_io.shard_info(out, job["shard"])
        if info is not None and info.get("input_digest") == job["input_digest"]:
            results.append(_result(job, "ok", "already cached", info))
        else:
            todo.append(job)
    results += _run(todo, cfg.workers, progress)
    return _finish(out, cfg, results)


def _lone_audio(audio_files: list[tuple[Path, Path]], jobs: list[dict]) -> list[dict]:
    """Report rows for WAV/FLAC files that are nobody's narration (audio alone is not a shard)."""
    used = {str(Path(job["narration"]).resolve()) for job in jobs if job["narration"]}
    rows = []
    for path, root in audio_files:
        if str(path.resolve()) not in used:
            job = {"source": relative_source(path, root), "shard": ""}
            rows.append(_result(job, "skipped", "audio-only file: not a recording (no frames); a WAV/FLAC "
                                "with the same name as a video, DICOM or NIfTI file beside it is used as "
                                "that recording's narration", None))  # fmt: skip
    return rows


def _make_jobs(files: list[tuple[Path, Path]], tables: Tables, key: bytes, out: Path,
               cfg: IngestConfig) -> list[dict]:  # fmt: skip
    """One plain (picklable) dict per recording for the worker processes."""
    sources = [relative_source(path, root) for path, root in files]
    clashes = {s for s in sources if sources.count(s) > 1}
    jobs, unnamed = [], 0
    for (path, root), source in zip(files, sources):
        stem = recording_stem(path)
        patient_id = tables.subjects.get(stem)
        if patient_id is None and path.suffix.lower() in DICOM_EXTENSIONS:
            patient_id = dicom_subject_id(path)  # PatientID, else StudyInstanceUID; hashed below
        unnamed += patient_id is None
        subject = pseudonym(patient_id if patient_id is not None else stem, key, kind="subject")
        shard_key = str(path.resolve()) if source in clashes else source
        job = {"path": str(path), "root": str(root), "source": source, "out": str(out),
               "shard": pseudonym(shard_key, key, kind="shard"), "subject": subject,
               "size": tuple(cfg.size), "fps": cfg.fps, "audio": cfg.audio,
               "audio_rate": cfg.audio_rate, "crop": cfg.crop,
               "drop_frozen": bool(getattr(cfg, "drop_frozen", False)),
               "drop_doppler": bool(getattr(cfg, "drop_doppler", False)),
               "narration": _narration(path, stem, root), "format": _FORMATS.get(media_extension(path), media_extension(path).lstrip(".")),
               "labels": tables.labels.get(stem), "gaze": tables.gaze.get(stem)}  # fmt: skip
        job["input_digest"] = input_digest(job)
        jobs.append(job)
    if unnamed and tables.subjects:
        log.warning("%d recording(s) have no row in subjects.csv: each is its own subject", unnamed)
    return jobs


def _narration(path: Path, stem: str, root: Path) -> str | None:
    """The same-named WAV/FLAC beside ``path`` (as a path string), or None."""
    found = narration_file(path.parent, stem)
    return str(found) if found is not None else None


def _result(job: dict, status: str, reason: str, info: dict | None) -> dict:
    n = int(info["n_frames"]) if info else 0
    return {"source": job["source"], "shard": job["shard"], "status": status, "reason": reason,
            "n_frames": n, "info": info}  # fmt: skip


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    if not enabled or total == 0:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("ingest", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task("ingest", total=total)
        yield lambda: bar.advance(task)


def _run(jobs: list[dict], workers: int, progress: bool) -> list[dict]:
    """``ingest_one`` over ``jobs``, in worker processes ("spawn") when workers > 1."""
    results = []
    with _progress_bar(progress, len(jobs)) as advance:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(ingest_one(job))
                advance()
            return results
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
            futures = {pool.submit(ingest_one, job): job for job in jobs}
            for future in as_completed(futures):
                try:
                    results.append(future.result())
                except Exception as exc:  # the worker process died (e.g. a crash inside FFmpeg)
                    reason = (f"worker process failed ({exc!r}); if every file failed so, use "
                              "workers: 1 or start your script under if __name__ == '__main__'")  # fmt: skip
                    results.append(_result(futures[future], "skipped", reason, None))
                advance()
    return results


def _finish(out: Path, cfg: IngestConfig, results: list[dict]) -> IngestSummary:
    """Write the report, splits and index; log what was skipped."""
    results.sort(key=lambda r: r["source"])
    report_path = cache_io.write_report(out, pd.DataFrame(results))
    ok = [r["info"] for r in results if r["status"] == "ok"]
    n_skipped = len(results) - len(ok)
    if not ok:
        raise DataError(f"none of the {len(results)} recordings could be ingested; see {report_path}")
    splits = split_subjects([info["subject"] for info in ok], cfg.split)
    where = subject_split(splits)
    index = pd.DataFrame(ok)
    for column in ("spacing_mm_x", "spacing_mm_y"):  # None in shard.json -> NaN
        index[column] = index[column].astype(float) if column in index else np.nan
    index["split"] = index["subject"].map(where)
    index = index.sort_values("shard").reset_index(drop=True)
    cache_io.write_json(out / cache_io.SPLITS_FILE, splits)
    cache_io.write_index(out, index)
    write_data_card(out)
    listed = set(index["shard"])
    stale = [p for p in (out / "shards").iterdir() if p.is_dir() and p.name not in listed]
    if stale:
        log.warning("%d shard folder(s) in %s belong to no current source (not indexed)", len(stale), out)
    n_frames = int(index["n_frames"].sum())
    log.info("ingested %d recording(s), %d frames, into %s", len(ok), n_frames, out)
    if n_skipped:
        log.warning("%d of %d recording(s) skipped; reasons in %s", n_skipped, len(results), report_path)
    return IngestSummary(out, len(ok), n_skipped, n_frames, report_path)


def input_digest(job: dict) -> str:
    """What a shard was made from (file size and time, subject, labels, gaze, narration file), for
    resuming."""
    stat = os.stat(job["path"])
    h = hashlib.sha256(json.dumps([job["source"], job["subject"], stat.st_size, stat.st_mtime_ns]).encode())
    if job.get("narration"):
        side = os.stat(job["narration"])
        h.update(json.dumps(["narration", side.st_size, side.st_mtime_ns]).encode())
    for table in (job["labels"], job["gaze"]):
        for array in table or ():
            h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- one recording
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
    """Ingest one recording described by a ``_make_jobs`` dict (top level: spawn-safe)."""
    try:
        return _result(job, "ok", "", _ingest(job))
    except Exception as exc:  # bad input is data: recorded in the report, the run goes on
        reason = str(exc) if isinstance(exc, UssslError) else f"{type(exc).__name__}: {exc}"
        reason = reason.replace(str(Path(job["path"]).resolve()), job["source"])
        return _result(job, "skipped", reason.replace(job["path"], job["source"]), None)


def _ingest(job: dict) -> dict:
    path, size = Path(job["path"]), job["size"]
    rec = READERS[media_extension(path)](path, Path(job["root"]), audio=job["audio"],
                                         audio_rate=job["audio_rate"])  # fmt: skip
    refuse_burned_in(rec, job["crop"])
    narration = _attach_narration(rec, job)
    colour = colour_source(rec, path)  # the RGB recording, or None: decode grey
    src = colour if colour is not None else rec
    timestamps = rec.timestamps if rec.timestamps is not None else np.arange(rec.n_frames) / rec.fps
    src_idx = kept_frames(timestamps, job["fps"], rec.fps)  # (T,)
    fps = float(job["fps"] or rec.fps)
    frames = None
    if rec.n_frames * rec.height * rec.width * (3 if colour is not None else 1) <= IN_MEMORY_BYTES:
        blocks = list(src.iter_frames(64))
        if not blocks:
            raise DataError(f"{rec.source}: no frame could be decoded")
        frames = np.concatenate(blocks)  # (n, H, W) or (n, H, W, 3): decode once
    sample = _sample_frames(src, frames)  # (s, H, W) grey, spread over the recording
    box, mask = _crop_box(rec, job["crop"], sample)
    inside = mask if mask is not None else _box_mask(box, rec.height, rec.width)
    static = static_mask(sample, inside)  # (H, W) overlay pixels to blank, or None
    keep = mask if static is None else inside & ~static
    writer = cache_io.ShardWriter(Path(job["out"]), job["shard"], len(src_idx), size)
    try:
        flags, written = _write_frames(src, frames, src_idx, box, keep, size, writer,
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
                "colour": colour is not None, "narration_file": narration is not None,
                "n_frozen": int((flags & cache_io.FLAG_FROZEN).astype(bool).sum()),
                "n_doppler": int((flags & cache_io.FLAG_DOPPLER).astype(bool).sum()),
                "n_dropped": int((~written).sum()), "source_format": job["format"],
                "source_fps": float(rec.fps), "source_frames": int(rec.n_frames),
                "source_height": int(rec.height), "source_width": int(rec.width),
                "manufacturer": rec.meta.get("manufacturer") or None,
                "input_digest": job["input_digest"]}  # fmt: skip
        return writer.finish(audio=audio, labels=labels, gaze=gaze, flags=flags[written], info=info)
    except BaseException:
        writer.abort()
        raise


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
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"
            for frame in container.decode(stream):
                small = frame.reformat(width=max(frame.width // 4, 2), height=max(frame.height // 4, 2),
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


def _crop_box(rec: Recording, crop, sample: np.ndarray) -> tuple[tuple, np.ndarray | None]:
    """(box, mask): the crop box in source pixels and, for "auto", the imaging mask (H, W)."""
    if crop == "none":
        return (0, 0, rec.width, rec.height), None
    if crop != "auto":
        try:
            return check_box(crop, rec.height, rec.width), None
        except ValueError as exc:
            raise DataError(f"{rec.source}: ingest.crop: {exc}") from None
    if rec.meta.get("region_box") is not None:  # DICOM ultrasound region: no detection needed
        return check_box(rec.meta["region_box"], rec.height, rec.width), None
    mask = imaging_mask(sample)  # (H, W) or None: nothing varies
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

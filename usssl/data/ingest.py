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

import numpy as np
import pandas as pd

from usssl.config import IngestConfig
from usssl.data import cache as cache_io
from usssl.data.datacard import write_data_card
from usssl.data.ingest_recording import (  # noqa: F401 (REGION_SAMPLES, kept_frames: public API)
    READERS, REGION_SAMPLES, ingest_one, kept_frames, media_extension, recording_stem, result_row)
from usssl.data.splits import split_subjects, subject_split
from usssl.errors import CacheMismatchError, DataError
from usssl.io.audio import AUDIO_EXTENSIONS, narration_file
from usssl.io.dicom import DICOM_EXTENSIONS, dicom_subject_id
from usssl.io.nifti import NIFTI_EXTENSIONS
from usssl.io.tables import Tables, load_tables
from usssl.io.video import relative_source
from usssl.privacy.pseudonym import key_check, pseudonym, subject_key

log = logging.getLogger(__name__)

_FORMATS = {ext: "dicom" for ext in DICOM_EXTENSIONS} | {ext: "nifti" for ext in NIFTI_EXTENSIONS}


@dataclass
class IngestSummary:
    """What an ingest produced."""

    cache_dir: Path
    n_ok: int
    n_skipped: int
    n_frames: int
    report_path: Path




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
            results.append(result_row(job, "ok", "already cached", info))
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
            rows.append(result_row(job, "skipped", "audio-only file: not a recording (no frames); a WAV/FLAC "
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
                    results.append(result_row(futures[future], "skipped", reason, None))
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

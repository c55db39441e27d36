"""Ingest: recordings in, a cache out (docs/architecture.md, "Cache").

For every recording: read it (``READERS`` by file extension; a file without one is read as DICOM
when it carries the ``DICM`` magic), crop to the imaging region, blank the pixels that never
change inside it (calipers, markers, burned-in text: ``static_mask``),
resample to ``cfg.fps`` by nearest timestamp and to ``cfg.size``, keep the narration at
``cfg.audio_rate`` (a same-named WAV/FLAC is the narration of a recording without an audio track,
``usssl.io.audio``), flag frozen and colour-Doppler frames (optionally dropping them), carry labels
and gaze over to the kept frames, and write one shard named by a keyed hash. A DICOM with
BurnedInAnnotation YES and no ultrasound region is refused unless a manual ``crop`` box is set.
Files are processed in parallel; a file that fails is recorded in ``ingest_report.csv`` (status
``failed`` and the reason; columns in ``usssl.data.cache``) and the run goes on. A cluster array
job splits one corpus with ``part=(K, N)`` and joins the parts with ``merge_parts``. Re-running
with the same settings resumes (complete shards are kept); other settings are a
:class:`CacheMismatchError` naming them. ``DATA_CARD.md`` is written at the end
(``usssl.data.datacard``).

Colour: a DICOM whose photometric interpretation is colour, and a video whose keyframes show
strongly coloured pixels, are decoded as RGB; each kept frame's share of coloured pixels in the
region sets the Doppler flag, then the frame is converted to grey (BT.601 luma). Other
recordings take the faster grey decode. Only keyframes are probed, so a video whose colour appears
after its last keyframe (a short clip switching mode mid-way) is read grey, without Doppler flags.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from usssl.config import IngestConfig, SplitConfig
from usssl.data import cache as cache_io
from usssl.engine.files import replace_atomic, write_json_atomic
from usssl.engine.lock import LockError, folder_lock, held_message, live_holder
from usssl.data.datacard import write_data_card
from usssl.data.frames import REGION_SAMPLES, kept_frames  # noqa: F401 (public API of ingest)
from usssl.data.cache import input_digest  # noqa: F401 (public API of ingest)
from usssl.data.ingest_job import lone_audio_rows, make_jobs, run_jobs
from usssl.io.registry import READERS, recording_stem
from usssl.data.sources import find_recordings  # noqa: F401 (public API of ingest)
from usssl.data.splits import (class_subject_counts, drop_duplicates, split_subjects, subject_order_keys, subject_split,
                                subject_strata, warn_thin_classes)
from usssl.errors import CacheMismatchError, ConfigError, DataError
from usssl.io.audio import AUDIO_EXTENSIONS
from usssl.io.tables import Tables, check_subject_rows, check_tables, load_tables
from usssl.privacy.pseudonym import key_check, subject_key

log = logging.getLogger(__name__)

INGEST_LOCK = ".usssl-ingest.lock"  # in the cache folder while an ingest or merge writes it


@dataclass
class IngestSummary:
    """What an ingest produced. ``n_skipped`` counts every input not in the cache (status
    ``skipped`` or ``failed``); ``n_failed`` those that failed (unreadable, unsupported, refused);
    ``n_duplicates`` the skipped ones that repeat another recording's frames."""

    cache_dir: Path
    n_ok: int
    n_skipped: int
    n_frames: int
    report_path: Path
    n_failed: int = 0
    n_duplicates: int = 0


def cache_settings(cfg: IngestConfig, tables: Tables, key: bytes) -> dict:
    """The cache.json content: every setting that changes the cached data (``label_level`` only
    for a recording-level label table, so older caches keep matching)."""
    settings = cfg.model_dump(mode="json", exclude={"workers", "overwrite"})
    crop_mode = cfg.crop if isinstance(cfg.crop, str) else "manual"
    level = {"label_level": "recording"} if tables.label_level == "recording" else {}
    return {"cache_format": cache_io.CACHE_FORMAT, "usssl_version": version("usssl"), **settings,
            "crop_mode": crop_mode, "classes": tables.classes, **level, "subject_key_check": key_check(key)}  # fmt: skip


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _prepare_out(out: Path, settings: dict, overwrite: bool, sharded: bool = False) -> None:
    """Check an existing cache's settings (or clear it on ``overwrite``), then write cache.json.

    ``sharded``: one machine of ``--shard K/N``; the others may be writing into ``out`` at the same
    time, so nothing is cleared and a folder holding only their shards and parts is accepted.
    """
    path = out / cache_io.SETTINGS_FILE
    if sharded and overwrite:
        raise DataError(f"{out}: ingest.overwrite cannot be combined with --shard (every machine would "
                        "clear the others' shards); empty the cache folder once before the array job")  # fmt: skip
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
            shutil.rmtree(out / cache_io.PARTS_DIR, ignore_errors=True)
            for name in (cache_io.INDEX_FILE, cache_io.SPLITS_FILE, cache_io.REPORT_FILE, cache_io.UNMATCHED_FILE):
                (out / name).unlink(missing_ok=True)
        elif not differ:
            settings = None  # already there: leave the file alone (other machines may read it)
    elif out.is_dir() and any(not (sharded and _part_of_a_cache(p.name)) and INGEST_LOCK[:-5] not in p.name
                              for p in out.iterdir()):  # fmt: skip
        raise DataError(f"{out}: folder is not empty and is not a usssl cache; choose an empty folder")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    if not sharded:
        for tmp in (out / "shards").glob(".tmp-*"):  # partial shards of a killed run
            shutil.rmtree(tmp, ignore_errors=True)
    if settings is not None:
        write_json_atomic(path, settings)


def _part_of_a_cache(name: str) -> bool:
    """What the other machines of a sharded ingest may already have written into the folder."""
    return name in ("shards", cache_io.PARTS_DIR, cache_io.SETTINGS_FILE) or name.startswith(".tmp-")


def parse_part(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N (the ``--shard`` option).

    Raises:
        ConfigError: not of that form.
    """
    try:
        k, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected K/N, e.g. --shard 3/8 (part 3 of 8)") from None
    if not 1 <= k <= n:
        raise ConfigError(f"--shard {text!r}: K must be between 1 and N (parts are numbered from 1)")
    return k, n


def ingest(
    sources: list[Path],
    out: Path,
    cfg: IngestConfig,
    *,
    labels_csv: Path | None = None,
    gaze_csv: Path | None = None,
    subjects_csv: Path | None = None,
    progress: bool = True,
    part: tuple[int, int] | None = None,
    allow_unmatched_labels: bool = False,
    subject_per_recording: bool = False,
    min_subjects_per_class: int = 2,
) -> IngestSummary:
    """Ingest recordings from ``sources`` (files or folders) into the cache folder ``out``.

    Side tables default to ``labels.csv``, ``gaze.csv``, ``subjects.csv`` found in a source folder.
    Their rows must match the recordings (``usssl.io.tables.check_tables``; the two switches are
    ``data.allow_unmatched_labels`` and ``data.subject_per_recording``); a class labelled in fewer
    than ``min_subjects_per_class`` subjects (the pipeline passes its fold count) gets a warning.

    ``part=(K, N)`` (a cluster array job, ``--shard K/N``): the inputs sorted by source path are
    dealt round-robin over N parts and only part K's are ingested; their report and index rows go to
    ``parts/`` (``cache.part_names``), and ``merge_parts`` writes the final index, splits, report
    and data card once every part is done. Every machine must see the same sources and settings.

    One ingest writes into a cache at a time (``ingest_lock``). Recordings with the same frames
    under several names are cached once (``drop_duplicates``); with fewer than two subjects every
    recording goes to train, with a warning (``splits.require_test_split`` stops stages that need
    a test split).

    Raises:
        CacheMismatchError: ``out`` holds a cache made with other settings (and not overwrite).
        DataError: no source files, a malformed table, no recording ingested.
        LockError: another ingest (or a part of a sharded one) is writing into ``out``.
    """
    out = Path(out)
    k, n = part or (1, 1)
    files = find_recordings(sources)
    audio_files = [f for f in find_recordings(sources, AUDIO_EXTENSIONS) if f not in files]
    if not files:
        raise DataError(f"no recordings ({', '.join(sorted(READERS))}, or extension-less DICOM) under "
                        f"{[str(s) for s in sources]}")  # fmt: skip
    tables = load_tables([Path(s) for s in sources], labels_csv, gaze_csv, subjects_csv, frozenset(READERS))
    checked = check_tables(tables, [recording_stem(path) for path, _ in files], allow_unmatched=allow_unmatched_labels)
    key = subject_key()
    with ingest_lock(out, part):
        _prepare_out(out, cache_settings(cfg, tables, key), cfg.overwrite, sharded=part is not None)
        if checked.unmatched:
            path = out / cache_io.UNMATCHED_FILE
            replace_atomic(path, lambda tmp: checked.report().to_csv(tmp, index=False), mode=0o600)  # names files
            log.warning("the unmatched table rows are listed in %s", path)
        jobs = sorted(make_jobs(files, tables, key, out, cfg), key=lambda j: (j.source, j.path))
        results = lone_audio_rows(audio_files, jobs)[k - 1 :: n]
        todo = []
        for job in jobs[k - 1 :: n]:
            info = cache_io.shard_info(out, job.shard)
            if info is not None and info.get("input_digest") == job.input_digest:
                reason = "; ".join(["already cached", *info.get("notes", [])])
                results.append(cache_io.result_row(job, "ok", reason, info))
            else:
                todo.append(job)
        results += run_jobs(todo, cfg.workers, progress)
        if tables.has_subject_table:
            _check_subject_rows(jobs[k - 1 :: n], results, subject_per_recording)
        for row in results:
            for detail in row.get("details", ()):
                log.debug("%s", detail)  # what a library logged while reading; the report has one line
        report, index = _report(results), _index(results)
        if part is None:
            return _finish(out, cfg.split, report, index, min_subjects_per_class)
        parts = out / cache_io.PARTS_DIR
        parts.mkdir(exist_ok=True)
        index_name, report_name = cache_io.part_names(k, n)
        report_path = cache_io.write_report(parts, report, report_name)
        replace_atomic(parts / index_name, lambda tmp: index.to_parquet(tmp, index=False))
    summary = _summary(out, report, index, report_path)
    log.info("part %d/%d: %d recording(s) ingested, %d not; merge with `usssl ingest --merge %s` once "
             "every part is done", k, n, summary.n_ok, summary.n_skipped, out)  # fmt: skip
    if summary.n_failed and not summary.n_ok:
        raise DataError(f"part {k}/{n}: none of its {summary.n_failed} recording(s) could be ingested; "
                        f"see {report_path}")  # fmt: skip
    return summary


def _check_subject_rows(jobs: list, results: list[dict], subject_per_recording: bool) -> None:
    """``check_subject_rows`` over the ingested recordings without a subjects-table row, but a copy
    of a recording that has one (the same frames: ``drop_duplicates`` keeps one of them)."""
    info = {row["shard"]: row.get("info") or {} for row in results if row["status"] == "ok"}
    listed = {info[job.shard].get("frame_digest") for job in jobs
              if job.shard in info and job.subject_source == "subjects table"}  # fmt: skip
    without = [job for job in jobs if job.shard in info and job.subject_source != "subjects table"
               and info[job.shard].get("frame_digest", job.shard) not in listed]  # fmt: skip
    check_subject_rows([recording_stem(Path(job.path)) for job in without],
                       sum(job.format == "dicom" for job in without), subject_per_recording)  # fmt: skip


@contextmanager
def ingest_lock(out: Path, part: tuple[int, int] | None = None, what: str = "usssl ingest") -> Iterator[None]:
    """Hold the cache's ingest lock for the block: ``INGEST_LOCK`` for an ingest or a merge, a lock of
    its own for part K/N of a sharded ingest (the parts run at the same time by design); a part
    refuses while the whole cache's lock is held, and an ingest or merge while a part's is.

    Raises:
        LockError: another ingest holds ``out``; the message names it (pid, host, start time).
    """
    out.mkdir(parents=True, exist_ok=True)
    name = INGEST_LOCK if part is None else f".usssl-ingest-{part[0]}-of-{part[1]}.lock"
    with folder_lock(out / name, what if part is None else f"{what} --shard {part[0]}/{part[1]}"):
        for other in [out / INGEST_LOCK] if part else sorted(out.glob(".usssl-ingest-*-of-*.lock")):
            holder = live_holder(other)
            if holder is not None:
                raise LockError(held_message(other, holder))
        yield


def merge_parts(out: Path) -> IngestSummary:
    """Join the partial indexes and reports of ``ingest(..., part=(K, N))`` into the final cache.

    The subject-level split is computed once, on the merged index, with the split settings stored
    in cache.json; the result is the cache an unsharded ingest of the same sources writes.

    Raises:
        DataError: ``out`` is not a cache, holds no parts, parts of different N, or a part missing.
        LockError: an ingest into ``out`` (or one of its parts) is still running.
    """
    out = Path(out)
    settings_path = out / cache_io.SETTINGS_FILE
    if not settings_path.is_file():
        raise DataError(f"{out}: not a usssl cache (no {cache_io.SETTINGS_FILE}); run "
                        "`usssl ingest SRC --out CACHE --shard K/N` on every machine first")  # fmt: skip
    with ingest_lock(out, what="usssl ingest --merge"):
        return _merge_parts(out)


def _merge_parts(out: Path) -> IngestSummary:
    settings_path, parts = out / cache_io.SETTINGS_FILE, out / cache_io.PARTS_DIR
    found: dict[int, set[int]] = {}
    for path in parts.glob("index-*-of-*.parquet"):
        k, n = (int(v) for v in path.name[len("index-") : -len(".parquet")].split("-of-"))
        found.setdefault(n, set()).add(k)
    if not found:
        raise DataError(f"{out}: no partial indexes in {parts}; run `usssl ingest ... --shard K/N` first")
    if len(found) > 1:
        raise DataError(f"{parts}: parts of different --shard totals N = {sorted(found)}; delete the "
                        "stale ones (or the folder) and re-run the array job")  # fmt: skip
    (n, have), = found.items()
    names = {k: cache_io.part_names(k, n) for k in range(1, n + 1)}
    missing = [k for k in range(1, n + 1) if k not in have or not (parts / names[k][1]).is_file()]
    if missing:
        raise DataError(f"{out}: part(s) {', '.join(f'{k}/{n}' for k in missing)} missing (no "
                        f"{cache_io.PARTS_DIR}/{names[missing[0]][0]} or its report); run "
                        f"`usssl ingest ... --shard K/{n}` for them, then merge again")  # fmt: skip
    indexes = [pd.read_parquet(parts / names[k][0]) for k in range(1, n + 1)]
    index = pd.concat([i for i in indexes if len(i)], ignore_index=True) if any(len(i) for i in indexes) else indexes[0]
    report = pd.concat([pd.read_csv(parts / names[k][1], dtype={"reason": str, "shard": str})
                        for k in range(1, n + 1)], ignore_index=True)  # fmt: skip
    report[["reason", "shard"]] = report[["reason", "shard"]].fillna("")
    report = report.sort_values(["source", "shard"], kind="stable").reset_index(drop=True)
    if index["shard"].duplicated().any() or report["source"].duplicated().any():
        raise DataError(f"{parts}: a recording appears in two parts (sources changed between machines?); "
                        "delete the folder's parts and re-run the array job with the same sources")  # fmt: skip
    for tmp in (out / "shards").glob(".tmp-*"):  # partial shards of a killed part
        shutil.rmtree(tmp, ignore_errors=True)
    settings = json.loads(settings_path.read_text())
    return _finish(out, SplitConfig.model_validate(settings.get("split", {})), report, index)


def _report(results: list[dict]) -> pd.DataFrame:
    """The report rows (``cache.REPORT_COLUMNS``), sorted by source."""
    columns = cache_io.REPORT_COLUMNS
    report = pd.DataFrame([{c: r[c] for c in columns} for r in results], columns=columns)
    return report.sort_values(["source", "shard"], kind="stable").reset_index(drop=True)


def _index(results: list[dict]) -> pd.DataFrame:
    """Index rows (``INDEX_COLUMNS`` but ``split``) of the ingested recordings, sorted by shard."""
    columns = [c for c in cache_io.INDEX_COLUMNS if c != "split"]
    index = pd.DataFrame([r["info"] for r in results if r["status"] == "ok"])
    if index.empty:
        return pd.DataFrame(columns=columns)
    for column in ("spacing_mm_x", "spacing_mm_y"):  # None in shard.json -> NaN
        index[column] = index[column].astype(float) if column in index else np.nan
    return index[columns].sort_values("shard").reset_index(drop=True)


def _summary(out: Path, report: pd.DataFrame, index: pd.DataFrame, report_path: Path) -> IngestSummary:
    n_ok = int((report["status"] == "ok").sum())
    n_frames = int(index["n_frames"].sum()) if len(index) else 0
    repeats = (report["status"] == "skipped") & report["reason"].astype(str).str.startswith("duplicate of ")
    return IngestSummary(out, n_ok, len(report) - n_ok, n_frames, report_path,
                         int((report["status"] == "failed").sum()), int(repeats.sum()))  # fmt: skip


def _finish(out: Path, split: SplitConfig, report: pd.DataFrame, index: pd.DataFrame,
            min_subjects_per_class: int = 2) -> IngestSummary:  # fmt: skip
    """Write the report, splits, index and data card; log what was not ingested."""
    frames = dict(zip(index["shard"], cache_io.frame_digests(out, index)))  # shard -> digest of its frames alone
    index, report, repeats = drop_duplicates(index, report, list(frames.values()))  # one copy of each recording
    report_path = cache_io.write_report(out, report)
    if index.empty:
        raise DataError(f"none of the {len(report)} recordings could be ingested; see {report_path}")
    classes = json.loads((out / cache_io.SETTINGS_FILE).read_text()).get("classes", [])
    labels = [(row.subject, np.load(cache_io.shard_dir(out, row.shard) / "labels.npy")) for row in index.itertuples()]
    keys = subject_order_keys(index["subject"], [frames[s] for s in index["shard"]])  # the data's order, not the key's
    strata = subject_strata(labels, classes)
    splits = split_subjects(index["subject"].tolist(), split, strata,  # stratified by label
                            train_only_below_two=True, keys=keys)  # fmt: skip
    warn_thin_classes(class_subject_counts(labels, classes), min_subjects_per_class, "at ingest")
    index = index.assign(split=index["subject"].map(subject_split(splits)))
    index = index.sort_values("shard").reset_index(drop=True)
    write_json_atomic(out / cache_io.SPLITS_FILE, splits)
    cache_io.write_index(out, index)
    write_data_card(out)
    listed = set(index["shard"]) | set(repeats)  # a repeat's shard stays, so a resume need not redo it
    stale = [p for p in (out / "shards").iterdir() if p.is_dir() and p.name not in listed]
    if stale:
        log.warning("%d shard folder(s) in %s belong to no current source (not indexed)", len(stale), out)
    summary = _summary(out, report, index, report_path)
    log.info("ingested %d recording(s), %d frames, into %s", summary.n_ok, summary.n_frames, out)
    if summary.n_duplicates:
        log.warning("%d recording(s) have the same frames as another under a different name (copies, links): "
                    "each set is cached once; the repeats are listed as skipped in %s", summary.n_duplicates,
                    report_path)  # fmt: skip
    if summary.n_skipped:
        log.warning("%d of %d input(s) not ingested (%d failed); reasons in %s", summary.n_skipped,
                    len(report), summary.n_failed, report_path)  # fmt: skip
    noted = int(((report["status"] == "ok") & ~report["reason"].isin(["", "already cached"])).sum())
    if noted:
        log.warning("%d ingested recording(s) have notes (a header repaired, a decoder's message) in the "
                    "reason column of %s", noted, report_path)  # fmt: skip
    return summary

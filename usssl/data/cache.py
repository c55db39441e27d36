"""The ingested cache: one shard per recording, an index, the splits and the ingest settings.

Layout (docs/architecture.md)::

    CACHE/cache.json          ingest settings, classes, audio_rate, usssl version
          index.parquet       one row per recording (INDEX_COLUMNS), no source paths or names
          splits.json         {"train": [subject, ...], "val": [...], "test": [...]}
          ingest_report.csv   REPORT_COLUMNS, one row per input (stays in this folder)
          parts/              index-K-of-N.parquet, ingest_report-K-of-N.csv of ``--shard K/N``
          shards/<id>/frames.npy  uint8 (T, H, W)      labels.npy int16 (T,), -1 unlabelled
                      audio.npy   float32 (N,)         gaze.npy   float32 (T, 2), NaN absent
                      flags.npy   uint8 (T,)           shard.json the shard's index row
                      region_mask.npy uint8 (H, W)     masks.npy  uint8 (T, H, W), where the dataset
                                                                  has anatomy masks
          DATA_CARD.md        counts, settings and de-identification of this cache (no paths)
          unmatched_table_rows.csv  label/gaze rows naming no recording (allow_unmatched_labels)

ingest_report.csv: ``source`` (path relative to the ingest root), ``status`` (``ok``: in the
cache; ``skipped``: not a recording, e.g. a WAV/FLAC nobody's narration, or a duplicate of another
input's frames; ``failed``: unreadable, unsupported or refused), ``reason`` (for ``ok`` rows: notes
on repaired headers and library messages), then the SOURCE recording's ``frames``, ``duration_s``
and ``fps`` (as its header or container states them, or its data where the header lies; empty
when it could not be opened), the ``shard`` id and the number of ``cached_frames``.

shard.json also holds ``frame_digest`` (sha256 of the cached frames alone: identical for the same
clip under two names) and ``notes`` (the report's notes for it, with no file names).

``region_mask.npy`` is 1 inside the imaging region, ``masks.npy`` 1 on the anatomy, both in cached
pixels (``usssl.data.shard_masks``); ``shard.json`` says ``has_masks``.

flags.npy bits: ``FLAG_FROZEN`` (1) frozen/duplicate frame, ``FLAG_DOPPLER`` (2) colour Doppler.
``spacing_mm_x`` / ``spacing_mm_y`` are the cached pixel's width / height in mm (after crop and
resize), NaN when the source states no physical spacing.

Every write is atomic: a shard is built in ``shards/.tmp-<id>/`` and renamed into place, and the
json/parquet/csv files are written to a temporary name and ``os.replace``d, so a killed ingest
leaves either a whole shard or none. A shard directory with ``shard.json`` is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from usssl.engine.files import replace_atomic
from usssl.errors import DataError

CACHE_FORMAT = 3  # 2: static pixels inside the region blanked, Doppler flag, spacing_mm columns;
# 3: region_mask.npy per shard, masks.npy (anatomy) where the dataset has them, one frame per still
INDEX_COLUMNS = [
    "shard", "subject", "split", "fps", "n_frames", "height", "width",
    "has_audio", "has_speech", "n_labelled", "digest", "spacing_mm_x", "spacing_mm_y",
]  # fmt: skip
OPTIONAL_COLUMNS = {"spacing_mm_x": np.nan, "spacing_mm_y": np.nan}  # filled in when a writer omits them
FLAG_FROZEN, FLAG_DOPPLER = 1, 2  # flags.npy bits: frozen/duplicate frame, colour Doppler frame
DATA_CARD_FILE = "DATA_CARD.md"
REPORT_COLUMNS = ["source", "status", "reason", "frames", "duration_s", "fps", "shard", "cached_frames", "audio_kept",
                  "text_blanked_pct", "text_heavy"]
UNMATCHED_FILE = "unmatched_table_rows.csv"  # data.allow_unmatched_labels: the table rows left out (0600)
PARTS_DIR = "parts"  # partial indexes and reports of a sharded ingest (``--shard K/N``)
SETTINGS_FILE, INDEX_FILE, SPLITS_FILE, REPORT_FILE = (
    "cache.json", "index.parquet", "splits.json", "ingest_report.csv",
)  # fmt: skip


# ----------------------------------------------------------------------------- writing
def write_index(root: Path, index: pd.DataFrame) -> None:
    """Write ``index.parquet`` atomically (columns ``INDEX_COLUMNS``, in that order; missing
    ``OPTIONAL_COLUMNS`` are filled with their default)."""
    index = with_optional_columns(index)
    replace_atomic(Path(root) / INDEX_FILE, lambda tmp: index[INDEX_COLUMNS].to_parquet(tmp, index=False))


def with_optional_columns(index: pd.DataFrame) -> pd.DataFrame:
    missing = {k: v for k, v in OPTIONAL_COLUMNS.items() if k not in index.columns}
    return index.assign(**missing) if missing else index


def write_report(root: Path, report: pd.DataFrame, name: str = REPORT_FILE) -> Path:
    """Write the rows of ``report`` (``REPORT_COLUMNS``) to ``root/name`` atomically; returns the path.

    The file is UTF-8; rows name files through ``usssl.io.video.printable``.
    """
    path = Path(root) / name
    report = report.reindex(columns=REPORT_COLUMNS).astype({"frames": "Int64", "cached_frames": "Int64"})
    replace_atomic(path, lambda tmp: report.to_csv(tmp, index=False), mode=0o600)  # it names the sources
    return path


def result_row(job, status: str, reason: str, info: dict | None, source: dict | None = None) -> dict:
    """One ingest_report.csv row (``REPORT_COLUMNS``) of ``job`` (a ``usssl.data.ingest_job.IngestJob``),
    plus the shard info for the index; the source and reason as :func:`usssl.io.video.printable`.

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
    from usssl.io.video import printable  # lazily: reading a cache needs no PyAV

    return {"source": printable(job.source), "status": status, "reason": printable(reason),
            "frames": frames,
            "duration_s": None if duration is None else round(float(duration), 4),
            "fps": None if fps is None else round(float(fps), 4), "shard": job.shard,
            "cached_frames": int(info["n_frames"]) if info else 0,
            "audio_kept": bool(info["has_audio"]) if info else None,  # narration can hold spoken names
            "text_blanked_pct": round(100 * info.get("text_blanked_fraction", 0.0), 3) if info else None,
            "text_heavy": bool(info.get("text_heavy", False)) if info else None,  # check the recording
            "info": info}  # fmt: skip


def input_digest(job) -> str:
    """What a shard was made from (file size and time, subject, labels, gaze, narration and mask files), for
    resuming: ``job`` is a ``usssl.data.ingest_job.IngestJob``; its digest is in ``shard.json``."""
    stat = os.stat(job.path)
    h = hashlib.sha256(json.dumps([job.source, job.subject, stat.st_size, stat.st_mtime_ns]).encode())
    for kind, side_file in (("narration", job.narration), ("masks", getattr(job, "masks", None))):
        if side_file:
            side = os.stat(side_file)
            h.update(json.dumps([kind, side.st_size, side.st_mtime_ns]).encode())
    for table in (job.labels, job.gaze):
        for array in table or ():
            h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def part_names(k: int, n: int) -> tuple[str, str]:
    """(partial index, partial report) file names of part ``k`` of ``n``, inside ``PARTS_DIR``."""
    return f"index-{k}-of-{n}.parquet", f"ingest_report-{k}-of-{n}.csv"


def shard_dir(root: Path, shard_id: str) -> Path:
    return Path(root) / "shards" / shard_id


def frame_digests(root: Path, index: pd.DataFrame) -> list[str]:
    """Each indexed shard's ``frame_digest`` (of its cached frames alone; the index digest for a shard
    written before it existed), in the index's order."""
    return [(shard_info(root, s) or {}).get("frame_digest") or d for s, d in zip(index["shard"], index["digest"])]


def shard_info(root: Path, shard_id: str) -> dict | None:
    """The ``shard.json`` of a complete shard, or None when the shard is missing or partial."""
    path = shard_dir(root, shard_id) / "shard.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class ShardWriter:
    """Builds one shard in ``shards/.tmp-<id>/`` and renames it into place on ``finish``.

    Frames are appended block by block into a preallocated (capacity, H, W) memmap, so a long
    recording never sits in memory whole; fewer frames than ``capacity`` are allowed.

    Example:
        >>> w = ShardWriter(root, "ab12", capacity=100, size=(64, 64))      # doctest: +SKIP
        >>> w.append(block)                                                 # doctest: +SKIP
        >>> info = w.finish(audio=None, labels=l, gaze=g, flags=f, info={})  # doctest: +SKIP
    """

    def __init__(self, root: Path, shard_id: str, capacity: int, size: tuple[int, int]) -> None:
        self.root, self.shard_id = Path(root), shard_id
        self.tmp = self.root / "shards" / f".tmp-{shard_id}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.size = (int(size[0]), int(size[1]))
        shape = (max(int(capacity), 1), *self.size)
        self.frames = np.lib.format.open_memmap(self.tmp / "frames.npy", "w+", np.uint8, shape)
        self.n = 0
        self.hash = hashlib.sha256()
        self.frame_hash = hashlib.sha256()  # the frames alone: equal for the same clip under two names

    def append(self, block: np.ndarray) -> None:
        """Add uint8 (t, H, W) frames after those already written."""
        if self.n + len(block) > len(self.frames):
            raise ValueError(f"shard {self.shard_id}: more frames than the capacity {len(self.frames)}")
        block = np.ascontiguousarray(block, dtype=np.uint8)
        self.frames[self.n : self.n + len(block)] = block
        self.hash.update(block.tobytes())
        self.frame_hash.update(block.tobytes())
        self.n += len(block)

    def finish(self, *, audio: np.ndarray | None, labels: np.ndarray, gaze: np.ndarray,
               flags: np.ndarray, info: dict, region_mask: np.ndarray | None = None,
               masks: np.ndarray | None = None) -> dict:  # fmt: skip
        """Write the per-frame arrays and ``shard.json`` (``info`` + digest), then rename.

        Args:
            audio: float32 (N,) or None; labels: int16 (T,); gaze: float32 (T, 2); flags: uint8 (T,),
                with T the number of frames appended.
            region_mask: uint8 (H, W) imaging region in cached pixels, or None (not written).
            masks: uint8 (T, H, W) anatomy masks in cached pixels, or None (not written).
            info: the shard's index fields; ``digest`` (of every array), ``frame_digest`` (of the
                frames alone, which finds duplicate recordings) and ``n_frames`` are filled in here.

        Returns:
            ``info`` as written to ``shard.json``.
        """
        if self.n == 0:
            raise DataError(f"shard {self.shard_id}: no frames were written")
        if self.n < len(self.frames):  # fewer frames decoded than expected: shrink the file
            short = np.lib.format.open_memmap(self.tmp / "short.npy", "w+", np.uint8,
                                              (self.n, *self.frames.shape[1:]))  # fmt: skip
            short[:] = self.frames[: self.n]
            short.flush()
            del short
            os.replace(self.tmp / "short.npy", self.tmp / "frames.npy")
        self.frames.flush()
        del self.frames
        arrays = {
            "labels": np.asarray(labels, np.int16),
            "gaze": np.asarray(gaze, np.float32).reshape(-1, 2),
            "flags": np.asarray(flags, np.uint8),
        }
        if masks is not None:
            arrays["masks"] = np.asarray(masks, np.uint8)
        for name, array in arrays.items():
            if len(array) != self.n:
                raise ValueError(f"shard {self.shard_id}: {name} has {len(array)} rows, not {self.n}")
        if audio is not None:
            arrays["audio"] = np.asarray(audio, np.float32).reshape(-1)
        if region_mask is not None:
            arrays["region_mask"] = np.asarray(region_mask, np.uint8)
        for name in ("masks", "region_mask"):
            if name in arrays and arrays[name].shape[-2:] != self.size:
                raise ValueError(f"shard {self.shard_id}: {name} of shape {arrays[name].shape}, frames {self.size}")
        info = {**info, "has_masks": masks is not None}
        for name in ("audio", "labels", "gaze", "flags", "region_mask", "masks"):
            if name in arrays:
                np.save(self.tmp / f"{name}.npy", arrays[name])
                self.hash.update(name.encode() + arrays[name].tobytes())
        info = {**info, "shard": self.shard_id, "n_frames": int(self.n), "digest": self.hash.hexdigest(),
                "frame_digest": self.frame_hash.hexdigest()}  # fmt: skip
        (self.tmp / "shard.json").write_text(json.dumps(info, indent=2) + "\n")
        final = shard_dir(self.root, self.shard_id)
        if final.exists():
            shutil.rmtree(final)
        os.replace(self.tmp, final)
        return info

    def abort(self) -> None:
        """Remove the partial shard."""
        if hasattr(self, "frames"):
            del self.frames
        shutil.rmtree(self.tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- reading
@dataclass
class Shard:
    """One cached recording; ``frames`` and ``audio`` are memory-mapped (reading is slicing).

    Attributes:
        id: pseudonymous shard id; subject: pseudonymous subject id.
        fps: cached frame rate; audio_rate: sample rate of ``audio`` in Hz.
        frames: uint8 (T, H, W) memmap.  audio: float32 (N,) memmap or None, sample 0 at frame 0.
        labels: int16 (T,), -1 unlabelled.  gaze: float32 (T, 2) x, y cached pixels, NaN absent.
        flags: uint8 (T,), bit 0 (``FLAG_FROZEN``) frozen/duplicate frame, bit 1 (``FLAG_DOPPLER``)
            colour Doppler frame.
        region_mask: uint8 (H, W), 1 inside the imaging region (all 1 for a shard written without
            one, e.g. a hand-built cache).
        masks: uint8 (T, H, W) memmap, 1 on the anatomy, or None: the dataset has no anatomy masks.
    """

    id: str
    subject: str
    fps: float
    audio_rate: int
    frames: np.ndarray
    audio: np.ndarray | None
    labels: np.ndarray
    gaze: np.ndarray
    flags: np.ndarray
    region_mask: np.ndarray | None = None
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frames)


def check_format(root: Path, settings: dict) -> None:
    """DataError when ``settings`` (cache.json) were written by an older cache format: its shards lack
    what this usssl reads (``CACHE_FORMAT``); a cache.json without ``cache_format`` (hand-built) passes."""
    found = settings.get("cache_format", CACHE_FORMAT)
    if isinstance(found, int) and found < CACHE_FORMAT:
        raise DataError(f"{root}: cache format {found} is older than this usssl's {CACHE_FORMAT} (no imaging-region "
                        f"or anatomy masks); re-ingest it: usssl ingest SRC --out {root} --overwrite")  # fmt: skip


class Cache:
    """Read access to an ingested cache folder.

    Example:
        >>> cache = Cache("runs/demo/cache")                       # doctest: +SKIP
        >>> shard = cache.shard(cache.shard_ids("train")[0])       # doctest: +SKIP
        >>> clip = shard.frames[10:26]                             # (16, H, W) uint8, no decode
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / SETTINGS_FILE).is_file():
            raise DataError(
                f"{self.root}: not a usssl cache (no {SETTINGS_FILE}); create one with "
                "`usssl ingest SRC --out DIR` or point data.cache_dir at an ingested folder"
            )
        if not (self.root / INDEX_FILE).is_file():
            raise DataError(
                f"{self.root}: the ingest into this cache did not finish (no {INDEX_FILE}); "
                "run the same ingest again to resume it"
            )
        self.settings: dict = json.loads((self.root / SETTINGS_FILE).read_text())
        check_format(self.root, self.settings)
        self._shards: dict[str, Shard] = {}

    @cached_property
    def index(self) -> pd.DataFrame:
        """One row per recording, columns ``INDEX_COLUMNS``."""
        return with_optional_columns(pd.read_parquet(self.root / INDEX_FILE))

    @cached_property
    def frame_digests(self) -> list[str]:
        """:func:`frame_digests` of the index's shards (each ``shard.json`` read once per ``Cache``)."""
        return frame_digests(self.root, self.index)

    @cached_property
    def splits(self) -> dict[str, list[str]]:
        """{"train": [subject, ...], "val": [...], "test": [...]}."""
        return json.loads((self.root / SPLITS_FILE).read_text())

    @property
    def classes(self) -> list[str]:
        """Label names; ``labels.npy`` value ``i`` means ``classes[i]``."""
        return list(self.settings.get("classes", []))

    def shard_ids(self, split: str | None = None) -> list[str]:
        """Shard ids in index order, all or those of one split ("train", "val", "test")."""
        if split is None:
            return self.index["shard"].tolist()
        if split not in self.splits:
            raise DataError(f"{self.root}: unknown split {split!r}; the cache has {sorted(self.splits)}")
        return self.index.loc[self.index["split"] == split, "shard"].tolist()

    def shard(self, shard_id: str) -> Shard:
        """The memory-mapped shard ``shard_id`` (opened once, then reused)."""
        if shard_id in self._shards:
            return self._shards[shard_id]
        rows = self.index[self.index["shard"] == shard_id]
        folder = shard_dir(self.root, shard_id)
        if rows.empty or not folder.is_dir():
            raise DataError(f"{self.root}: no shard {shard_id!r} in this cache; re-run ingest")
        row = rows.iloc[0]
        audio_path, masks_path, region_path = folder / "audio.npy", folder / "masks.npy", folder / "region_mask.npy"
        frames = np.load(folder / "frames.npy", mmap_mode="r")
        shard = Shard(
            id=shard_id,
            subject=str(row["subject"]),
            fps=float(row["fps"]),
            audio_rate=int(self.settings.get("audio_rate", 0)),
            frames=frames,
            audio=np.load(audio_path, mmap_mode="r") if audio_path.is_file() else None,
            labels=np.load(folder / "labels.npy"),
            gaze=np.load(folder / "gaze.npy"),
            flags=np.load(folder / "flags.npy"),
            region_mask=np.load(region_path) if region_path.is_file() else np.ones(frames.shape[1:], np.uint8),
            masks=np.load(masks_path, mmap_mode="r") if masks_path.is_file() else None,
        )
        self._shards[shard_id] = shard
        return shard

    def digest(self) -> str:
        """sha256 hex of the index's content (rows sorted by shard), e.g. an MLflow tag."""
        rows = self.index[INDEX_COLUMNS].sort_values("shard").to_dict(orient="records")
        text = json.dumps(rows, sort_keys=True, default=lambda v: v.item() if hasattr(v, "item") else str(v))
        return hashlib.sha256(text.encode()).hexdigest()

"""Label, gaze and subject tables (CSV) joined to recordings by video file stem.

- labels: ``video, frame, plane`` (one row per labelled frame; frame 0 = first frame);
- gaze: ``video, frame, x, y`` in source-frame pixels;
- subjects: ``video, patient_id`` (the id is hashed on ingest and never stored).

A ``video`` value may carry its file extension (``scan_000.mp4``, ``scan01.nii.gz``);
``extensions`` lists the ones stripped, a two-part one as one suffix. Classes come from
``corpus.json["planes"]`` beside the labels when present, else
``background`` first and the other names sorted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from usssl.errors import DataError

log = logging.getLogger(__name__)

@dataclass
class Tables:
    """Per-video side data, keyed by file stem.

    labels: stem -> (frame (n,) int64, class index (n,) int16); gaze: stem -> (frame (n,) int64,
    xy (n, 2) float64 source pixels); subjects: stem -> patient id; classes: label names.
    """

    labels: dict[str, tuple[np.ndarray, np.ndarray]]
    gaze: dict[str, tuple[np.ndarray, np.ndarray]]
    subjects: dict[str, str]
    classes: list[str]


def strip_extension(name: str, extensions: frozenset[str] | set[str] | tuple[str, ...]) -> str:
    """The file stem of ``name`` when it ends with one of ``extensions`` (case-insensitive; the
    longest wins, so a two-part extension goes as one), else ``name`` unchanged:
    ``scan01.nii.gz`` -> ``scan01``, ``videos/scan.mp4`` -> ``scan``, ``IM0001`` -> ``IM0001``."""
    name = str(name)
    for ext in sorted(extensions, key=len, reverse=True):
        if name.lower().endswith(ext.lower()) and len(name) > len(ext):
            return Path(name[: -len(ext)]).name
    return name


def _read_csv(paths: list[Path], required: list[str], extensions: frozenset[str] = frozenset()) -> pd.DataFrame | None:
    frames = []
    for path in paths:
        try:
            df = pd.read_csv(path, dtype={"video": str, "patient_id": str, "plane": str})
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read this CSV ({exc})") from None
        missing = [c for c in required if c not in df.columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; expected columns {required}")
        if "frame" in required:
            df["frame"] = pd.to_numeric(df["frame"], errors="coerce")
            if df["frame"].isna().any():
                raise DataError(f"{path}: column 'frame' must hold frame numbers (0 = first frame)")
        df["video"] = [strip_extension(v, extensions) for v in df["video"]]
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else None


def load_tables(sources: list[Path], labels_csv: Path | None = None, gaze_csv: Path | None = None,
                subjects_csv: Path | None = None, extensions: frozenset[str] = frozenset()) -> Tables:  # fmt: skip
    """Read labels/gaze/subjects CSVs: the given paths, else those found in source folders."""

    def find(explicit: Path | None, name: str) -> list[Path]:
        if explicit is not None:
            return [Path(explicit)]
        return [s / name for s in sources if s.is_dir() and (s / name).is_file()]

    label_paths = find(labels_csv, "labels.csv")
    labels_df = _read_csv(label_paths, ["video", "frame", "plane"], extensions)
    gaze_df = _read_csv(find(gaze_csv, "gaze.csv"), ["video", "frame", "x", "y"], extensions)
    subjects_df = _read_csv(find(subjects_csv, "subjects.csv"), ["video", "patient_id"], extensions)
    classes: list[str] = []
    labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if labels_df is not None:
        labels_df = labels_df.dropna(subset=["plane"])
        names = sorted(set(labels_df["plane"]) - {"background"})
        corpus = label_paths[0].parent / "corpus.json"
        if corpus.is_file():
            classes = [str(p) for p in json.loads(corpus.read_text()).get("planes", [])]
            extra = [n for n in names if n not in classes]
            if extra:
                log.warning("labels outside corpus.json planes appended as classes: %s", extra)
            classes += extra
        else:
            classes = ["background", *names]
        lookup = {name: i for i, name in enumerate(classes)}
        for stem, rows in labels_df.groupby("video"):
            labels[stem] = (rows["frame"].to_numpy(np.int64),
                            rows["plane"].map(lookup).to_numpy(np.int16))  # fmt: skip
    gaze = {}
    if gaze_df is not None:
        for stem, rows in gaze_df.groupby("video"):
            gaze[stem] = (rows["frame"].to_numpy(np.int64), rows[["x", "y"]].to_numpy(np.float64))
    subjects = {}
    if subjects_df is not None:
        pairs = zip(subjects_df["video"], subjects_df["patient_id"])
        subjects = {v: p.strip() for v, p in pairs if isinstance(p, str) and p.strip()}
    return Tables(labels, gaze, subjects, classes)

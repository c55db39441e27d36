"""Label, gaze and subject tables (CSV) joined to recordings by video file stem.

- labels: ``video, frame, plane`` (one row per labelled frame; frame 0 = first frame), or
  ``recording, label`` (one row per recording, e.g. a diagnosis: every frame carries it);
- gaze: ``video, frame, x, y`` in source-frame pixels;
- subjects: ``video, patient_id`` (the id is hashed on ingest and never stored).

A ``video`` value may carry its file extension (``scan_000.mp4``, ``scan01.nii.gz``);
``extensions`` lists the ones stripped, a two-part one as one suffix. Classes come from
``corpus.json["planes"]`` beside the labels when present, else
``background`` first and the other names sorted.

Rows must match the recordings (:func:`check_tables`): a label or gaze row naming no recording is
an error (``data.allow_unmatched_labels: true`` keeps going with a warning and a report), and so
is, when a subjects table is given, a recording without a row there
(``data.subject_per_recording: true`` makes each such recording its own subject).

    >>> tables = load_tables([Path("scans")])
    >>> check_tables(tables, ["scan_000", "scan_001"]).unmatched
    {}
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
    label_level: str | None = None  # "frame", "recording" (a recording,label table) or None (no labels)
    has_subject_table: bool = False


ALL_FRAMES = -1
"""The frame index of a recording-level label: it applies to every frame of the recording."""


@dataclass(frozen=True)
class TableCheck:
    """What :func:`check_tables` found: the rows naming no recording, per table."""

    unmatched: dict[str, list[str]]  # table name -> stems of its rows that match no recording

    def report(self) -> pd.DataFrame:
        """One row per unmatched table row: ``table, video``."""
        rows = [(table, stem) for table, stems in self.unmatched.items() for stem in stems]
        return pd.DataFrame(rows, columns=["table", "video"])


def strip_extension(name: str, extensions: frozenset[str] | set[str] | tuple[str, ...]) -> str:
    """The file stem of ``name`` when it ends with one of ``extensions`` (case-insensitive; the
    longest wins, so a two-part extension goes as one), else ``name`` unchanged:
    ``scan01.nii.gz`` -> ``scan01``, ``videos/scan.mp4`` -> ``scan``, ``IM0001`` -> ``IM0001``."""
    name = str(name)
    for ext in sorted(extensions, key=len, reverse=True):
        if name.lower().endswith(ext.lower()) and len(name) > len(ext):
            return Path(name[: -len(ext)]).name
    return name


RECORDING_LABELS = ["recording", "label"]
"""The columns of a recording-level label table (one label per recording)."""


def _read_csv(paths: list[Path], required: list[str], extensions: frozenset[str] = frozenset(),
              alternative: list[str] | None = None) -> pd.DataFrame | None:  # fmt: skip
    """The rows of ``paths`` with columns ``required`` (or, when a file has the ``alternative``
    columns instead, those renamed to ``required``'s first and last: a ``recording, label`` table
    becomes ``video, plane`` rows with ``frame`` = ``ALL_FRAMES``)."""
    frames = []
    for path in paths:
        try:
            df = pd.read_csv(path, dtype={"video": str, "patient_id": str, "plane": str, "recording": str,
                                          "label": str})  # fmt: skip
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read this CSV ({exc})") from None
        if alternative and all(c in df.columns for c in alternative) and "frame" not in df.columns:
            df = df.rename(columns={alternative[0]: required[0], alternative[1]: required[-1]})
            df["frame"] = ALL_FRAMES
            df.attrs["recording_level"] = True
        missing = [c for c in required if c not in df.columns]
        if missing:
            also = f" (or {alternative} for one label per recording)" if alternative else ""
            raise DataError(f"{path}: missing column(s) {missing}; expected columns {required}{also}")
        if "frame" in required:
            df["frame"] = pd.to_numeric(df["frame"], errors="coerce")
            if df["frame"].isna().any() or (not df.attrs.get("recording_level") and (df["frame"] < 0).any()):
                raise DataError(f"{path}: column 'frame' must hold frame numbers (0 = first frame)")
        df["video"] = [strip_extension(v, extensions) for v in df["video"]]
        frames.append(df)
    if not frames:
        return None
    levels = {bool(df.attrs.get("recording_level")) for df in frames}
    if len(levels) > 1:
        raise DataError(f"{[str(p) for p in paths]}: some label tables have one row per frame (video, frame, "
                        "plane) and some one per recording (recording, label); use one kind")  # fmt: skip
    joined = pd.concat(frames, ignore_index=True)
    joined.attrs["recording_level"] = levels.pop()
    return joined


def load_tables(sources: list[Path], labels_csv: Path | None = None, gaze_csv: Path | None = None,
                subjects_csv: Path | None = None, extensions: frozenset[str] = frozenset()) -> Tables:  # fmt: skip
    """Read labels/gaze/subjects CSVs: the given paths, else those found in source folders."""

    def find(explicit: Path | None, name: str) -> list[Path]:
        if explicit is not None:
            return [Path(explicit)]
        return [s / name for s in sources if s.is_dir() and (s / name).is_file()]

    label_paths = find(labels_csv, "labels.csv")
    labels_df = _read_csv(label_paths, ["video", "frame", "plane"], extensions, alternative=RECORDING_LABELS)
    gaze_df = _read_csv(find(gaze_csv, "gaze.csv"), ["video", "frame", "x", "y"], extensions)
    subjects_df = _read_csv(find(subjects_csv, "subjects.csv"), ["video", "patient_id"], extensions)
    classes: list[str] = []
    labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    level = None
    if labels_df is not None:
        level = "recording" if labels_df.attrs.get("recording_level") else "frame"
        labels_df = labels_df.dropna(subset=["plane"])
        if level == "recording":
            twice = labels_df.loc[labels_df["video"].duplicated(), "video"].unique().tolist()
            if twice:
                raise DataError(f"{label_paths[0]}: recording(s) {twice[:5]} have more than one row in a "
                                "recording,label table; keep one label per recording")  # fmt: skip
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
    return Tables(labels, gaze, subjects, classes, level, subjects_df is not None)


def check_tables(tables: Tables, stems: list[str], *, allow_unmatched: bool = False) -> TableCheck:
    """Check, before ingest, that every label and gaze row names one of the recordings (their file
    ``stems``): raises ``DataError`` naming the first few otherwise, unless ``allow_unmatched``
    (then a warning; the caller writes ``TableCheck.report()``). Recordings without a subjects-table
    row are checked once ingest knows which were read: :func:`check_subject_rows`.
    """
    have = set(stems)
    unmatched = {name: sorted(set(table) - have) for name, table in (("labels", tables.labels), ("gaze", tables.gaze))}
    unmatched = {name: found for name, found in unmatched.items() if found}
    if tables.has_subject_table:
        extra = sorted(set(tables.subjects) - have)
        if extra:
            log.info("%d row(s) of the subjects table match no recording being ingested (not an error)", len(extra))
    for name, found in unmatched.items():
        what = (f"{len(found)} {name}-table row group(s) name no recording found in the sources, e.g. "
                f"{', '.join(map(repr, found[:5]))}")
        if not allow_unmatched:
            raise DataError(f"{what}: fix the names (the video column holds the file name or stem), add the "
                            "recordings, or set data.allow_unmatched_labels: true (usssl ingest "
                            "--allow-unmatched-labels) to go on without those rows")  # fmt: skip
        log.warning("%s; they are left out (data.allow_unmatched_labels)", what)
    return TableCheck(unmatched)


def check_subject_rows(without: list[str], n_dicom: int, subject_per_recording: bool) -> None:
    """With a subjects table: the ingested recordings (file stems) ``without`` a row, ``n_dicom`` of
    them DICOM files, are an error naming the first few (one patient could fall into two folds),
    unless ``subject_per_recording`` (then a warning: a DICOM takes its header's patient ID, any
    other recording is its own subject)."""
    if not without:
        return
    if not subject_per_recording:
        raise DataError(f"{len(without)} ingested recording(s) have no row in the subjects table, e.g. "
                        f"{', '.join(map(repr, sorted(without)[:5]))}: one patient could then fall into two folds. "
                        "Add their rows (video, patient_id), or set data.subject_per_recording: true (usssl ingest "
                        "--subject-per-recording) to make each its own subject; then run the ingest again (the "
                        "recordings already read are kept)")  # fmt: skip
    log.warning("%d recording(s) have no row in the subjects table: %d DICOM file(s) take the patient ID of their "
                "header, %d are each their own subject (data.subject_per_recording)", len(without), n_dicom,
                len(without) - n_dicom)  # fmt: skip

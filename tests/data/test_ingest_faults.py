"""Ingest under faults (issue 12), on a fault corpus generated here: the same clip under four names,
a file name that is not UTF-8, one subject only, headers that lie about frames and timing, and
pydicom's own decoder-fallback tracebacks."""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
import fixtures_dicom as fd  # noqa: E402
import fixtures_video as fx  # noqa: E402

from usssl.config import IngestConfig  # noqa: E402
from usssl.data.cache import Cache, shard_info  # noqa: E402
from usssl.data.ingest import ingest, kept_frames  # noqa: E402
from usssl.data.splits import require_test_split, subject_split  # noqa: E402
from usssl.errors import DataError  # noqa: E402
from usssl.io.video import MAX_FRAME_GAP_S  # noqa: E402

CFG = IngestConfig(size=(16, 16), fps=15, workers=1)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("USSSL_SUBJECT_KEY", "faults-key")


def _report(summary) -> pd.DataFrame:
    return pd.read_csv(summary.report_path, dtype={"reason": str}).fillna({"reason": ""}).set_index("source")


def test_one_clip_under_four_names_is_cached_once_and_never_split(tmp_path):
    src = tmp_path / "SRC"
    fx.make_corpus(src, n_subjects=3, seconds=1.0)
    original = src / "videos" / "scan_000.mp4"
    shutil.copy(original, src / "copy_of_scan.mp4")
    os.link(original, src / "linked.mp4")
    (src / "again").mkdir()
    shutil.copy(original, src / "again" / "scan_000_export.mp4")
    out = tmp_path / "cache"
    summary = ingest([src], out, CFG, progress=False)
    report, cache = _report(summary), Cache(out)

    assert summary.n_ok == 3 and summary.n_duplicates == 3 and len(cache.index) == 3
    repeats = ["again/scan_000_export.mp4", "copy_of_scan.mp4", "linked.mp4"]
    for source in repeats:  # the labelled original is kept; each repeat names it
        assert report.loc[source, "status"] == "skipped"
        assert report.loc[source, "reason"].startswith("duplicate of videos/scan_000.mp4: the very same frames")
        assert report.loc[source, "shard"] not in set(cache.index["shard"])
    assert report.loc["videos/scan_000.mp4", "status"] == "ok"
    digests = [shard_info(out, s)["frame_digest"] for s in cache.index["shard"]]
    assert len(set(digests)) == 3  # no two indexed recordings share frames
    split_of = subject_split(cache.splits)
    assert sorted(split_of) == sorted(cache.index["subject"])  # every kept recording in exactly one split

    again = ingest([src], out, CFG, progress=False)  # resume: the same decision, nothing redone
    assert (again.n_ok, again.n_duplicates) == (3, 3)
    assert Cache(out).index["shard"].tolist() == cache.index["shard"].tolist()


def test_a_file_name_that_is_not_utf8_is_ingested_like_any_other(tmp_path):
    src = tmp_path / "SRC"
    fx.make_scan(src / "plain.mp4", seed=1, seconds=1.0)
    fx.make_scan(src / "tmp.mp4", seed=2, seconds=1.0)
    os.rename(src / "tmp.mp4", os.fsdecode(os.fsencode(src) + b"/scan_\xff\xfe.mp4"))  # Latin-1 bytes
    summary = ingest([src], tmp_path / "cache", CFG, progress=False)
    text = summary.report_path.read_bytes().decode("utf-8")  # the report is valid UTF-8
    report = _report(summary)
    assert summary.n_ok == 2 and report.loc["scan_\\xff\\xfe.mp4", "status"] == "ok"
    assert report.loc["scan_\\xff\\xfe.mp4", "cached_frames"] == 15 and "scan_\\xff\\xfe.mp4" in text


def test_one_subject_is_cached_in_train_and_a_test_stage_refuses(tmp_path, caplog):
    src = tmp_path / "SRC"
    for i in range(2):
        fx.make_scan(src / f"scan_{i}.mp4", seed=i, seconds=1.0)
    pd.DataFrame({"video": ["scan_0", "scan_1"], "patient_id": ["PID-1", "PID-1"]}).to_csv(src / "subjects.csv",
                                                                                            index=False)  # fmt: skip
    with caplog.at_level("WARNING", logger="usssl"):
        summary = ingest([src], tmp_path / "cache", CFG, progress=False)
    cache = Cache(tmp_path / "cache")
    assert summary.n_ok == 2 and len(cache.splits["train"]) == 1
    assert cache.splits["val"] == cache.splits["test"] == [] and set(cache.index["split"]) == {"train"}
    assert "no test split" in caplog.text
    with pytest.raises(DataError, match=r"stage 'evaluate' needs a test split.*1 subject\(s\).*at least 2 subjects"):
        require_test_split(cache, "evaluate")


def _dicom(path: Path, seed: int, **attrs) -> Path:
    """8 ramp frames (shifted by ``seed``: not duplicates of each other) at 25 fps, then the header
    attributes ``attrs`` overwritten (the lies)."""
    frames = ((fd.ramp_frames(t=8).astype(np.int64) + 29 * seed) % 256).astype(np.uint8)
    fd.write_dicom(path, frames, FrameTime=40.0, PatientID=path.stem)
    ds = pydicom.dcmread(path)
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.save_as(path)
    return path


def _gap_mkv(path: Path) -> Path:
    """3 frames at 30 fps, the third stamped one hour after the second."""
    frames = fx.render(3)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = fx.SIZE, fx.SIZE, "yuv420p"
        for img, pts in zip(frames, [0, 1, 3600 * 30 + 1]):
            frame = av.VideoFrame.from_ndarray(img, format="gray")
            frame.pts, frame.time_base = pts, Fraction(1, 30)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def test_header_lies_are_cut_with_a_reason_and_memory_stays_bounded(tmp_path):
    src = tmp_path / "SRC"
    _dicom(src / "claims_3.dcm", 1, NumberOfFrames=3)
    _dicom(src / "claims_0.dcm", 2, NumberOfFrames=0)
    _dicom(src / "claims_2e8.dcm", 3, NumberOfFrames=200_000_000)
    _dicom(src / "frame_time_1e7.dcm", 4, FrameTime=1e7)
    _dicom(src / "huge_rows.dcm", 5, Rows=60000, Columns=60000)
    _gap_mkv(src / "gap.mkv")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    summary = ingest([src], tmp_path / "cache", CFG, progress=False)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    report = _report(summary)

    at_25 = len(kept_frames(np.arange(8) / 25.0, 15, 25.0))  # 8 frames at 25 fps, cached at 15 fps: 5
    for name, said in (("claims_3", "says 3"), ("claims_0", "is missing or 0"), ("claims_2e8", "says 200000000")):
        row = report.loc[f"{name}.dcm"]
        assert row["status"] == "ok" and row["frames"] == 8 and row["cached_frames"] == at_25, name
        assert f"NumberOfFrames {said} but the pixel data holds 8 frame(s): read 8" in row["reason"]
    slow = report.loc["frame_time_1e7.dcm"]
    assert slow["status"] == "ok" and slow["fps"] == 30.0 and slow["cached_frames"] == 4  # 8 frames at 30 fps
    assert "FrameTime 1e+07 ms means 0.0001 fps" in slow["reason"] and "ignored" in slow["reason"]
    huge = report.loc["huge_rows.dcm"]
    assert huge["status"] == "failed" and huge["reason"].startswith("huge_rows.dcm: the pixel data holds not even one")
    gap = report.loc["gap.mkv"]
    assert gap["status"] == "ok" and "timestamps jump by 3600.0 s after frame 2 of 3" in gap["reason"]
    shortened = np.array([0, 1 / 30, 1 / 30 + MAX_FRAME_GAP_S])  # the hour is 10 s now
    assert gap["cached_frames"] == len(kept_frames(shortened, 15, 30.0)) == 151  # not 54,001
    assert grown_mib < 400, f"ingest grew the peak memory by {grown_mib:.0f} MiB"
    notes = json.loads((tmp_path / "cache" / "shards" / gap["shard"] / "shard.json").read_text())["notes"]
    assert notes and str(src) not in json.dumps(notes)  # kept for resume, no paths in the cache


PYDICOM_FALLBACKS = ["JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm"]  # 4 tracebacks before


def test_pydicom_decoder_fallbacks_go_to_the_report_not_the_console(tmp_path, capsys, caplog):
    from pydicom.data import get_testdata_file

    from usssl.cli import main

    src = tmp_path / "SRC"
    src.mkdir()
    for name in PYDICOM_FALLBACKS:
        found = get_testdata_file(name)
        if found is None:
            pytest.skip(f"pydicom test file {name} not installed")
        shutil.copy(found, src / name)
    fx.make_scan(src / "good.mp4", seconds=1.0)
    with caplog.at_level("DEBUG"):
        assert main(["ingest", str(src), "--out", str(tmp_path / "cache"), "--size", "16", "16", "--workers", "1"]) == 0
    console = capsys.readouterr()
    assert "Traceback" not in console.out + console.err and "libjpeg error" not in console.out + console.err
    shown = [r for r in caplog.records if r.levelno > 10 or r.exc_info]  # what a console would print
    assert not [r for r in shown if r.name.startswith("pydicom") or r.exc_info], [r.getMessage() for r in shown]
    assert any("libjpeg error" in r.getMessage() for r in caplog.records if r.levelno == 10)  # debug log
    report = pd.read_csv(tmp_path / "cache" / "ingest_report.csv", dtype={"reason": str}).set_index("source")
    for name in PYDICOM_FALLBACKS:
        reason = report.loc[name, "reason"]
        assert report.loc[name, "status"] == "failed" and reason.startswith(f"{name}: decoding failed after 0 frames")
        assert "\n" not in reason and "export the file again" in reason
    assert "libjpeg error code '-1038'" in report.loc["JPEG-lossy.dcm", "reason"]
    assert report.loc["good.mp4", "status"] == "ok"

"""Bad input is data: a folder of good and broken files ingests the good ones, reports each broken one
with its reason, finds extension-less DICOMs by their magic and ignores other extension-less files."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
import fixtures_dicom as fd  # noqa: E402
import fixtures_video as fx  # noqa: E402

from usssl.config import IngestConfig  # noqa: E402
from usssl.data.cache import REPORT_COLUMNS, Cache  # noqa: E402
from usssl.data.ingest import find_recordings, ingest  # noqa: E402
from usssl.errors import CacheMismatchError  # noqa: E402

CFG = IngestConfig(size=(16, 16), fps=15, workers=1)
GOOD = ["videos/scan_000.mp4", "videos/scan_001.mp4", "videos/scan_002.mp4", "noaudio.mp4",
        "pacs/IM0001", "pacs/1.2.826.0.1.3680043.9.7777.5"]  # fmt: skip
BAD = {  # source -> words its reason must hold
    "empty.mp4": "cannot be read as a video",
    "truncated.mp4": "cannot be read as a video",
    "nopix.dcm": "no pixel data",
    "notes.avi": "cannot be read as a video",
}


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """(SRC, summary, report indexed by source) of one ingest of a folder with good and bad files."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("USSSL_SUBJECT_KEY", "bad-inputs-key")
        src = tmp_path_factory.mktemp("messy") / "SRC"
        fx.make_corpus(src, n_subjects=3, seconds=1.0)
        (src / "empty.mp4").write_bytes(b"")
        whole = (src / "videos" / "scan_000.mp4").read_bytes()
        (src / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
        fd.write_dicom(src / "nopix.dcm", fd.ramp_frames(t=2), pixels=False)
        (src / "notes.avi").write_text("minutes of the department meeting, not a video\n")
        fx.make_scan(src / "noaudio.mp4", seed=7, seconds=1.0, with_audio=False)
        fd.write_dicom(src / "pacs" / "IM0001", fd.ramp_frames(t=6), FrameTime=40.0, PatientID="PID-PACS-1")
        fd.write_dicom(src / "pacs" / "1.2.826.0.1.3680043.9.7777.5", fd.ramp_frames(t=3), FrameTime=40.0,
                       PatientID="PID-PACS-2")  # fmt: skip
        shutil.copy(src / "pacs" / "IM0001", src / "pacs" / "DICOMDIR")  # an export's index: not an image
        (src / "pacs" / "README").write_text("exported from PACS\n" * 20)
        (src / "pacs" / "IM0002").write_bytes(bytes(200))  # extension-less, no DICOM magic
        summary = ingest([src], tmp_path_factory.mktemp("out") / "cache", CFG, progress=False,
                         subject_per_recording=True)  # the extra files have no subjects.csv row
        yield src, summary, pd.read_csv(summary.report_path, dtype={"reason": str}).set_index("source")


def test_every_bad_file_is_reported_and_no_good_one_is_lost(messy):
    _, summary, report = messy
    assert sorted(report.index) == sorted(GOOD + list(BAD))  # README, IM0002, DICOMDIR: not listed
    assert (summary.n_ok, summary.n_failed, summary.n_skipped) == (len(GOOD), len(BAD), len(BAD))
    assert (report.loc[GOOD, "status"] == "ok").all()
    for source, words in BAD.items():
        row = report.loc[source]
        assert row["status"] == "failed" and row["reason"].startswith(f"{source}: "), row["reason"]
        assert words in row["reason"], row["reason"]
        assert np.isnan(row["fps"]) and row["cached_frames"] == 0
    assert str(summary.cache_dir.parent) not in " ".join(report["reason"].fillna(""))
    assert len(Cache(summary.cache_dir).index) == len(GOOD)


def test_report_columns_and_source_timing(messy):
    _, summary, report = messy
    assert list(pd.read_csv(summary.report_path).columns) == REPORT_COLUMNS
    assert REPORT_COLUMNS[:6] == ["source", "status", "reason", "frames", "duration_s", "fps"]
    video = report.loc["videos/scan_001.mp4"]  # 1 s at 30 fps, cached at 15 fps
    assert (video["frames"], video["fps"], video["duration_s"], video["cached_frames"]) == (30, 30.0, 1.0, 15)
    pacs = report.loc["pacs/IM0001"]  # 6 frames, FrameTime 40 ms
    assert (pacs["frames"], pacs["fps"], pacs["duration_s"]) == (6, 25.0, 0.24)
    nopix = report.loc["nopix.dcm"]
    assert pd.isna(nopix["frames"]) and pd.isna(nopix["duration_s"])


def test_a_video_without_audio_is_ingested_without_audio(messy):
    _, summary, report = messy
    cache = Cache(summary.cache_dir)
    index = cache.index.set_index("shard")
    assert not index.loc[report.loc["noaudio.mp4", "shard"], "has_audio"]
    assert cache.shard(report.loc["noaudio.mp4", "shard"]).audio is None
    assert index.loc[report.loc["videos/scan_000.mp4", "shard"], "has_audio"]


def test_extensionless_dicoms_are_found_by_their_magic_and_read_as_dicom(messy):
    src, summary, report = messy
    found = sorted(p.relative_to(src).as_posix() for p, _ in find_recordings([src / "pacs"]))
    assert found == ["pacs/1.2.826.0.1.3680043.9.7777.5", "pacs/IM0001"]
    assert find_recordings([src / "pacs" / "README"]) == []
    assert [p.name for p, _ in find_recordings([src / "pacs" / "IM0001"])] == ["IM0001"]
    cache = Cache(summary.cache_dir)
    subjects = cache.index.set_index("shard")["subject"]
    from usssl.privacy.pseudonym import pseudonym

    assert subjects[report.loc["pacs/IM0001", "shard"]] == pseudonym("PID-PACS-1", b"bad-inputs-key")
    shard = cache.shard(report.loc["pacs/IM0001", "shard"])
    assert len(shard) == 4  # 0.24 s at 15 fps: output times 0, 1/15, 2/15, 3/15


def test_reingesting_with_another_setting_names_it(messy, monkeypatch):
    src, summary, _ = messy
    monkeypatch.setenv("USSSL_SUBJECT_KEY", "bad-inputs-key")
    with pytest.raises(CacheMismatchError, match=r"fps \(cache: 15\.0, now: 10\.0\)"):
        ingest([src], summary.cache_dir, CFG.model_copy(update={"fps": 10.0}), progress=False)
    with pytest.raises(CacheMismatchError, match=r"audio \(cache: True, now: False\)"):
        ingest([src], summary.cache_dir, CFG.model_copy(update={"audio": False}), progress=False)

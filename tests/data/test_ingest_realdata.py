"""Ingest over ../shared/realdata (skipped when absent): every real DICOM and every lung POCUS clip
is either ingested, with the report's SOURCE frame count and fps matching its header / container
metadata, or reported failed with a reason naming it; no patient name reaches the cache or logs.

One ingest (both folders, 32 x 32, every frame kept) serves every test of this module.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
import fixtures_dicom as fd  # noqa: E402

from usssl.config import IngestConfig  # noqa: E402
from usssl.data.cache import REPORT_COLUMNS, Cache  # noqa: E402
from usssl.data.ingest import ingest  # noqa: E402

LUNG = fd.REALDATA / "covid19_ultrasound_lung_pocus"
FPS_REL = 1e-4  # the report rounds fps to 4 decimals; headers state e.g. FrameTime 33.333 ms
CLIP_FPS_ABS = 0.01  # videos_metadata.json states the container's rate to 2 decimals
CFG = IngestConfig(size=(32, 32), fps=None, workers=2)

pytestmark = pytest.mark.skipif(not (fd.DICOM_US.is_dir() and LUNG.is_dir()),
                                reason=f"real data absent ({fd.REALDATA}): only on CI")  # fmt: skip


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """(summary, report indexed by source, log text) of one ingest of both real-data folders."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("USSSL_SUBJECT_KEY", "realdata-key")
        logs = io.StringIO()
        handler = logging.StreamHandler(logs)
        logger = logging.getLogger("usssl")
        old_level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        try:
            out = tmp_path_factory.mktemp("real") / "cache"
            summary = ingest([fd.DICOM_US, LUNG / "videos"], out, CFG, progress=False)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
    report = pd.read_csv(summary.report_path, dtype={"reason": str}).fillna({"reason": ""})
    return summary, report.set_index("source"), logs.getvalue()


def _header_fps(path: Path) -> float:
    """The documented order: FrameTime, FrameTimeVector, CineRate, RecommendedDisplayFrameRate, 30."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if ds.get("FrameTime"):
        return 1000.0 / float(ds.FrameTime)
    if "FrameTimeVector" in ds:
        return 1000.0 / float(np.mean(np.asarray(ds.FrameTimeVector, float)[1:]))
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        if ds.get(keyword):
            return float(ds.get(keyword))
    return 30.0


def test_report_lists_every_input_once_with_its_columns(real):
    summary, report, _ = real
    clips = json.loads((LUNG / "videos_metadata.json").read_text())
    expected = {row["local"].removeprefix("videos/") for row in clips} | set(fd.real_metadata())
    assert list(report.reset_index().columns) == REPORT_COLUMNS
    assert set(report.index) == expected and len(report) == len(expected) == 110 + len(fd.real_files())
    assert set(report["status"]) <= {"ok", "failed", "skipped"}
    repeats = report[report["status"] == "skipped"]  # the same frames under two names (one image, two syntaxes)
    assert repeats["reason"].str.startswith("duplicate of ").all() and len(repeats) == summary.n_duplicates
    assert summary.n_ok == (report["status"] == "ok").sum() and summary.n_ok + summary.n_duplicates >= 125
    failed = report[report["status"] == "failed"]
    for source, row in failed.iterrows():  # a clear reason that names the file
        assert row["reason"].startswith(f"{source}: "), (source, row["reason"])


def test_dicoms_report_header_frames_and_fps(real):
    _, report, _ = real
    meta = fd.real_metadata()
    for path in fd.real_files():
        source = f"{path.parent.name}/{path.name}"
        row = report.loc[source]
        duplicate = row["status"] == "skipped" and row["reason"].startswith("duplicate of ")
        if row["status"] == "ok" or duplicate:  # a duplicate was read whole, then cached once
            assert row["frames"] == meta[source]["number_of_frames"], source
            assert row["fps"] == pytest.approx(_header_fps(path), rel=FPS_REL), source
            assert row["duration_s"] == pytest.approx(row["frames"] / row["fps"], rel=1e-3), source
            assert row["cached_frames"] == (0 if duplicate else row["frames"]), source  # fps null: every frame
        elif source == "fo-dicom/GH364.dcm":  # BurnedInAnnotation YES, no ultrasound region
            assert "BurnedInAnnotation is YES" in row["reason"] and "ingest.crop: [x0, y0, x1, y1]" in row["reason"]
            assert row["frames"] == meta[source]["number_of_frames"]  # read before it was refused
        else:
            assert "no decoder installed" in row["reason"], (source, row["reason"])


def test_lung_clips_report_container_frames_and_fps(real):
    _, report, _ = real
    for clip in json.loads((LUNG / "videos_metadata.json").read_text()):
        source = clip["local"].removeprefix("videos/")
        row = report.loc[source]
        assert row["status"] == "ok", (source, row["reason"])
        assert row["frames"] == clip["frames_decoded"], source
        assert row["fps"] == pytest.approx(clip["fps"], abs=CLIP_FPS_ABS), source
        assert row["duration_s"] == pytest.approx(clip["duration_s"], abs=0.05), source
        assert row["cached_frames"] == clip["frames_decoded"], source


def test_no_patient_name_in_the_cache_paths_or_logs(real):
    summary, report, logs = real
    secrets = set(fd.REAL_NAMES) | {part for n in fd.REAL_NAMES for part in n.split("^")}
    for path in fd.real_files():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        secrets |= {str(ds.get("PatientName", "")), str(ds.get("PatientID", ""))}
    secrets = {s for s in secrets if len(s) >= 5 and len(set(s)) > 2}
    assert {"Teszt", "Citizen", "Lastname"} <= secrets
    files = [p for p in summary.cache_dir.rglob("*") if p.is_file()]
    assert len(files) > 4 * summary.n_ok
    for path in files:
        data = path.read_bytes()
        rel = str(path.relative_to(summary.cache_dir))
        for secret in secrets:
            assert secret.encode() not in data and secret not in rel, f"{secret!r} in {rel}"
    assert "ingested" in logs
    for secret in secrets:
        assert secret not in logs
    cache = Cache(summary.cache_dir)
    assert len(cache.index) == summary.n_ok and cache.index["subject"].nunique() >= 2

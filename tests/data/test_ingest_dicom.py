"""Ingest of DICOM cines: region crop, subjects from the header, no PHI in the cache, corpus rule."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
import fixtures_dicom as fd  # noqa: E402

from usssl.config import IngestConfig  # noqa: E402
from usssl.data.cache import Cache  # noqa: E402
from usssl.data.ingest import find_recordings, ingest, kept_frames  # noqa: E402
from usssl.privacy.pseudonym import pseudonym  # noqa: E402
from usssl.privacy.region import crop_resize  # noqa: E402

KEY = "dicom-ingest-key"
CFG = IngestConfig(size=(16, 16), fps=15, workers=1)
BOX = (4, 2, 28, 22)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("USSSL_SUBJECT_KEY", KEY)


def _no_secret_in_cache(root: Path, secrets: set[str]) -> None:
    """No secret in the bytes of any cache file but the report (the one place for source paths)."""
    files = [p for p in root.rglob("*") if p.is_file() and p.name != "ingest_report.csv"]
    assert len(files) > 4
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret!r} in {path.relative_to(root)}"
    for path in root.rglob("*"):
        assert not any(s in path.name for s in secrets)


def test_dicom_folder_region_crop_subjects_and_no_phi(tmp_path):
    src = tmp_path / "SRC"
    frames = fd.ramp_frames(t=5)
    fd.write_dicom(src / "Secretname_a.dcm", frames, FrameTime=40.0, regions=[fd.region(BOX)])
    fd.write_dicom(src / "Secretname_b.dcm", frames, FrameTime=40.0)  # same patient, no region
    fd.write_dicom(src / "other" / "c.DCM", frames[::-1], CineRate=25,  # identical frames: a duplicate
                   PatientID="PID-OTHER-0815")  # fmt: skip
    fd.write_dicom(src / "nopix.dcm", frames, pixels=False)
    shutil.copy(pydicom.examples.get_path("ybr_color"), src / "ybr.dicom")
    summary = ingest([src], tmp_path / "cache", CFG, progress=False)
    assert (summary.n_ok, summary.n_skipped) == (4, 1)
    report = pd.read_csv(summary.report_path).set_index("source")
    assert report.loc["nopix.dcm", "status"] == "failed"
    assert "nopix.dcm: no pixel data in this Ultrasound Multi-frame" in report.loc["nopix.dcm", "reason"]
    cache = Cache(tmp_path / "cache")
    key = KEY.encode()
    subjects = {s: cache.index.set_index("shard").loc[report.loc[s, "shard"], "subject"]
                for s in ("Secretname_a.dcm", "Secretname_b.dcm", "other/c.DCM", "ybr.dicom")}  # fmt: skip
    assert subjects["Secretname_a.dcm"] == subjects["Secretname_b.dcm"] == pseudonym(fd.PHI["PatientID"], key)
    assert subjects["other/c.DCM"] == pseudonym("PID-OTHER-0815", key)
    assert subjects["ybr.dicom"] == pseudonym("204", key)  # the example's PatientID
    shard = report.loc["Secretname_a.dcm", "shard"]
    info = json.loads((cache.root / "shards" / shard / "shard.json").read_text())
    assert info["crop_box"] == list(BOX)  # the ultrasound region, not motion detection
    kept = kept_frames(np.arange(5) / 25.0, 15, 25.0)
    np.testing.assert_array_equal(cache.shard(shard).frames, crop_resize(frames[kept], BOX, (16, 16)))
    ybr = json.loads((cache.root / "shards" / report.loc["ybr.dicom", "shard"] / "shard.json").read_text())
    assert ybr["crop_box"] == [84, 31, 320, 240] and cache.shard(report.loc["ybr.dicom", "shard"]).frames.shape[0] == 15
    uids = {"1.2.826.0.1.3680043.9.7777.1", str(pydicom.dcmread(src / "ybr.dicom").StudyInstanceUID)}
    _no_secret_in_cache(cache.root, {*fd.PHI.values(), "PID-OTHER-0815", "Secretname", *uids})


def test_synthetic_corpus_ingests_each_scan_once(tmp_path):
    synth = pytest.importorskip("usssl.data.synth")
    src = synth.generate(tmp_path / "synth", subjects=2, duration_s=1.0, size=(64, 64), write_dicom=True)
    assert sorted(p.relative_to(src).as_posix() for p, _ in find_recordings([src])) == [
        "videos/scan_000.mp4", "videos/scan_001.mp4"]  # fmt: skip
    dicoms = find_recordings([src / "dicom"])  # asked for explicitly: read
    assert sorted(p.name for p, _ in dicoms) == ["scan_000.dcm", "scan_001.dcm"]
    videos = ingest([src], tmp_path / "cache_v", CFG, progress=False)
    assert videos.n_ok == 2
    from_dicom = ingest([src / "dicom"], tmp_path / "cache_d", CFG, progress=False)
    assert from_dicom.n_ok == 2
    # subjects.csv for the videos, the DICOM header for the DICOMs: the same pseudonyms
    assert set(Cache(tmp_path / "cache_v").index["subject"]) == set(Cache(tmp_path / "cache_d").index["subject"])
    corpus = json.loads((src / "corpus.json").read_text())
    report = pd.read_csv(from_dicom.report_path)
    subjects = pd.read_csv(src / "subjects.csv")
    for shard in report["shard"]:
        info = json.loads((tmp_path / "cache_d" / "shards" / shard / "shard.json").read_text())
        assert info["crop_box"] == list(corpus["fan"]["bbox"])
    secrets = {*subjects["patient_id"], *subjects["patient_name"], "scan_00"}
    _no_secret_in_cache(tmp_path / "cache_d", secrets)

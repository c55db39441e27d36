"""Encapsulated video DICOM (MPEG-2, H.264, HEVC) decoded through PyAV: count, size, rate, pixels."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_dicom as fd  # noqa: E402

from usssl.errors import DataError  # noqa: E402
from usssl.io.dicom import read_dicom  # noqa: E402
from usssl.io.dicom_video import is_video_syntax, video_stream  # noqa: E402

T, H, W = 20, 48, 64
CODECS = [c for c in fd.VIDEO_CODECS if fd.VIDEO_CODECS[c][0] in av.codecs_available]
MAX_MEAN_ABS_DIFF = 3.0  # grey levels: lossy coding of smooth content at high quality


def smooth_frames(t: int = T) -> np.ndarray:
    """(t, H, W) uint8: a gradient and a bright disc moving one pixel per frame (codec-friendly)."""
    yy, xx = np.mgrid[:H, :W]
    out = []
    for i in range(t):
        img = 40 + 1.5 * xx + 1.0 * yy + 90 * (np.hypot(xx - 12 - 1.5 * i, yy - 24) < 8)
        out.append(np.clip(img, 0, 255))
    return np.stack(out).astype(np.uint8)


def _all(rec) -> np.ndarray:
    return np.concatenate(list(rec.iter_frames(7)))


@pytest.mark.parametrize("codec", CODECS)
def test_video_dicom_count_size_rate_from_the_header_and_pixels(tmp_path, codec):
    frames = smooth_frames()
    path = fd.write_video_dicom(tmp_path / f"{codec}.dcm", frames, codec, fps=25, FrameTime=50.0)
    pixel_data = io.BytesIO(pydicom.dcmread(path).PixelData)
    pydicom.encaps.parse_basic_offsets(pixel_data)
    assert len(list(pydicom.encaps.generate_fragments(pixel_data))) == 3  # the stream is split up
    rec = read_dicom(path, tmp_path)
    assert (rec.n_frames, rec.height, rec.width) == (T, H, W)
    assert rec.fps == 20.0 and rec.meta["fps_source"] == "FrameTime"  # the header wins over the stream
    assert rec.source == f"{codec}.dcm" and is_video_syntax(pydicom.dcmread(path).file_meta.TransferSyntaxUID)
    out = _all(rec)
    assert out.shape == (T, H, W) and out.dtype == np.uint8
    diff = np.abs(out.astype(np.int16) - frames).mean(axis=(1, 2))  # (T,)
    assert diff.max() < MAX_MEAN_ABS_DIFF, diff
    shuffled = np.abs(out[::-1].astype(np.int16) - frames).mean()  # frames in order, not just similar
    assert shuffled > 4 * diff.mean()
    colour = _all(rec.as_colour())
    assert colour.shape == (T, H, W, 3)
    assert np.abs(colour.astype(np.int16).mean(axis=-1) - frames).mean() < MAX_MEAN_ABS_DIFF


def test_without_header_timing_the_stream_gives_count_and_rate(tmp_path):
    frames = smooth_frames(12)
    path = fd.write_video_dicom(tmp_path / "bare.dcm", frames, "h264", fps=15, header_frames=False)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert "NumberOfFrames" not in ds and "FrameTime" not in ds
    rec = read_dicom(path)
    assert (rec.n_frames, rec.fps, rec.meta["fps_source"]) == (12, 15.0, "video stream")
    assert rec.timestamps == pytest.approx(np.arange(12) / 15.0)
    assert len(_all(rec)) == 12


def test_fragmentable_syntax_and_one_fragment(tmp_path):
    frames = smooth_frames(6)
    path = fd.write_video_dicom(tmp_path / "f.dcm", frames, "h264", fragments=1, FrameTime=40.0)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102.1"  # Fragmentable H.264 High 4.1
    ds.save_as(path, enforce_file_format=True)
    assert video_stream(path)[:4] == b"\x00\x00\x00\x01"  # an Annex B start code: the raw stream
    rec = read_dicom(path)
    assert rec.meta["transfer_syntax"].startswith("Fragmentable MPEG-4 AVC/H.264")
    assert np.abs(_all(rec).astype(np.int16) - frames).mean() < MAX_MEAN_ABS_DIFF


def test_broken_video_and_other_syntaxes_are_errors_naming_them(tmp_path):
    path = fd.write_video_dicom(tmp_path / "garbage.dcm", smooth_frames(4), "h264", FrameTime=40.0)
    ds = pydicom.dcmread(path)
    ds.PixelData = pydicom.encaps.encapsulate([bytes(range(256)) * 8])
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DataError, match=r"garbage\.dcm: the encapsulated video cannot be opened"):
        read_dicom(path)
    other = fd.write_video_dicom(tmp_path / "j2k_multi.dcm", smooth_frames(2), "h264")
    ds = pydicom.dcmread(other)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.93"  # JPEG 2000 Part 2: no decoder anywhere
    ds.save_as(other, enforce_file_format=True)
    with pytest.raises(DataError, match=r"j2k_multi\.dcm: transfer syntax JPEG 2000 Part 2 Multi-component "
                                        r".*Ultrasound Multi-frame Image Storage"):  # fmt: skip
        read_dicom(other)


def test_ingest_reads_a_video_dicom_and_reports_its_source_timing(tmp_path, monkeypatch):
    from usssl.config import IngestConfig
    from usssl.data.cache import Cache
    from usssl.data.ingest import ingest

    monkeypatch.setenv("USSSL_SUBJECT_KEY", "video-dicom-key")
    fd.write_video_dicom(tmp_path / "src" / "cine.dcm", smooth_frames(), "h264", FrameTime=50.0)
    fd.write_dicom(tmp_path / "src" / "other.dcm", fd.ramp_frames(t=4), FrameTime=40.0, PatientID="PID-OTHER-2")
    summary = ingest([tmp_path / "src"], tmp_path / "cache", IngestConfig(size=(16, 16), fps=10, workers=1),
                     progress=False)  # fmt: skip
    report = pd.read_csv(summary.report_path).set_index("source")
    row = report.loc["cine.dcm"]
    assert (row["status"], row["frames"], row["fps"], row["duration_s"]) == ("ok", T, 20.0, 1.0)
    assert row["cached_frames"] == 10  # 1 s at 10 fps
    frames = Cache(tmp_path / "cache").shard(row["shard"]).frames
    assert frames.shape == (10, 16, 16) and frames.std() > 5

"""Readers under lying headers (issue 12): frame counts checked against the data, implausible frame
rates ignored, hour-long pauses shortened with their narration, each change a note in meta."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import RLELossless

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_dicom as fd  # noqa: E402

from usssl.io.dicom import read_dicom  # noqa: E402
from usssl.io.recording import Recording  # noqa: E402
from usssl.io.video import FALLBACK_FPS, MAX_FRAME_GAP_S, checked_timing, shortened_gaps, without_pauses  # noqa: E402


def _frames(rec: Recording) -> np.ndarray:
    return np.concatenate(list(rec.iter_frames(3)))


@pytest.mark.parametrize("bot", [True, False])
def test_rle_frame_count_comes_from_the_offset_table_or_the_fragments(tmp_path, bot):
    path = fd.write_dicom(tmp_path / "rle.dcm", fd.ramp_frames(t=8), FrameTime=40.0)
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    if not bot:  # the same frames, one fragment each, no Basic Offset Table
        ds.PixelData = encapsulate(list(generate_frames(ds.PixelData, number_of_frames=8)), has_bot=False)
    ds.NumberOfFrames = 50
    ds.save_as(path)
    rec = read_dicom(path)
    np.testing.assert_array_equal(_frames(rec), fd.ramp_frames(t=8))
    said = "holds 8 frame(s)" if bot else "has 8 fragment(s), so at most 8 frame(s)"
    assert rec.n_frames == 8 and rec.meta["notes"] == [f"NumberOfFrames says 50 but the pixel data {said}: read 8"]


def test_native_frames_beyond_the_stated_count_are_read(tmp_path):
    path = fd.write_dicom(tmp_path / "a.dcm", fd.ramp_frames(t=8), FrameTime=40.0, NumberOfFrames=3)
    rec = read_dicom(path)
    np.testing.assert_array_equal(_frames(rec), fd.ramp_frames(t=8))  # all 8, not 3
    assert len(rec.timestamps) == 8 and rec.meta["notes"][0].startswith("NumberOfFrames says 3 but")


def test_a_video_dicom_claiming_more_frames_than_its_stream_reads_the_stream(tmp_path):
    frames = fd.ramp_frames(t=6, h=32, w=32)
    path = fd.write_video_dicom(tmp_path / "v.dcm", frames, codec="h264", FrameTime=40.0)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 100_000
    ds.save_as(path)
    rec = read_dicom(path)
    assert rec.n_frames == 6 and len(_frames(rec)) == 6
    assert rec.meta["notes"] == ["NumberOfFrames says 100000 but the pixel data holds 6 frame(s): read 6"]


def test_implausible_rates_fall_through_and_long_vector_pauses_are_shortened(tmp_path):
    path = fd.write_dicom(tmp_path / "a.dcm", fd.ramp_frames(t=4), FrameTime=0.00001, CineRate=20,
                          FrameTimeVector=[0, 50, 3_600_000, 50])  # fmt: skip
    rec = read_dicom(path)
    np.testing.assert_allclose(rec.timestamps, [0, 0.05, 0.05 + MAX_FRAME_GAP_S, 0.1 + MAX_FRAME_GAP_S])
    assert rec.meta["fps_source"] == "FrameTimeVector"  # FrameTime 1e-5 ms = 1e8 fps: not believed
    assert rec.meta["notes"][0].startswith("FrameTimeVector jump by 3600.0 s after frame 2 of 4")
    assert rec.meta["notes"][1].startswith("FrameTime 1e-05 ms means 1e+08 fps")


def test_shortened_pauses_take_their_narration_with_them():
    stamps = np.array([0.0, 0.1, 100.1, 100.2])
    fixed, jumps = shortened_gaps(stamps, limit=10.0)
    np.testing.assert_allclose(fixed, [0.0, 0.1, 10.1, 10.2])
    assert jumps == [(1, pytest.approx(100.0))]
    audio = np.arange(1003, dtype=np.float32)  # 10 Hz: sample k is at k / 10 s
    cut = without_pauses(audio, 10, stamps, jumps, limit=10.0)
    assert len(cut) == 103 and cut[101] == 1001  # frame 2, now at 10.1 s, still hears its own sample
    assert shortened_gaps(fixed)[1] == [] and without_pauses(audio, 10, stamps, []) is audio


def test_any_readers_implausible_timing_is_replaced_with_a_note():
    rec = Recording(source="a.nii.gz", fps=1e-4, n_frames=5, height=4, width=4, timestamps=np.arange(5) / 1e-4,
                    meta={"notes": []})  # fmt: skip
    fixed = checked_timing(rec)
    assert fixed.fps == FALLBACK_FPS and fixed.duration_s == pytest.approx(5 / FALLBACK_FPS)
    np.testing.assert_allclose(fixed.timestamps, np.arange(5) / FALLBACK_FPS)
    assert fixed.meta["notes"] == ["stated frame rate 0.0001 fps is not plausible (usssl believes 0.1 to 10000 fps): "
                                   "read at 30 fps"]  # fmt: skip
    assert rec.fps == 1e-4 and checked_timing(fixed) is fixed  # the original is unchanged; a sane one passes

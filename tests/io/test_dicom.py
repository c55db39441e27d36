"""DICOM reader: frames, photometric conversion, frame-rate order, ultrasound regions, errors."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut, get_decoder, iter_pixels

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_dicom as fd  # noqa: E402

from usssl.errors import DataError  # noqa: E402
from usssl.io.dicom import dicom_subject_id, read_dicom  # noqa: E402


def _all(rec) -> np.ndarray:
    return np.concatenate(list(rec.iter_frames(64)))


def test_multiframe_mono2_frames_rate_region_and_no_phi(tmp_path):
    frames = fd.ramp_frames(t=5)
    path = fd.write_dicom(tmp_path / "site" / "cine.dcm", frames, FrameTime=40.0, CineRate=10,
                          regions=[fd.region((4, 2, 28, 22), units=3, delta_cm=0.02)])  # fmt: skip
    rec = read_dicom(path, tmp_path)
    assert rec.source == "site/cine.dcm"
    assert (rec.n_frames, rec.height, rec.width, rec.fps) == (5, 24, 32, 25.0)
    assert rec.meta["fps_source"] == "FrameTime"
    np.testing.assert_allclose(rec.timestamps, np.arange(5) * 0.04)
    blocks = list(rec.iter_frames(2))
    assert [len(b) for b in blocks] == [2, 2, 1] and blocks[0].dtype == np.uint8
    np.testing.assert_array_equal(np.concatenate(blocks), frames)
    np.testing.assert_array_equal(_all(rec), frames)  # every call starts again at frame 0
    assert rec.meta["region_box"] == [4, 2, 28, 22]  # end-exclusive
    assert rec.spacing_mm == pytest.approx((0.2, 0.2))  # 0.02 cm, |negative delta|
    assert rec.audio is None and rec.sample_rate is None
    text = repr(rec.meta)
    for value in fd.PHI.values():
        assert value not in text
    assert "Secretname" not in text and "7777" not in text  # no name, no UID


@pytest.mark.parametrize(
    ("attrs", "fps", "source"),
    [
        ({"FrameTime": 40.0, "FrameTimeVector": [0, 20, 20, 20], "CineRate": 10}, 25.0, "FrameTime"),
        ({"FrameTimeVector": [0, 50, 50, 100], "CineRate": 10}, 15.0, "FrameTimeVector"),
        ({"CineRate": 12, "RecommendedDisplayFrameRate": 15}, 12.0, "CineRate"),
        ({"RecommendedDisplayFrameRate": 15}, 15.0, "RecommendedDisplayFrameRate"),
        ({"FrameTime": 0, "CineRate": 0}, 30.0, "fallback"),
    ],
)
def test_frame_rate_order(tmp_path, caplog, attrs, fps, source):
    path = fd.write_dicom(tmp_path / "a.dcm", fd.ramp_frames(t=4), **attrs)
    with caplog.at_level(logging.WARNING, logger="usssl"):
        rec = read_dicom(path)
    assert rec.fps == pytest.approx(fps) and rec.meta["fps_source"] == source
    if "FrameTimeVector" in attrs:  # timestamps follow the vector even when FrameTime sets the rate
        expected = np.cumsum([0.0] + attrs["FrameTimeVector"][1:]) / 1000
        np.testing.assert_allclose(rec.timestamps, expected)
    else:
        np.testing.assert_allclose(rec.timestamps, np.arange(4) / fps)
    assert ("assuming 30 fps" in caplog.text) == (source == "fallback")
    assert "a.dcm" not in caplog.text  # logs name no files


def test_monochrome1_is_inverted(tmp_path):
    frames = fd.ramp_frames(t=2)
    rec = read_dicom(fd.write_dicom(tmp_path / "m1.dcm", frames, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(_all(rec), 255 - frames)


def test_16_bit_window_else_first_frame_min_max(tmp_path):
    values = np.stack([np.full((4, 6), 1000), np.full((4, 6), 3000)]).astype(np.uint16)
    values[:, 0, 0] = [500, 500]
    windowed = read_dicom(fd.write_dicom(tmp_path / "w.dcm", values, WindowCenter=1500, WindowWidth=1001))
    out = _all(windowed)  # ((x - 1499.5) / 1000 + 0.5) * 255, clipped
    assert out.dtype == np.uint8 and (out[0, 1, 1], out[1, 1, 1], out[0, 0, 0]) == (0, 255, 0)
    scaled = _all(read_dicom(fd.write_dicom(tmp_path / "s.dcm", values)))
    # range fixed by the first frame (500..1000): the brighter second frame saturates
    assert (scaled[0, 0, 0], scaled[0, 1, 1], scaled[1, 1, 1], scaled[1, 0, 0]) == (0, 255, 255, 0)


def test_regions_largest_2d_units_and_clamping(tmp_path):
    frames = fd.ramp_frames(t=2)
    regions = [fd.region((0, 0, 32, 24), units=3, spatial_format=0),  # not 2-D: ignored
               fd.region((2, 2, 10, 10), units=3), fd.region((12, 4, 40, 30), units=0)]  # fmt: skip
    rec = read_dicom(fd.write_dicom(tmp_path / "r.dcm", frames, regions=regions))
    assert rec.meta["region_box"] == [12, 4, 32, 24]  # largest 2-D region, clamped to 32 x 24
    assert rec.spacing_mm is None  # its units are 0 (none): no physical spacing
    plain = read_dicom(fd.write_dicom(tmp_path / "p.dcm", frames))
    assert plain.meta["region_box"] is None and plain.spacing_mm is None


def test_pydicom_example_ybr_cine_grey_and_rgb():
    path = Path(pydicom.examples.get_path("ybr_color"))
    grey, rgb = read_dicom(path), read_dicom(path, grayscale=False)
    assert (grey.n_frames, grey.height, grey.width) == (30, 240, 320)
    assert grey.fps == pytest.approx(1000 / 33.333) and grey.meta["photometric"] == "YBR_FULL_422"
    frames_rgb = _all(rgb)
    assert frames_rgb.shape == (30, 240, 320, 3)
    reference = np.stack(list(iter_pixels(path)))  # pydicom's own YBR -> RGB conversion
    assert np.abs(frames_rgb.astype(int) - reference).max() <= 1
    ybr = np.stack(list(iter_pixels(path, as_rgb=False)))
    np.testing.assert_array_equal(_all(grey), ybr[..., 0])  # grey is the stored luma Y
    luma = reference @ np.array([0.299, 0.587, 0.114])  # equal up to rounding where RGB does not clip
    assert np.abs(_all(grey) - luma).mean() < 0.6
    assert grey.meta["region_box"] == [84, 31, 320, 240]  # the region overhangs this downsized file


@pytest.mark.parametrize("name", ["OBXXXX1A_2frame.dcm", "OBXXXX1A_rle_2frame.dcm", "gdcm-US-ALOKA-16.dcm"])
def test_palette_colour_through_its_lookup_tables(name):
    path = Path(get_testdata_file(name))
    rec = read_dicom(path, grayscale=False)
    ds = pydicom.dcmread(path)
    expected = apply_color_lut(ds.pixel_array, ds)  # 16-bit entries
    expected = (expected >> 8).astype(np.uint8).reshape(rec.n_frames, rec.height, rec.width, 3)
    np.testing.assert_array_equal(_all(rec), expected)
    assert rec.spacing_mm is not None and rec.meta["region_box"] is not None


@pytest.mark.parametrize("name", ["ExplVR_BigEnd.dcm", "US1_J2KR.dcm", "US1_J2KI.dcm", "US1_UNCR.dcm"])
def test_rgb_big_endian_and_jpeg2000(name):
    path = Path(get_testdata_file(name))
    rec = read_dicom(path, grayscale=False)
    out = _all(rec)
    assert out.shape == (1, rec.height, rec.width, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], pydicom.dcmread(path).pixel_array)
    assert rec.fps == 30.0 and rec.meta["fps_source"] == "fallback"


def test_unsupported_inputs_are_data_errors(tmp_path, monkeypatch):
    frames = fd.ramp_frames(t=2)
    no_pixels = fd.write_dicom(tmp_path / "nopix.dcm", frames, pixels=False)
    with pytest.raises(DataError, match=r"nopix\.dcm: no pixel data .*Ultrasound Multi-frame Image Storage"):
        read_dicom(no_pixels)
    volume = fd.write_dicom(tmp_path / "vol.dcm", frames, sop_class=fd.ENHANCED_US_VOLUME)
    with pytest.raises(DataError, match=r"vol\.dcm: SOP class Enhanced US Volume Storage .*not supported"):
        read_dicom(volume)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"this is not a DICOM file at all")
    with pytest.raises(DataError, match=r"junk\.dcm: not a readable DICOM file"):
        read_dicom(junk)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.dcm"):
        read_dicom(empty)

    class Missing:  # a decoder whose plugins are not installed
        is_available, missing_dependencies = False, ["pylibjpeg - requires pylibjpeg>=2.0"]

    monkeypatch.setattr("usssl.io.dicom.get_decoder", lambda syntax: Missing())
    with pytest.raises(DataError, match=r"no decoder installed .*pylibjpeg"):
        read_dicom(fd.write_dicom(tmp_path / "ok.dcm", frames))


def test_subject_id_patient_id_else_study_uid(tmp_path):
    frames = fd.ramp_frames(t=1)
    assert dicom_subject_id(fd.write_dicom(tmp_path / "a.dcm", frames)) == fd.PHI["PatientID"]
    anonymous = fd.write_dicom(tmp_path / "b.dcm", frames, PatientID="")
    assert dicom_subject_id(anonymous) == "1.2.826.0.1.3680043.9.7777.1"
    (tmp_path / "c.dcm").write_bytes(b"junk")
    assert dicom_subject_id(tmp_path / "c.dcm") is None


REAL_REGIONS = {  # (box, spacing_mm (row, column)) read off the headers
    "orthanc-tests/Issue16.dcm": ([42, 4, 439, 354], (0.22857, 0.28571)),  # anisotropic, cm
    "fo-dicom/DIRW0007.dcm": ([27, 48, 549, 392], (0.52478, 0.52478)),  # 1st region: units 0, not 2-D
    "pylibjpeg-data/JPEGExtended_3s_1f_u_08_08.dcm": ([100, 57, 580, 537], (0.04175, 0.04175)),
    "godcm/US-MONO2-8-8x-execho.dcm": (None, None),
}


def _expected_fps(path: Path, row: dict) -> float:
    """The documented order, from the metadata table and, for the vector, the header."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if row["frame_time_ms"]:
        return 1000 / float(row["frame_time_ms"])
    if "FrameTimeVector" in ds:
        return 1000 / float(np.mean(np.asarray(ds.FrameTimeVector, float)[1:]))
    for key in ("cine_rate", "recommended_fps"):
        if row[key]:
            return float(row[key])
    return 30.0


@pytest.mark.skipif(not fd.real_files(), reason=f"real DICOMs absent ({fd.DICOM_US})")
@pytest.mark.parametrize("path", fd.real_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_dicom_frames_shape_and_rate(path):
    row = fd.real_metadata()[f"{path.parent.name}/{path.name}"]
    syntax = row["transfer_syntax"].split()[0]
    if not get_decoder(syntax).is_available:  # e.g. JPEG-LS / JPEG lossless without pylibjpeg
        with pytest.raises(DataError, match=rf"{path.name}: no decoder installed for .*{row['sop_class']}"):
            read_dicom(path)
        return
    rec = read_dicom(path, fd.DICOM_US)
    frames = _all(rec)
    assert frames.shape == (row["number_of_frames"], row["rows"], row["cols"]) and frames.dtype == np.uint8
    assert rec.n_frames == row["number_of_frames"] and len(rec.timestamps) == rec.n_frames
    assert rec.fps == pytest.approx(_expected_fps(path, row), rel=1e-6)
    assert frames[:, ::4, ::4].std() > 1  # an image, not a blank
    if not row["has_us_regions"]:
        assert rec.meta["region_box"] is None and rec.spacing_mm is None
    if row["local"] in REAL_REGIONS:
        box, spacing = REAL_REGIONS[row["local"]]
        assert rec.meta["region_box"] == box
        assert rec.spacing_mm == (None if spacing is None else pytest.approx(spacing, abs=1e-4))
    for name in fd.REAL_NAMES:
        assert name.split("^")[0] not in repr(rec.meta)


def test_raw_dataset_without_preamble_or_file_meta(tmp_path):
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset

    ds = pydicom.dcmread(fd.write_dicom(tmp_path / "a.dcm", fd.ramp_frames(t=3), FrameTime=50))
    del ds.file_meta
    with open(tmp_path / "raw.dcm", "wb") as handle:  # old archives: bare implicit-VR dataset
        out = DicomFileLike(handle)
        out.is_little_endian, out.is_implicit_VR = True, True
        write_dataset(out, ds)
    rec = read_dicom(tmp_path / "raw.dcm")
    assert (rec.n_frames, rec.fps, rec.meta["transfer_syntax"]) == (3, 20.0, "Implicit VR Little Endian")
    np.testing.assert_array_equal(_all(rec), fd.ramp_frames(t=3))

"""NIfTI 2-D+time reader: layouts, orientation, spacing, frame rate, scaling, errors, ingest."""

from __future__ import annotations

import logging

import numpy as np
import pytest

nib = pytest.importorskip("nibabel", reason="nibabel (pyproject: nibabel>=5.2) is not installed")

from usssl.errors import DataError
from usssl.io.nifti import read_nifti


def _save(path, data, zooms, units=("mm", "sec"), slope=None):
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_zooms(zooms)
    img.header.set_xyzt_units(*units)
    if slope is not None:
        img.header.set_slope_inter(*slope)
    nib.save(img, str(path))
    return path


def _movie(x=12, y=8, t=7) -> np.ndarray:
    """(X, Y, T) uint8 with a distinct value per pixel and frame."""
    xx, yy, tt = np.meshgrid(np.arange(x), np.arange(y), np.arange(t), indexing="ij")
    return ((xx * 3 + yy * 7 + tt * 11) % 256).astype(np.uint8)


def test_xyt_uint8_frames_spacing_and_rate(tmp_path):
    data = _movie()
    (tmp_path / "site").mkdir()
    path = _save(tmp_path / "site" / "scan.nii.gz", data, (0.5, 0.25, 0.04))
    rec = read_nifti(path, tmp_path)
    assert rec.source == "site/scan.nii.gz" and rec.meta["fps_source"] == "pixdim"
    assert (rec.n_frames, rec.height, rec.width) == (7, 8, 12) and rec.fps == pytest.approx(25.0)
    assert rec.spacing_mm == pytest.approx((0.25, 0.5))  # (row = y, column = x)
    blocks = list(rec.iter_frames(chunk=3))
    assert [len(b) for b in blocks] == [3, 3, 1]
    frames = np.concatenate(blocks)
    assert frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, np.transpose(data, (2, 1, 0)))  # frame t = data[:, :, t].T
    np.testing.assert_allclose(rec.timestamps, np.arange(7) * 0.04)


def test_xy1t_int16_scaled_in_ms_and_micron(tmp_path):
    data = (_movie(t=5).astype(np.int16) * 4 - 300)[:, :, None, :]  # (X, Y, 1, T), values -300..720
    path = _save(tmp_path / "a.nii", data, (500.0, 500.0, 1.0, 20.0), units=("micron", "msec"))
    rec = read_nifti(path)
    assert rec.n_frames == 5 and rec.fps == pytest.approx(50.0)
    assert rec.spacing_mm == pytest.approx((0.5, 0.5))
    frames = np.concatenate(list(rec.iter_frames()))
    values = np.transpose(data[:, :, 0], (2, 1, 0)).astype(float)
    lo, hi = values.min(), values.max()  # the 5 sampled frames are all frames here
    np.testing.assert_array_equal(frames, np.clip(np.rint((values - lo) * 255 / (hi - lo)), 0, 255))
    assert frames.min() == 0 and frames.max() == 255


def test_no_time_unit_falls_back_to_30_fps(tmp_path, caplog):
    path = _save(tmp_path / "b.nii", _movie(), (1.0, 1.0, 1.0), units=("unknown", "unknown"))
    with caplog.at_level(logging.WARNING, logger="usssl.io.nifti"):
        rec = read_nifti(path)
    assert rec.fps == 30.0 and rec.meta["fps_source"] == "fallback" and rec.spacing_mm is None
    assert "assuming 30 fps" in caplog.text


def test_volumes_and_junk_are_data_errors(tmp_path):
    path = _save(tmp_path / "vol.nii", np.zeros((4, 4, 3, 2), np.uint8), (1, 1, 1, 1))
    with pytest.raises(DataError, match=r"vol.nii: NIfTI of shape \(4, 4, 3, 2\) is not 2-D\+time"):
        read_nifti(path)
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DataError, match="junk.nii.gz: not a readable NIfTI"):
        read_nifti(tmp_path / "junk.nii.gz")


def test_ingest_reads_nifti_with_its_labels(tmp_path, monkeypatch):
    from usssl.config import IngestConfig
    from usssl.data.cache import Cache
    from usssl.data.ingest import ingest
    from usssl.io.registry import recording_stem

    monkeypatch.setenv("USSSL_SUBJECT_KEY", "nifti-key")
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        _save(src / f"cine_{k}.nii.gz", rng.integers(0, 256, (20, 16, 10), dtype=np.uint8), (0.3, 0.3, 0.1))
    (src / "labels.csv").write_text("video,frame,plane\n" + "".join(f"cine_0,{i},heart\n" for i in range(10)))
    assert recording_stem(src / "cine_0.nii.gz") == "cine_0"
    cfg = IngestConfig(size=(8, 10), fps=None, crop="none", workers=1)
    summary = ingest([src], tmp_path / "cache", cfg, progress=False)
    assert summary.n_ok == 2 and summary.n_frames == 20
    cache = Cache(tmp_path / "cache")
    index = cache.index
    assert index["fps"].tolist() == pytest.approx([10.0, 10.0])
    assert index["spacing_mm_x"].tolist() == pytest.approx([0.3 * 20 / 10] * 2)
    assert index["spacing_mm_y"].tolist() == pytest.approx([0.3 * 16 / 8] * 2)
    assert sorted(index["n_labelled"]) == [0, 10]
    assert "nifti: 2" in (tmp_path / "cache" / "DATA_CARD.md").read_text()

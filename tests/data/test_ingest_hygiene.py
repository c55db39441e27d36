"""Frame hygiene at ingest: static overlays blanked, burned-in DICOMs refused, colour Doppler
flagged (and dropped on request), spacing after crop + resize, side-file narration."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "privacy"))
import fixtures_dicom as fd  # noqa: E402
import fixtures_video as fx  # noqa: E402
from test_region import MARKER_X, MARKER_Y, with_marker  # noqa: E402

from usssl.config import IngestConfig  # noqa: E402
from usssl.data.cache import FLAG_DOPPLER, Cache  # noqa: E402
from usssl.data.ingest import REGION_SAMPLES, ingest, kept_frames  # noqa: E402
from usssl.data.frames import BURNED_IN_REFUSED, imaging_geometry  # noqa: E402
from usssl.errors import DataError  # noqa: E402
from usssl.io.dicom import read_dicom  # noqa: E402
from usssl.io.video import read_video  # noqa: E402
from usssl.privacy.region import crop_resize, imaging_mask, mask_box  # noqa: E402

CFG = IngestConfig(size=(16, 16), fps=None, workers=1)
FAN = fx.fan_box()


class DropConfig(IngestConfig):
    """IngestConfig with the drop switches the lead adds (read with getattr by ingest)."""

    drop_frozen: bool = False
    drop_doppler: bool = False


def _shards(summary) -> dict[str, dict]:
    """source -> shard.json (or the report row for skipped files)."""
    report = pd.read_csv(summary.report_path, dtype={"shard": str, "reason": str}).fillna({"shard": "", "reason": ""})
    out = {}
    for row in report.itertuples():
        path = summary.cache_dir / "shards" / str(row.shard) / "shard.json"
        out[row.source] = json.loads(path.read_text()) if row.status == "ok" else row._asdict()
    return out


def _other_subject(src: Path) -> None:
    """A second subject: a subject-level split needs two."""
    flipped = np.ascontiguousarray(fd.ramp_frames(t=6)[:, :, ::-1])  # frames no other test file has (no duplicate)
    fd.write_dicom(src / "other.dcm", flipped, FrameTime=40.0, PatientID="PID-OTHER-1")


def test_static_marker_in_a_dicom_region_is_blanked_and_anatomy_kept(tmp_path):
    frames, marker = with_marker(fx.render(30))
    fd.write_dicom(tmp_path / "src" / "a.dcm", frames, FrameTime=40.0, regions=[fd.region(FAN)])
    _other_subject(tmp_path / "src")
    size = (FAN[3] - FAN[1], FAN[2] - FAN[0])  # the region's own size: no resampling, exact pixels
    summary = ingest([tmp_path / "src"], tmp_path / "cache", CFG.model_copy(update={"size": size}),
                     progress=False)  # fmt: skip
    info = _shards(summary)["a.dcm"]
    assert info["crop_box"] == list(FAN)
    cached = Cache(summary.cache_dir).shard(info["shard"]).frames
    crop = frames[:, FAN[1] : FAN[3], FAN[0] : FAN[2]]
    ring = cv2.dilate(marker.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    ring = ring[FAN[1] : FAN[3], FAN[0] : FAN[2]]
    assert crop[:, marker[FAN[1] : FAN[3], FAN[0] : FAN[2]]].min() == 230  # the marker was there
    assert cached[:, marker[FAN[1] : FAN[3], FAN[0] : FAN[2]]].max() == 0  # and is gone
    np.testing.assert_array_equal(cached[:, ~ring], crop[:, ~ring])  # everything else untouched
    assert 17 <= info["static_pixels"] <= ring.sum() == 57
    # the text below the fan lies inside the region's box here (box = fan's bounding box): blanked too
    assert cached[:, fx.TEXT_BOX[1] - FAN[1] :].max() == 0 if FAN[3] > fx.TEXT_BOX[1] else True


def test_a_video_with_a_static_marker_and_the_corpus_where_nothing_is_static(tmp_path):
    corpus = fx.make_corpus(tmp_path / "SRC", n_subjects=1)
    marked, marker = with_marker(fx.render(60, seed=5))
    fx.write_video(tmp_path / "SRC" / "videos" / "marked.mp4", marked)
    cfg = IngestConfig(size=(48, 48), fps=15, workers=1)
    summary = ingest([tmp_path / "SRC"], tmp_path / "cache", cfg, progress=False, subject_per_recording=True)
    shards, cache = _shards(summary), Cache(tmp_path / "cache")
    # nothing static inside the fan: the cache is exactly crop + mask + resize of the decoded frames
    plain = shards["videos/scan_000.mp4"]
    assert plain["static_pixels"] == 0 and plain["colour"] is False
    decoded = np.concatenate(list(read_video(corpus["videos"][0]).iter_frames()))
    picks = np.unique(np.linspace(0, len(decoded) - 1, REGION_SAMPLES).round().astype(int))
    mask = imaging_mask(decoded[picks])
    kept = kept_frames(np.arange(len(decoded)) / fx.FPS, 15, fx.FPS)
    expected = crop_resize(decoded[kept], mask_box(mask), (48, 48), mask)
    np.testing.assert_array_equal(cache.shard(plain["shard"]).frames, expected)
    # the marked clip: the marker's cached pixels are 0, the moving anatomy is not
    info = shards["videos/marked.mp4"]
    assert info["static_pixels"] >= 17
    x0, y0, x1, y1 = info["crop_box"]
    fy, fx_ = (np.array([MARKER_Y, MARKER_X]) - [y0, x0] + 0.5) * [48 / (y1 - y0), 48 / (x1 - x0)] - 0.5
    frames = cache.shard(info["shard"]).frames
    assert frames[:, int(round(fy)), int(round(fx_))].max() == 0
    anatomy = frames[:, int(round(fy)) - 8, int(round(fx_))]  # 8 cached pixels above: speckle
    assert anatomy.min() > 20 and anatomy.std() > 3
    # imaging_geometry (which usssl predict calls too) decides exactly what the shard holds
    path = tmp_path / "SRC" / "videos" / "marked.mp4"
    rec = read_video(path, audio=False)
    geo = imaging_geometry(rec, path, "auto", 15)
    assert geo.crop_method == "motion" and not geo.colour and list(geo.box) == info["crop_box"]
    assert int(geo.static.sum()) == info["static_pixels"] and geo.static[marker].all()
    np.testing.assert_array_equal(geo.keep, geo.mask & ~geo.static)
    np.testing.assert_array_equal(geo.src_idx, kept_frames(geo.timestamps, 15, rec.fps))
    assert geo.frames.shape == (60, fx.SIZE, fx.SIZE)  # small: decoded once, kept for writing
    np.testing.assert_array_equal(frames, crop_resize(geo.frames[geo.src_idx], geo.box, (48, 48), geo.keep))


def test_imaging_geometry_of_a_given_box_the_full_frame_and_a_refused_dicom(tmp_path):
    marked, marker = with_marker(fx.render(30, seed=5))
    path = fx.write_video(tmp_path / "marked.mp4", marked)
    rec = read_video(path, audio=False)
    boxed = imaging_geometry(rec, path, (10, 5, 80, 70), None)
    assert boxed.crop_method == "box" and boxed.box == (10, 5, 80, 70) and boxed.mask is None
    np.testing.assert_array_equal(boxed.src_idx, np.arange(30))  # fps None: every frame
    inside = np.zeros(marker.shape, bool)
    inside[5:70, 10:80] = True
    assert boxed.static[marker].all() and not (boxed.static & ~inside).any()
    np.testing.assert_array_equal(boxed.keep, inside & ~boxed.static)
    full = imaging_geometry(rec, path, "none", None)
    assert full.crop_method == "full_frame" and full.box == (0, 0, fx.SIZE, fx.SIZE) and full.mask is None
    assert full.static[fx.TEXT_BOX[1] + 4, fx.TEXT_BOX[0] : fx.TEXT_BOX[2]].any()  # the text below the fan
    fd.write_dicom(tmp_path / "burned.dcm", fd.ramp_frames(t=6), FrameTime=40.0, BurnedInAnnotation="YES")
    with pytest.raises(DataError, match=BURNED_IN_REFUSED):
        imaging_geometry(read_dicom(tmp_path / "burned.dcm"), tmp_path / "burned.dcm", "auto", None)


def test_burned_in_annotation_without_a_region_is_refused_unless_a_box_is_set(tmp_path):
    frames = fd.ramp_frames(t=6)
    fd.write_dicom(tmp_path / "src" / "burned.dcm", frames, FrameTime=40.0, BurnedInAnnotation="YES")
    fd.write_dicom(tmp_path / "src" / "burned_region.dcm", frames[::-1], FrameTime=40.0, BurnedInAnnotation="YES",
                   regions=[fd.region((4, 2, 28, 22))])  # fmt: skip  (other frames: identical ones are one recording)
    fd.write_dicom(tmp_path / "src" / "clean.dcm", frames[1:], FrameTime=40.0, BurnedInAnnotation="NO",
                   PatientID="PID-OTHER-2")  # fmt: skip
    _other_subject(tmp_path / "src")
    summary = ingest([tmp_path / "src"], tmp_path / "cache", CFG, progress=False)
    assert (summary.n_ok, summary.n_skipped) == (3, 1)
    row = _shards(summary)["burned.dcm"]
    assert row["status"] == "failed" and row["reason"].startswith("burned.dcm: BurnedInAnnotation is YES")
    assert "set ingest.crop: [x0, y0, x1, y1]" in row["reason"] and "32 x 24" in row["reason"]
    none = ingest([tmp_path / "src"], tmp_path / "cache_none", CFG.model_copy(update={"crop": "none"}),
                  progress=False)  # fmt: skip
    assert (none.n_ok, none.n_skipped) == (2, 2)  # crop none keeps the text: region or not, refused
    assert "crop is 'none'" in _shards(none)["burned_region.dcm"]["reason"]
    manual = ingest([tmp_path / "src"], tmp_path / "cache_box", CFG.model_copy(update={"crop": (2, 2, 30, 20)}),
                    progress=False)  # fmt: skip
    assert (manual.n_ok, manual.n_skipped) == (4, 0)
    assert _shards(manual)["burned.dcm"]["crop_box"] == [2, 2, 30, 20]
    card = (tmp_path / "cache" / "DATA_CARD.md").read_text()
    assert "refused for burned-in annotation without an imaging region" in card and "1 input file(s)" in card


def _doppler_clip(t: int = 30, start: int = 10, stop: int = 20) -> np.ndarray:
    """(t, H, W, 3) grey speckle fan (R = G = B); frames [start, stop) carry a pulsing red/blue jet."""
    grey = fx.render(t, seed=3)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for i in range(start, stop):
        r = 6 + i % 3
        jet = np.zeros(grey.shape[1:], np.uint8)
        cv2.ellipse(jet, (48, 45), (r + 4, r), 0, 0, 360, 1, -1)
        rgb[i][jet > 0] = (220, 30, 30) if i % 2 else (30, 40, 220)
    return rgb


def _tone_wav(path: Path, seconds: float, rate: int = 16000) -> np.ndarray:
    """A WAV whose level steps every 1/30 s: sample value = 0.01 * (index of the 1/30 s frame)."""
    n = int(seconds * rate)
    level = (np.floor(np.arange(n) * 30 / rate) * 0.01).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_f32le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(level[None], format="flt", layout="mono")
        frame.sample_rate = rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return level


def test_colour_doppler_frames_are_flagged_and_dropped_with_their_audio(tmp_path):
    rgb = _doppler_clip()
    src = tmp_path / "src"
    fd.write_dicom(src / "echo.dcm", rgb, photometric="RGB", FrameTime=1000 / 30, regions=[fd.region(FAN)])
    _tone_wav(src / "echo.wav", 1.0)  # narration side file: the DICOM has no audio track
    _other_subject(src)
    summary = ingest([src], tmp_path / "cache", CFG, progress=False)
    info = _shards(summary)["echo.dcm"]
    shard = Cache(summary.cache_dir).shard(info["shard"])
    expected = np.where((np.arange(30) >= 10) & (np.arange(30) < 20), FLAG_DOPPLER, 0)
    np.testing.assert_array_equal(shard.flags, expected)
    assert info["colour"] is True and info["n_doppler"] == 10 and info["narration_file"] is True
    grey = rgb[..., 0]  # R = G = B outside the jet: grey conversion is exact there
    crop = crop_resize(grey, FAN, (16, 16))
    np.testing.assert_array_equal(shard.frames[:10], crop[:10])
    assert shard.audio.shape == (16000,) and shard.audio[int(25.5 * 16000 / 30)] == pytest.approx(0.25)
    cfg = DropConfig(size=(16, 16), fps=None, workers=1, drop_doppler=True)
    dropped = ingest([src], tmp_path / "cache_drop", cfg, progress=False)
    info = _shards(dropped)["echo.dcm"]
    shard = Cache(dropped.cache_dir).shard(info["shard"])
    assert len(shard) == 20 and info["n_dropped"] == 10 and not shard.flags.any()
    np.testing.assert_array_equal(shard.frames, crop[np.r_[0:10, 20:30]])
    # audio of the dropped frames is cut too: cached frame k still sits at k / fps
    assert len(shard.audio) == pytest.approx(20 / 30 * 16000, abs=2)
    level = [float(shard.audio[int((k + 0.5) * 16000 / 30)]) for k in (5, 9, 10, 19)]
    assert level == pytest.approx([0.05, 0.09, 0.20, 0.29])
    card = (dropped.cache_dir / "DATA_CARD.md").read_text()
    assert "10 colour Doppler; 10 dropped" in card and "drop_doppler: True" in card


def _colour_video(path: Path, rgb: np.ndarray, gop: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fx.FPS, options={"preset": "ultrafast", "crf": "10",
                                                                        "g": str(gop)})  # fmt: skip
        stream.width, stream.height, stream.pix_fmt = rgb.shape[2], rgb.shape[1], "yuv420p"
        for img in rgb:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
        container.mux(stream.encode(None))
    return path


def test_colour_doppler_in_a_video_is_found_from_its_keyframes(tmp_path):
    rgb = _doppler_clip()
    _colour_video(tmp_path / "src" / "doppler.mp4", rgb, gop=5)  # a keyframe inside the jet (frame 10)
    _colour_video(tmp_path / "src" / "late.mp4", rgb, gop=300)  # one keyframe, before the jet
    fx.make_scan(tmp_path / "src" / "grey.mp4", with_audio=False)
    cfg = IngestConfig(size=(32, 32), fps=None, workers=1, crop=FAN)
    summary = ingest([tmp_path / "src"], tmp_path / "cache", cfg, progress=False)
    shards, cache = _shards(summary), Cache(summary.cache_dir)
    flags = cache.shard(shards["doppler.mp4"]["shard"]).flags
    assert shards["doppler.mp4"]["colour"] is True
    np.testing.assert_array_equal(flags & FLAG_DOPPLER, np.where((np.arange(30) >= 10) & (np.arange(30) < 20), 2, 0))
    assert shards["late.mp4"]["colour"] is False and shards["late.mp4"]["n_doppler"] == 0  # the stated limit
    assert shards["grey.mp4"]["colour"] is False and shards["grey.mp4"]["n_doppler"] == 0
    # colour frames become BT.601 grey: close to the grey-decoded frames of the other encode
    late = cache.shard(shards["late.mp4"]["shard"]).frames[:10].astype(int)
    diff = np.abs(cache.shard(shards["doppler.mp4"]["shard"]).frames[:10] - late)
    assert diff.mean() < 0.6 and diff.max() <= 4


def test_spacing_follows_crop_and_resize(tmp_path):
    frames = fd.ramp_frames(t=5)
    fd.write_dicom(tmp_path / "src" / "cm.dcm", frames, FrameTime=40.0, regions=[fd.region((4, 2, 28, 22))])
    fd.write_dicom(tmp_path / "src" / "mm_unknown.dcm", frames[::-1], FrameTime=40.0,  # other frames: not a duplicate
                   regions=[fd.region((4, 2, 28, 22), units=0)])  # fmt: skip
    fd.write_dicom(tmp_path / "src" / "none.dcm", frames[1:], FrameTime=40.0, PatientID="PID-OTHER-3")
    summary = ingest([tmp_path / "src"], tmp_path / "cache", CFG, progress=False)
    shards = _shards(summary)
    # 0.02 cm = 0.2 mm source pixels; box 24 x 20 -> 16 x 16: x 0.2 * 24 / 16, y 0.2 * 20 / 16
    assert shards["cm.dcm"]["spacing_mm"] == pytest.approx([0.25, 0.3])
    assert shards["mm_unknown.dcm"]["spacing_mm"] is None and shards["none.dcm"]["spacing_mm"] is None
    index = Cache(summary.cache_dir).index.set_index("shard")
    row = index.loc[shards["cm.dcm"]["shard"]]
    assert row["spacing_mm_x"] == pytest.approx(0.3) and row["spacing_mm_y"] == pytest.approx(0.25)
    assert np.isnan(index.loc[shards["none.dcm"]["shard"], "spacing_mm_x"])
    assert index["spacing_mm_y"].dtype == np.float64

"""PyAV video reader: frame count, rate, timestamps, lazy decoding, aligned narration."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import av
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import fixtures_video as fx  # noqa: E402

from usssl.errors import DataError  # noqa: E402
from usssl.io.video import read_video  # noqa: E402

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "covid19_ultrasound_lung_pocus"
AAC_FRAME_S = 1024 / fx.AUDIO_RATE


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    return fx.make_scan(tmp_path_factory.mktemp("video") / "site" / "scan.mp4")


def _onset(audio: np.ndarray, rate: int, level: float = 0.1) -> float:
    """Time in seconds of the first sample louder than ``level``."""
    return float(np.argmax(np.abs(audio) > level)) / rate


def test_rate_count_timestamps_and_source(scan):
    rec = read_video(scan, scan.parent.parent)
    assert rec.source == "site/scan.mp4"
    assert rec.fps == pytest.approx(fx.FPS)
    assert rec.n_frames == int(fx.SECONDS * fx.FPS)
    assert (rec.height, rec.width) == (fx.SIZE, fx.SIZE)
    np.testing.assert_allclose(rec.timestamps, np.arange(rec.n_frames) / fx.FPS, atol=1e-9)
    assert rec.duration_s == pytest.approx(fx.SECONDS)


def test_iter_frames_is_lazy_grey_and_chunked(scan):
    rec = read_video(scan)
    blocks = list(rec.iter_frames(chunk=16))
    assert [len(b) for b in blocks] == [16, 16, 16, 12]
    frames = np.concatenate(blocks)
    assert frames.dtype == np.uint8 and frames.shape == (60, fx.SIZE, fx.SIZE)
    # H.264 at crf 10 of the rendered frames: close to the source pixels
    assert np.abs(frames.astype(float) - fx.render(60)).mean() < 2.0
    again = np.concatenate(list(rec.iter_frames(chunk=64)))  # each call restarts from frame 0
    np.testing.assert_array_equal(frames, again)


def test_colour_frames(scan):
    block = next(read_video(scan, grayscale=False).iter_frames(chunk=4))
    assert block.shape == (4, fx.SIZE, fx.SIZE, 3) and block.dtype == np.uint8


def test_audio_is_none_without_an_audio_stream(tmp_path, scan):
    silent = fx.make_scan(tmp_path / "silent.mp4", with_audio=False)
    rec = read_video(silent)
    assert rec.audio is None and rec.sample_rate is None
    assert read_video(scan, audio=False).audio is None


@pytest.mark.parametrize("rate", [None, 8000])
def test_audio_sample_zero_is_the_first_frame(scan, rate):
    """The audio stream starts AUDIO_DELAY after the video; a burst at BURST_TIME (video time)
    must land at BURST_TIME in the Recording's audio, within one AAC frame."""
    rec = read_video(scan, audio_rate=rate)
    expected_rate = rate or fx.AUDIO_RATE
    assert rec.sample_rate == expected_rate and rec.audio.dtype == np.float32
    assert rec.audio.ndim == 1
    assert np.abs(rec.audio[: int(0.2 * expected_rate)]).max() < 1e-3  # zero padding before start
    assert _onset(rec.audio, expected_rate) == pytest.approx(fx.BURST_TIME, abs=AAC_FRAME_S)
    assert len(rec.audio) / expected_rate == pytest.approx(fx.SECONDS, abs=3 * AAC_FRAME_S)


def test_audio_starting_before_the_video_is_trimmed(tmp_path):
    """Video shown from 0.5 s, audio from 0 s: the audio before the first frame is cut."""
    audio = fx.tone_bursts(1.5, bursts=((1.0, 0.2),))  # burst 1.0 s into the audio stream
    path = fx.write_video(tmp_path / "late_video.mp4", fx.render(30), audio=audio, first_pts=15)
    rec = read_video(path)
    assert rec.timestamps[0] == 0.0 and rec.n_frames == 30
    assert _onset(rec.audio, rec.sample_rate) == pytest.approx(0.5, abs=AAC_FRAME_S)


def test_container_tags_are_not_copied(tmp_path):
    path = tmp_path / "tagged.mp4"
    with av.open(str(path), "w") as container:
        container.metadata["title"] = "Zzyzx^Quillfeather"
        container.metadata["comment"] = "PID-9301-QX"
        stream = container.add_stream("libx264", rate=30)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32), 40 * i, np.uint8), format="gray")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with av.open(str(path)) as container:
        assert container.metadata.get("title") == "Zzyzx^Quillfeather"  # the tag really is there
    rec = read_video(path)
    text = json.dumps(rec.meta)
    assert "Zzyzx" not in text and "PID-9301" not in text and "title" not in rec.meta


def test_unreadable_file_is_a_data_error_naming_it(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataError, match="broken.mp4"):
        read_video(bad)
    with pytest.raises(DataError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")


@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent (only in CI)")
def test_real_clips_of_every_container():
    """The smallest real clip per container: frame count and rate as FFmpeg decodes them."""
    meta = json.loads((REALDATA / "videos_metadata.json").read_text())
    smallest: dict[str, dict] = {}
    for item in meta:
        ext = Path(item["local"]).suffix.lower()
        if ext not in smallest or item["size"] < smallest[ext]["size"]:
            smallest[ext] = item
    assert {".mp4", ".avi", ".gif"} <= set(smallest)
    for item in smallest.values():
        rec = read_video(REALDATA / item["local"], REALDATA, audio=False)
        assert rec.n_frames == item["frames_decoded"], item["local"]
        assert rec.fps == pytest.approx(item["fps"], abs=0.05), item["local"]
        assert sum(len(b) for b in rec.iter_frames(32)) == rec.n_frames, item["local"]
        assert np.all(np.diff(rec.timestamps) > 0), item["local"]

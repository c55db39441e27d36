"""The synthetic fetal corpus: determinism, alignment of frames/labels/speech/gaze, file formats."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest

from usssl.data.synth import PLANES, fan_geometry, generate, render_scan
from usssl.errors import ConfigError, DataError
from usssl.data.synth import voice as voice_mod

SEED = 3
SUBJECTS = 3
SETTINGS = dict(duration_s=8.0, fps=30, size=(96, 96), audio_rate=16000)
AAC_FRAME = 1024


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "corpus", subjects=SUBJECTS, seed=SEED,
                    **SETTINGS)


@pytest.fixture(scope="module")
def scans() -> list:
    return [render_scan(k, SEED, **SETTINGS) for k in range(SUBJECTS)]


def decode_video(path: Path) -> tuple[np.ndarray, float]:
    """uint8 (T, H, W) frames and the stream's average frame rate."""
    with av.open(str(path)) as c:
        rate = float(c.streams.video[0].average_rate)
        frames = np.stack([f.to_ndarray(format="gray") for f in c.decode(video=0)])
    return frames, rate


def decode_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])


def test_same_seed_same_corpus_other_seed_differs(corpus: Path, scans: list,
                                                   tmp_path: Path) -> None:
    again = generate(tmp_path / "again", subjects=SUBJECTS, seed=SEED, write_dicom=False,
                     **SETTINGS)
    for name in ("labels.csv", "speech.csv", "gaze.csv", "subjects.csv"):
        assert (again / name).read_bytes() == (corpus / name).read_bytes(), name
    other = generate(tmp_path / "other", subjects=1, seed=SEED + 1, write_dicom=False, **SETTINGS)
    assert (other / "labels.csv").read_bytes() != (corpus / "labels.csv").read_bytes()
    assert (other / "subjects.csv").read_bytes() != (corpus / "subjects.csv").read_bytes()
    twin, stranger = render_scan(1, SEED, **SETTINGS), render_scan(1, SEED + 1, **SETTINGS)
    for field in ("frames", "audio", "labels", "masks", "gaze"):
        np.testing.assert_array_equal(getattr(twin, field), getattr(scans[1], field))
    assert twin.words == scans[1].words
    assert not np.array_equal(stranger.frames, scans[1].frames)
    assert not np.array_equal(stranger.audio, scans[1].audio)


def test_subject_does_not_depend_on_corpus_size(corpus: Path, scans: list) -> None:
    labels = pd.read_csv(corpus / "labels.csv")
    for scan in scans:
        got = labels[labels.video == scan.name].plane.to_list()
        assert got == [PLANES[i] for i in scan.labels]
    small = render_scan(1, SEED, **{**SETTINGS, "duration_s": 4.0})
    assert small.subject == scans[1].subject


def test_video_frames_and_rate_match_labels_and_corpus_json(corpus: Path, scans: list) -> None:
    meta = json.loads((corpus / "corpus.json").read_text())
    labels = pd.read_csv(corpus / "labels.csv")
    assert list(labels.columns) == ["video", "frame", "time_s", "plane"]
    assert meta["synthetic"] is True and meta["planes"] == list(PLANES) and len(PLANES) >= 7
    assert meta["size"] == [96, 96] and meta["n_frames"] == 240
    for scan in scans:
        frames, rate = decode_video(corpus / "videos" / f"{scan.name}.mp4")
        rows = labels[labels.video == scan.name]
        assert frames.shape == (meta["n_frames"], *meta["size"]) == scan.frames.shape
        assert len(rows) == meta["n_frames"] and rows.frame.to_list() == list(range(len(rows)))
        assert rate == pytest.approx(meta["fps"])
        np.testing.assert_allclose(rows.time_s, rows.frame / meta["fps"], atol=1e-6)
        assert np.abs(frames.astype(int) - scan.frames).mean() < 3.0  # crf 18


def test_mask_nonempty_exactly_on_plane_frames(corpus: Path, scans: list) -> None:
    labels = pd.read_csv(corpus / "labels.csv")
    for scan in scans:
        masks = np.load(corpus / "masks" / f"{scan.name}.npz")["masks"]
        assert masks.dtype == np.uint8 and masks.shape == scan.frames.shape
        planes = (labels[labels.video == scan.name].plane != "background").to_numpy()
        np.testing.assert_array_equal(masks.any(axis=(1, 2)), planes)
    assert any(len(set(s.labels.tolist())) >= 2 for s in scans)


def test_speech_is_loud_where_spoken_and_names_the_plane(corpus: Path, scans: list) -> None:
    speech = pd.read_csv(corpus / "speech.csv")
    labels = pd.read_csv(corpus / "labels.csv")
    assert list(speech.columns) == ["video", "start_s", "end_s", "word"] and len(speech) >= 2
    rate, fps = SETTINGS["audio_rate"], SETTINGS["fps"]
    for scan in scans:
        audio = decode_audio(corpus / "videos" / f"{scan.name}.mp4")
        assert len(audio) >= len(scan.audio)
        audio = audio[: len(scan.audio)]
        words = speech[speech.video == scan.name]
        silent = np.ones(len(audio), bool)
        for w in words.itertuples():
            i0, i1 = int(w.start_s * rate) - AAC_FRAME, int(w.end_s * rate) + AAC_FRAME
            silent[max(0, i0) : i1] = False
        floor = np.sqrt(np.mean(audio[silent] ** 2))
        plane = labels[labels.video == scan.name].plane.to_numpy()
        for w in words.itertuples():
            inside = audio[int(w.start_s * rate) : int(w.end_s * rate)]
            assert np.sqrt(np.mean(inside**2)) > 10 * floor, w
            assert plane[int((w.start_s + w.end_s) / 2 * fps)] == w.word
        assert [(w.word, round(w.start_s, 6)) for w in scan.words] == [
            (w.word, w.start_s) for w in words.itertuples()]


def _mean_spectrum(wave: np.ndarray, n: int = 512) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(wave, n)[:: n // 2] * np.hanning(n)
    return np.abs(np.fft.rfft(frames, axis=1)).mean(axis=0)


def test_builtin_voice_words_are_distinct_and_reproducible() -> None:
    spectra = {p: _mean_spectrum(voice_mod.builtin_word(p, 16000)) for p in PLANES[1:]}
    for a in spectra:
        for b in spectra:
            if a < b:
                sa, sb = spectra[a], spectra[b]
                cos = sa @ sb / np.linalg.norm(sa) / np.linalg.norm(sb)
                assert cos < 0.9, (a, b, cos)
    one, two = voice_mod.builtin_word("femur", 16000), voice_mod.builtin_word("femur", 16000)
    np.testing.assert_array_equal(one, two)
    assert 0.5 <= len(one) / 16000 <= 1.0 and np.sqrt(np.mean(one**2)) == pytest.approx(1, abs=1e-3)


def test_dicom_matches_raw_frames_and_fan(corpus: Path, scans: list) -> None:
    subjects = pd.read_csv(corpus / "subjects.csv")
    meta = json.loads((corpus / "corpus.json").read_text())
    scan = scans[0]
    ds = pydicom.dcmread(corpus / "dicom" / f"{scan.name}.dcm")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1"
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert int(ds.NumberOfFrames) == len(scan.frames)
    assert float(ds.FrameTime) == pytest.approx(1000 / SETTINGS["fps"], abs=1e-3)
    region = ds.SequenceOfUltrasoundRegions[0]
    box = [region.RegionLocationMinX0, region.RegionLocationMinY0,
           region.RegionLocationMaxX1 + 1, region.RegionLocationMaxY1 + 1]  # DICOM: inclusive
    assert box == meta["fan"]["bbox"] == list(scan.fan.bbox)
    assert region.PhysicalUnitsXDirection == 3 and region.PhysicalDeltaX == pytest.approx(12 / 96)
    np.testing.assert_array_equal(ds.pixel_array, scan.frames)
    row = subjects[subjects.video == scan.name].iloc[0]
    assert str(ds.PatientName) == row.patient_name and ds.PatientID == row.patient_id
    assert ds.BurnedInAnnotation == "YES" and ds.PhotometricInterpretation == "MONOCHROME2"


def test_mp4_carries_no_patient_data(corpus: Path, scans: list) -> None:
    for scan in scans:
        blob = (corpus / "videos" / f"{scan.name}.mp4").read_bytes()
        for phi in (scan.subject.patient_id, scan.subject.patient_name.split("^")[0],
                    scan.subject.study_date):
            assert phi.encode() not in blob


def test_burned_in_text_lies_outside_the_fan(corpus: Path, scans: list) -> None:
    meta = json.loads((corpus / "corpus.json").read_text())
    fan = fan_geometry(tuple(meta["size"])).mask()
    for scan in scans:
        x0, y0, x1, y1 = meta["burned_in_text_box"][scan.name]
        assert not fan[y0:y1, x0:x1].any()
        text = scan.frames[:, y0:y1, x0:x1]
        assert (text > 0).sum(axis=(1, 2)).min() > 20  # on every frame
        np.testing.assert_array_equal(text[0], text[-1])  # static
        black = ~fan
        black[y0:y1, x0:x1] = False
        assert not scan.frames[:, black].any()  # outside the fan and the text: black


def test_gaze_follows_the_anatomy(corpus: Path, scans: list) -> None:
    gaze = pd.read_csv(corpus / "gaze.csv")
    assert list(gaze.columns) == ["video", "frame", "time_s", "x", "y"]
    hits, total = 0, 0
    for scan in scans:
        g = gaze[gaze.video == scan.name][["x", "y"]].to_numpy()
        assert len(g) == len(scan.frames)
        np.testing.assert_allclose(g, scan.gaze, atol=0.01, equal_nan=True)
        assert (scan.labels[np.isnan(g[:, 0])] == 0).all()  # look-aways only on background
        for t in np.nonzero(scan.labels > 0)[0]:
            near = cv2.dilate(scan.masks[t], np.ones((5, 5), np.uint8))
            x, y = np.clip(np.rint(g[t]).astype(int), 0, 95)
            hits, total = hits + int(near[y, x] > 0), total + 1
    assert total > 50 and hits / total > 0.7


def test_bad_arguments_and_missing_espeak_are_user_errors(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="subjects"):
        generate(tmp_path / "x", subjects=0)
    with pytest.raises(ConfigError, match="voice"):
        generate(tmp_path / "x", voice="robot")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DataError, match="espeak-ng"):
        generate(tmp_path / "x", voice="espeak", **SETTINGS)


def test_espeak_voice_uses_the_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in espeak-ng (0.4 s tone at 22.05 kHz between silences) is read, resampled and
    trimmed; the voice changes the audio only, never the frames."""
    fake = tmp_path / "espeak-ng"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import io, sys, wave, numpy as np\n"
        "t = np.arange(int(0.4 * 22050)) / 22050\n"
        "x = np.concatenate([np.zeros(2205), 0.5 * np.sin(2 * np.pi * 220 * t), np.zeros(2205)])\n"
        "buf = io.BytesIO()\n"
        "w = wave.open(buf, 'wb'); w.setnchannels(1); w.setsampwidth(2); w.setframerate(22050)\n"
        "w.writeframes((x * 32767).astype('<i2').tobytes()); w.close()\n"
        "sys.stdout.buffer.write(buf.getvalue())\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    voice_mod._espeak_cached.cache_clear()
    try:
        wave = voice_mod.speak("femur", 16000, voice="espeak")
        assert len(wave) / 16000 == pytest.approx(0.4, abs=0.01)
        assert np.sqrt(np.mean(wave**2)) == pytest.approx(1, abs=1e-3)
        scan = render_scan(0, SEED, voice="espeak", speak_fraction=1.0, **SETTINGS)
        assert scan.words
        assert all(w.end_s - w.start_s == pytest.approx(0.4, abs=0.01) for w in scan.words)
        np.testing.assert_array_equal(scan.frames, render_scan(0, SEED, **SETTINGS).frames)
    finally:
        voice_mod._espeak_cached.cache_clear()


def test_naming_fraction_sets_how_often_the_word_names_the_plane_and_nothing_else():
    settings = dict(duration_s=60.0, fps=5, size=(48, 48), audio_rate=8000, speak_fraction=1.0)
    named = [render_scan(k, SEED, **settings) for k in range(3)]
    some = [render_scan(k, SEED, naming_fraction=0.3, **settings) for k in range(3)]
    quiet = [render_scan(k, SEED, naming_fraction=0.3, unnamed="silence", **settings) for k in range(3)]

    def plane_words(scan):  # words that name the plane on screen at their middle
        return [w.word == PLANES[scan.labels[int((w.start_s + w.end_s) / 2 * scan.fps)]] for w in scan.words]

    assert all(all(plane_words(s)) for s in named)  # the default: speech is a label channel
    share = np.mean([x for s in some for x in plane_words(s)])
    assert 0.15 < share < 0.45
    assert {w.word for s in some for w in s.words} - set(PLANES) <= set(__import__(
        "usssl.data.synth.scan", fromlist=["FILLER_WORDS"]).FILLER_WORDS)
    assert all(all(plane_words(s)) for s in quiet)  # silence: only plane names, fewer of them
    assert sum(len(s.words) for s in quiet) < 0.5 * sum(len(s.words) for s in named)
    for a, b in zip(named, some):  # the naming never changes the frames or labels
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.labels, b.labels)
    explicit = render_scan(0, SEED, naming_fraction=1.0, **settings)
    assert np.array_equal(explicit.audio, named[0].audio)
    with pytest.raises(ConfigError, match="naming_fraction"):
        generate(Path("unused"), subjects=1, naming_fraction=1.5)

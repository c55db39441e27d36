"""Ingest end to end on tiny fixture scans: index, labels, gaze, audio, privacy, errors, resume."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_video as fx  # noqa: E402

from usssl.config import IngestConfig, SplitConfig  # noqa: E402
from usssl.data.cache import INDEX_COLUMNS, Cache  # noqa: E402
from usssl.data.ingest import ingest, kept_frames  # noqa: E402
from usssl.errors import CacheMismatchError, DataError  # noqa: E402
from usssl.privacy.pseudonym import pseudonym  # noqa: E402
from usssl.privacy.region import map_points  # noqa: E402

KEY = "test-subject-key"
CFG = IngestConfig(size=(32, 32), fps=15, workers=1)


@pytest.fixture(scope="module")
def key_env():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("USSSL_SUBJECT_KEY", KEY)
        mp.setenv("USSSL_KEY_FILE", "/nonexistent/never-created.key")
        yield


@pytest.fixture(autouse=True)
def _key(key_env):
    yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, key_env) -> dict:
    return fx.make_corpus(tmp_path_factory.mktemp("corpus") / "SRC")


@pytest.fixture(scope="module")
def ingested(corpus, tmp_path_factory, key_env):
    out = tmp_path_factory.mktemp("out") / "cache"
    summary = ingest([corpus["root"]], out, CFG, progress=False)
    return summary, Cache(out)


def _stems(cache: Cache) -> dict[str, str]:
    """stem -> shard id, from the report (the only place with source paths)."""
    report = pd.read_csv(cache.root / "ingest_report.csv")
    return {Path(s).stem: shard for s, shard in zip(report["source"], report["shard"])}


def test_index_and_settings(ingested, corpus):
    summary, cache = ingested
    assert (summary.n_ok, summary.n_skipped, summary.n_frames) == (3, 0, 90)
    index = cache.index
    assert list(index.columns) == INDEX_COLUMNS and len(index) == 3
    assert (index["n_frames"] == 30).all() and (index["fps"] == 15.0).all()
    assert (index[["height", "width"]] == 32).all().all()
    assert index["has_audio"].all() and index["has_speech"].dtype == bool
    assert (index["n_labelled"] == 30).all()
    expected = {pseudonym(pid, KEY.encode(), kind="subject") for pid in corpus["subjects"]["patient_id"]}
    assert set(index["subject"]) == expected
    assert sorted(sum(cache.splits.values(), [])) == sorted(expected)
    for _, row in index.iterrows():
        assert row["subject"] in cache.splits[row["split"]]
    settings = cache.settings
    assert settings["classes"] == fx.PLANES  # background first, then sorted
    expected_keys = {"size", "fps", "audio", "audio_rate", "crop", "crop_mode", "split", "usssl_version"}
    assert expected_keys <= set(settings)
    assert "workers" not in settings and "overwrite" not in settings
    assert settings["size"] == [32, 32] and settings["crop_mode"] == "auto"


def test_labels_gaze_audio_at_kept_frames(ingested, corpus):
    _, cache = ingested
    labels = corpus["labels"]
    gaze = corpus["gaze"]
    for stem, shard_id in _stems(cache).items():
        shard = cache.shard(shard_id)
        kept = np.arange(30) * 2  # 30 fps -> 15 fps: every other source frame
        planes = labels[labels["video"] == stem].set_index("frame").loc[kept, "plane"]
        np.testing.assert_array_equal(shard.labels, [fx.PLANES.index(p) for p in planes])
        absent = kept % 10 == 4
        assert np.isnan(shard.gaze[absent]).all() and not np.isnan(shard.gaze[~absent]).any()
        assert len(gaze[gaze["video"] == stem]) == 54
        # gaze is the blob centre: it must sit on the blob in the cached frame
        for k in np.flatnonzero(~absent)[::3]:
            img = shard.frames[k].astype(float)
            weight = np.clip(img - np.percentile(img, 97), 0, None)
            yy, xx = np.mgrid[:32, :32]
            centroid = np.array([(xx * weight).sum(), (yy * weight).sum()]) / weight.sum()
            np.testing.assert_allclose(shard.gaze[k], centroid, atol=1.0)
        assert shard.audio.shape == (32000,) and shard.audio.dtype == np.float32
        onset = np.argmax(np.abs(shard.audio) > 0.1) / 16000
        assert onset == pytest.approx(fx.BURST_TIME, abs=1024 / 16000)
        assert shard.flags.dtype == np.uint8 and shard.flags.sum() == 0


def test_no_patient_identifier_anywhere_in_the_cache(ingested, corpus):
    _, cache = ingested
    secrets = list(corpus["subjects"]["patient_id"]) + list(corpus["subjects"]["patient_name"])
    secrets += [name.split("^")[1] for name in corpus["subjects"]["patient_name"]]
    stems = list(corpus["subjects"]["video"])
    files = [p for p in cache.root.rglob("*") if p.is_file()]
    assert len(files) >= 4 + 3 * 6
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret} found in {path.name}"
        if path.name != "ingest_report.csv":
            for stem in stems:  # source names only in the report
                assert stem.encode() not in data, f"{stem} found in {path.relative_to(cache.root)}"
            assert KEY.encode() not in data
    report = pd.read_csv(cache.root / "ingest_report.csv")
    assert list(report.columns) == ["source", "status", "reason", "frames", "duration_s", "fps", "shard",
                                    "cached_frames", "audio_kept", "text_blanked_pct", "text_heavy"]  # fmt: skip
    assert report["audio_kept"].all()  # the corpus's videos carry narration: the report says which kept it
    assert sorted(report["source"]) == [f"videos/{s}.mp4" for s in stems]


def test_corrupt_file_fails_in_parallel_and_the_rest_is_ingested(corpus, tmp_path, caplog):
    src = tmp_path / "SRC"
    shutil.copytree(corpus["root"], src)
    (src / "videos" / "broken.mp4").write_bytes(np.random.default_rng(1).bytes(3000))
    cfg = CFG.model_copy(update={"workers": 2})
    with caplog.at_level(logging.INFO, logger="usssl"):
        summary = ingest([src], tmp_path / "cache", cfg, progress=False)
    assert (summary.n_ok, summary.n_skipped) == (3, 1)
    report = pd.read_csv(summary.report_path).set_index("source")
    assert report.loc["videos/broken.mp4", "status"] == "failed"
    assert "videos/broken.mp4" in report.loc["videos/broken.mp4", "reason"]
    assert str(tmp_path) not in report.loc["videos/broken.mp4", "reason"]
    assert (report.drop("videos/broken.mp4")["status"] == "ok").all()
    assert "1 of 4 input(s) not ingested (1 failed)" in caplog.text
    for secret in list(corpus["subjects"]["patient_id"]) + ["broken", "scan_0"]:
        assert secret not in caplog.text  # logs name no files and no patients
    assert len(Cache(tmp_path / "cache").index) == 3


def test_nothing_readable_is_a_data_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "junk.avi").write_bytes(b"not a video")
    with pytest.raises(DataError, match="none of the 1"):
        ingest([tmp_path / "src"], tmp_path / "cache", CFG, progress=False)
    assert (tmp_path / "cache" / "ingest_report.csv").is_file()
    with pytest.raises(DataError, match="no recordings"):
        ingest([tmp_path / "cache"], tmp_path / "cache2", CFG, progress=False)


def test_settings_mismatch_and_overwrite(corpus, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    ingest([corpus["root"]], out, CFG, progress=False)
    with monkeypatch.context() as mp:
        mp.setenv("USSSL_SUBJECT_KEY", "another key")
        with pytest.raises(CacheMismatchError, match="subject key") as err:
            ingest([corpus["root"]], out, CFG, progress=False)
        assert "another key" not in str(err.value)
    other = CFG.model_copy(update={"size": (24, 24)})
    with pytest.raises(CacheMismatchError, match=r"size \(cache: \[32, 32\], now: \[24, 24\]\)"):
        ingest([corpus["root"]], out, other, progress=False)
    with pytest.raises(CacheMismatchError, match="split.seed"):
        ingest([corpus["root"]], out, CFG.model_copy(update={"split": SplitConfig(seed=5)}), progress=False)
    summary = ingest([corpus["root"]], out, other.model_copy(update={"overwrite": True}), progress=False)
    assert summary.n_ok == 3 and Cache(out).shard(Cache(out).shard_ids()[0]).frames.shape[1:] == (24, 24)


def test_resume_skips_complete_shards(corpus, tmp_path):
    out = tmp_path / "cache"
    ingest([corpus["root"]], out, CFG, progress=False)
    stamps = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("shards/*/shard.json")}
    removed = sorted(stamps)[0]
    shutil.rmtree(out / "shards" / removed)
    (out / "shards" / ".tmp-leftover").mkdir()  # a killed run's partial shard
    summary = ingest([corpus["root"]], out, CFG, progress=False)
    assert summary.n_ok == 3
    report = pd.read_csv(summary.report_path).set_index("shard")
    assert (report.drop(removed)["reason"] == "already cached").all()
    assert report.loc[removed, "reason"] != "already cached"
    for shard, stamp in stamps.items():
        now = (out / "shards" / shard / "shard.json").stat().st_mtime_ns
        assert (now == stamp) == (shard != removed)
    assert not (out / "shards" / ".tmp-leftover").exists()
    assert len(Cache(out).index) == 3


def test_manual_crop_no_audio_and_frozen_frames(corpus, tmp_path):
    cfg = IngestConfig(size=(20, 30), fps=60, audio=False, crop=(10, 36, 70, 76), workers=1)
    ingest([corpus["root"]], tmp_path / "cache", cfg, progress=False)
    cache = Cache(tmp_path / "cache")
    assert cache.settings["crop_mode"] == "manual" and cache.settings["crop"] == [10, 36, 70, 76]
    assert not cache.index["has_audio"].any()
    shard = cache.shard(cache.shard_ids()[0])
    assert shard.audio is None and shard.frames.shape == (120, 20, 30)
    # 30 fps upsampled to 60 fps: every second frame repeats the one before it (ties: earlier)
    np.testing.assert_array_equal(shard.flags, np.arange(120) % 2)
    np.testing.assert_array_equal(kept_frames(np.arange(60) / 30, 60, 30), np.arange(120) // 2)
    x, y = fx.blob_centre(0)  # (48, 50): inside the crop
    expected = [(x - 10 + 0.5) * 30 / 60 - 0.5, (y - 36 + 0.5) * 20 / 40 - 0.5]
    np.testing.assert_allclose(shard.gaze[0], expected, atol=1e-4)
    assert fx.blob_centre(30)[1] < 36 and np.isnan(shard.gaze[60]).all()  # above the crop: absent


def test_explicit_tables_and_bad_crop(corpus, tmp_path):
    root = corpus["root"]
    summary = ingest([root / "videos"], tmp_path / "cache", CFG, labels_csv=root / "labels.csv",
                     subjects_csv=root / "subjects.csv", progress=False)  # fmt: skip
    index = Cache(tmp_path / "cache").index
    assert summary.n_ok == 3 and (index["n_labelled"] == 30).all()
    report = pd.read_csv(summary.report_path)
    assert sorted(report["source"]) == [f"scan_{i:03d}.mp4" for i in range(3)]
    bad = CFG.model_copy(update={"crop": (0, 0, 500, 50)})
    with pytest.raises(DataError, match="none of the 3"):
        ingest([root], tmp_path / "cache2", bad, progress=False)
    reason = pd.read_csv(tmp_path / "cache2" / "ingest_report.csv")["reason"][0]
    assert "ingest.crop" in reason and "96" in reason
    (tmp_path / "bad_labels.csv").write_text("video,frame\nscan_000,0\n")
    with pytest.raises(DataError, match="bad_labels.csv.*plane"):
        ingest([root], tmp_path / "cache3", CFG, labels_csv=tmp_path / "bad_labels.csv", progress=False)


def test_kept_frames_nearest_timestamp():
    ts = np.arange(10) / 10.0  # 10 fps, 1 s
    np.testing.assert_array_equal(kept_frames(ts, 5), [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(kept_frames(ts, None), np.arange(10))
    np.testing.assert_array_equal(kept_frames(ts, 20)[:4], [0, 0, 1, 1])
    jittery = ts + np.array([0, 0.01, -0.01, 0.02, 0, 0, 0.03, 0, -0.02, 0])
    np.testing.assert_array_equal(kept_frames(jittery, 5), [0, 2, 4, 6, 8])


def test_synthetic_corpus_labels_survive_ingest(tmp_path):
    synth = pytest.importorskip("usssl.data.synth")
    src = synth.generate(tmp_path / "synth", subjects=3, duration_s=4.0, size=(64, 64),
                         write_dicom=False)  # fmt: skip
    summary = ingest([src], tmp_path / "cache", IngestConfig(size=(32, 32), fps=15, workers=1),
                     progress=False)  # fmt: skip
    cache = Cache(tmp_path / "cache")
    corpus = json.loads((src / "corpus.json").read_text())
    assert summary.n_ok == 3 and cache.classes == corpus["planes"]
    labels = pd.read_csv(src / "labels.csv")
    kept = kept_frames(np.arange(int(4.0 * corpus["fps"])) / corpus["fps"], 15)
    for stem, shard_id in _stems(cache).items():
        planes = labels[labels["video"] == stem].set_index("frame").loc[kept, "plane"]
        expected = [corpus["planes"].index(p) for p in planes]
        np.testing.assert_array_equal(cache.shard(shard_id).labels, expected)
        box = json.loads((cache.root / "shards" / shard_id / "shard.json").read_text())["crop_box"]
        # the burned-in text is either cropped away or, where it reaches into the crop, blanked
        text = np.array(corpus["burned_in_text_box"][stem], float).reshape(2, 2)
        (cx0, cy0), (cx1, cy1) = map_points(text, box, (32, 32))
        shard_frames = cache.shard(shard_id).frames
        x0, x1 = max(int(np.floor(cx0)), 0), int(np.ceil(cx1))
        y0, y1 = max(int(np.floor(cy0)), 0), int(np.ceil(cy1))
        if x1 > x0 and y1 > y0:
            assert shard_frames[:, y0:y1, x0:x1].max() == 0
        else:  # wholly outside the crop box
            assert cx1 <= 0 or cy1 <= 0 or cx0 >= 32 or cy0 >= 32


def test_the_ingest_report_is_readable_by_its_owner_only(ingested):
    """It maps source paths (which may name patients) to shards: mode 0600 whatever the umask."""
    import os

    _, cache = ingested
    assert os.stat(cache.root / "ingest_report.csv").st_mode & 0o777 == 0o600

"""Audio–video pairing on the synthetic corpus: positives carry the word of the plane on screen."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from usssl.config import IngestConfig


@pytest.fixture(scope="module")
def corpus_cache(tmp_path_factory):
    from usssl.data.cache import Cache
    from usssl.data.ingest import ingest
    from usssl.data.synth import generate

    root = tmp_path_factory.mktemp("pairing")
    src = generate(root / "synth", subjects=3, seed=3, duration_s=30.0, size=(64, 64), write_dicom=False)
    ingest([src], root / "cache", IngestConfig(size=(32, 32), fps=15, workers=1, split={"test": 0.34}),
           progress=False)
    cache = Cache(root / "cache")
    report = pd.read_csv(root / "cache" / "ingest_report.csv")
    stem_of = {row.shard: row.source.split("/")[-1].rsplit(".", 1)[0] for row in report.itertuples()}
    return cache, pd.read_csv(src / "speech.csv"), stem_of


def _word_at(words: pd.DataFrame, stem: str, t0: float, t1: float) -> str | None:
    """The word overlapping [t0, t1] most, or None."""
    rows = words[words["video"] == stem]
    overlap = (np.minimum(rows["end_s"], t1) - np.maximum(rows["start_s"], t0)).clip(lower=0)
    return rows["word"].iloc[int(overlap.argmax())] if len(rows) and overlap.max() > 0 else None


def test_positive_windows_name_the_plane_on_screen_and_negatives_are_nearby(corpus_cache):
    from usssl.data.datasets import AudioVisualDataset

    cache, words, stem_of = corpus_cache
    shards = cache.shard_ids()
    ds = AudioVisualDataset(cache, shards, split=None, interval_frames=30, affinity_threshold=0.25,
                            pairs_per_epoch=None, pairs_per_interval=2, hard_negative_range=5, seed=0)
    assert len(ds) == 2 * ds.n_high_affinity > 0
    subject_of = {s: cache.shard(s).subject for s in shards}
    checked = 0
    for i in range(len(ds)):
        item = ds[i]
        frame = int(item["frame"])
        shard_id = next(s for s in shards if subject_of[s] == ds.subjects[int(item["subject"])])
        shard = cache.shard(shard_id)
        label = cache.classes[int(shard.labels[frame])]
        t = frame / shard.fps
        word = _word_at(words, stem_of[shard_id], t - ds.window_s / 2, t + ds.window_s / 2)
        assert word is not None, f"pair {i}: no word in the positive window"
        if label != "background":  # transition frames fade into the plane that is named
            assert word == label, f"pair {i}: heard {word!r} while {label!r} is on screen"
            checked += 1
        # the hard negative: same scan (same subject by construction), another interval within D
        gap = abs(int(item["neg_interval"]) - int(item["interval"]))
        assert 0 < gap < 5
        assert float(item["affinity"]) >= 0.25
        assert item["audio"].shape == item["audio_hard_pos"].shape == item["audio_hard_neg"].shape == (9600,)
    assert checked >= 0.8 * len(ds)


def test_hard_positive_same_interval_other_time_hard_negative_nearby(corpus_cache):
    from usssl.data.datasets import AudioVisualDataset

    cache, _, _ = corpus_cache
    ds = AudioVisualDataset(cache, cache.shard_ids(), split=None, interval_frames=30, affinity_threshold=0.25,
                            pairs_per_epoch=40, seed=1)
    moved = 0
    for i in range(len(ds)):
        item = ds[i]
        frame, interval = int(item["frame"]), int(item["interval"])
        assert frame // 30 == interval == int(item["hard_pos_frame"]) // 30
        moved += int(item["hard_pos_frame"]) != frame
        assert int(item["hard_neg_frame"]) // 30 == int(item["neg_interval"]) != interval
    assert moved == len(ds)  # every interval drawn has more than one speech frame here
    first = [int(ds[i]["frame"]) for i in range(len(ds))]
    assert first == [int(ds[i]["frame"]) for i in range(len(ds))]  # deterministic in (seed, epoch, index)
    ds.set_epoch(1)
    assert first != [int(ds[i]["frame"]) for i in range(len(ds))]  # fresh draws each epoch


class _Shard:
    def __init__(self, frames, audio, subject, fps=15):
        self.frames, self.audio, self.subject, self.fps = frames, audio, subject, fps


class _FakeCache:
    """Three scans at 15 fps, audio at 8 kHz: ``talk`` (2 intervals: a loud tone, then faint noise),
    ``mute`` (no audio; frames all 200), ``short`` (one interval, mostly tone)."""

    settings = {"audio_rate": 8000}

    def __init__(self):
        rng = np.random.default_rng(0)
        t = np.arange(4 * 8000) / 8000
        talk = np.where(t < 2.0, 0.3 * np.sin(2 * np.pi * 220 * t), 0.0) + 0.001 * rng.standard_normal(t.size)
        ts = t[: 8000 * 4 // 3]  # 20 frames = 1.33 s, a tone over 0.2–1.2 s
        short = np.where((ts > 0.2) & (ts < 1.2), 0.3 * np.sin(2 * np.pi * 220 * ts), 0.0)
        short += 0.001 * rng.standard_normal(ts.size)
        self.shards = {"talk": _Shard(np.zeros((60, 8, 8), np.uint8), talk.astype(np.float32), "a"),
                       "mute": _Shard(np.full((60, 8, 8), 200, np.uint8), None, "b"),
                       "short": _Shard(np.zeros((20, 8, 8), np.uint8), short.astype(np.float32), "c")}

    def shard(self, shard_id):
        return self.shards[shard_id]


def test_low_affinity_intervals_are_drawn_at_their_share():
    from usssl.data.datasets import AudioVisualDataset

    cache = _FakeCache()
    ds = AudioVisualDataset(cache, ["talk"], split=None, window_s=0.2, pairs_per_epoch=200, low_affinity_share=0.3)
    assert ds.n_high_affinity == 1 and ds.n_low_affinity == 1
    items = [ds[i] for i in range(len(ds))]
    low = [it for it in items if float(it["affinity"]) < 0.5]
    assert 0.2 < len(low) / len(items) < 0.4
    assert all(int(it["interval"]) == 1 and int(it["neg_interval"]) == 0 for it in low)
    only_high = AudioVisualDataset(cache, ["talk"], split=None, window_s=0.2, pairs_per_epoch=50)
    assert all(float(only_high[i]["affinity"]) >= 0.5 for i in range(50))


def test_order_clips_come_from_every_scan_speech_or_not():
    from usssl.data.datasets import AudioVisualDataset

    ds = AudioVisualDataset(_FakeCache(), ["talk", "mute"], split=None, window_s=0.2, pairs_per_epoch=100,
                            order_frames=4, order_stride=2)
    from_mute = sum(float(ds[i]["order_clip"].max()) > 0.5 for i in range(len(ds)))  # mute frames are 200/255
    assert ds[0]["order_clip"].shape == (1, 4, 8, 8)
    assert 30 < from_mute < 70  # both scans have 60 frames: about half from the speechless one


def test_a_one_interval_scan_takes_no_hard_negative_from_its_own_interval():
    from usssl.data.datasets import AudioVisualDataset

    ds = AudioVisualDataset(_FakeCache(), ["short"], split=None, window_s=0.2, pairs_per_epoch=20)
    for i in range(len(ds)):
        item = ds[i]
        assert int(item["interval"]) == 0 and int(item["neg_interval"]) == -1 == int(item["hard_neg_frame"])
        assert float(item["hard_neg_valid"]) == 0.0 and float(item["audio_hard_neg"].abs().max()) == 0.0
        assert int(item["hard_pos_frame"]) != int(item["frame"])

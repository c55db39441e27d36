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

"""CVRL's interval sampler (P(Δ) ∝ T − Δ, chi-square at a fixed seed) and the clip datasets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chisquare

from usssl.data.cache import INDEX_COLUMNS, Cache, ShardWriter, write_index
from usssl.engine.files import write_json_atomic as write_json
from usssl.data.clips import (ClipDataset, ClipPairDataset, clip_indices, interval_gap_probs,
                                 sample_interval_starts)
from usssl.errors import DataError

SHARDS = {"train_a": ("subj_a", "train", 60), "train_b": ("subj_b", "train", 30), "test_c": ("subj_c", "test", 40)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Cache:
    """A hand-written cache: frame i of every shard is filled with the value i."""
    root = tmp_path_factory.mktemp("cache")
    rows = []
    for shard_id, (subject, split, n) in SHARDS.items():
        writer = ShardWriter(root, shard_id, capacity=n, size=(6, 8))
        writer.append(np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None], (n, 6, 8)))
        writer.finish(audio=None, labels=np.full(n, -1), gaze=np.full((n, 2), np.nan), flags=np.zeros(n), info={})
        rows.append({"shard": shard_id, "subject": subject, "split": split, "fps": 10.0, "n_frames": n,
                     "height": 6, "width": 8, "has_audio": False, "has_speech": False, "n_labelled": 0,
                     "digest": ""})
    write_json(root / "cache.json", {"classes": [], "audio_rate": 16000})
    (root / "splits.json").write_text(json.dumps({"train": ["subj_a", "subj_b"], "test": ["subj_c"]}))
    write_index(root, pd.DataFrame(rows, columns=INDEX_COLUMNS))
    return Cache(root)


def test_gap_histogram_matches_linearly_decreasing_density():
    rng = np.random.default_rng(1234)
    n_frames, n, stride = 40, 4, 2
    valid = n_frames - (n - 1) * stride  # T = 34
    draws = np.array([sample_interval_starts(n_frames, n, stride, rng) for _ in range(20000)])
    gaps = np.abs(draws[:, 0] - draws[:, 1])
    observed = np.bincount(gaps, minlength=valid)
    assert observed.size == valid  # Δ ∈ [0, T)
    expected_probs = (valid - np.arange(valid)) / (valid * (valid + 1) / 2)
    assert np.allclose(interval_gap_probs(valid), expected_probs)
    stat, p = chisquare(observed, expected_probs * len(gaps))
    assert p > 0.01, f"chi-square {stat:.1f}, p = {p:.4f}"
    assert draws.min() >= 0 and draws.max() < valid  # every clip fits inside the video
    later_first = (draws[:, 0] > draws[:, 1]).mean()
    assert 0.45 < later_first * len(gaps) / (gaps > 0).sum() < 0.55  # swapped at random
    # given Δ, the first start is uniform on [0, T − Δ): check one gap
    firsts = draws[gaps == 5].min(axis=1)
    _, p_first = chisquare(np.bincount(firsts, minlength=valid - 5))
    assert firsts.max() < valid - 5 and p_first > 0.01


def test_short_video_uses_independent_uniform_starts_and_repeats_the_last_frame():
    rng = np.random.default_rng(0)
    draws = np.array([sample_interval_starts(5, 4, 2, rng) for _ in range(2000)])  # (n−1)·s = 6 ≥ L
    assert draws.min() == 0 and draws.max() == 4
    assert np.array_equal(clip_indices(3, 4, 2, 5), [3, 4, 4, 4])


def test_pair_dataset_items_are_clips_at_their_starts_and_reproducible(cache):
    ds = ClipPairDataset(cache, ["train_a", "train_b"], split="train", clip_frames=4, stride=3,
                         pairs_per_epoch=32, seed=7)
    item = ds[3]
    assert item["video_a"].shape == (1, 4, 6, 8) and item["video_b"].shape == (1, 4, 6, 8)
    for key, start in (("video_a", "start_a"), ("video_b", "start_b")):
        values = item[key][0, :, 0, 0] * 255
        assert np.allclose(values.numpy(), int(item[start]) + 3 * np.arange(4), atol=1e-3)
    assert len(ds) == 32 and ds.subjects == ["subj_a", "subj_b"]
    again = ClipPairDataset(cache, ["train_a", "train_b"], clip_frames=4, stride=3, pairs_per_epoch=32, seed=7)[3]
    assert all(np.array_equal(item[k], again[k]) for k in item)
    starts = lambda d: [(int(d[i]["start_a"]), int(d[i]["start_b"])) for i in range(32)]
    first = starts(ds)
    ds.set_epoch(1)
    assert starts(ds) != first


def test_clip_dataset_and_split_check(cache):
    ds = ClipDataset(cache, ["train_a"], split="train", clip_frames=4, stride=8, clips_per_epoch=50, seed=0)
    starts = [int(ds[i]["start"]) for i in range(50)]
    assert min(starts) >= 0 and max(starts) < 60 - 24
    item = ds[0]
    assert item["video"].shape == (1, 4, 6, 8)
    assert np.allclose(item["video"][0, :, 0, 0].numpy() * 255, starts[0] + 8 * np.arange(4), atol=1e-3)
    for cls in (ClipDataset, ClipPairDataset):
        with pytest.raises(DataError, match="not in the 'train' split"):
            cls(cache, ["train_a", "test_c"], "train")

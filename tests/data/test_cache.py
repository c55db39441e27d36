"""Cache writer and reader: atomic shards, memory-mapped frames, index, splits, digest."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from usssl.data import cache as cache_io
from usssl.engine.files import write_json_atomic
from usssl.data.cache import Cache, ShardWriter
from usssl.errors import DataError


def _arrays(t: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (t, 8, 12), dtype=np.uint8)
    labels = np.where(np.arange(t) % 3 == 0, -1, np.arange(t) % 2).astype(np.int16)
    gaze = rng.uniform(0, 8, (t, 2)).astype(np.float32)
    gaze[::4] = np.nan
    flags = (np.arange(t) % 5 == 1).astype(np.uint8)
    audio = rng.standard_normal(t * 100).astype(np.float32)
    return frames, labels, gaze, flags, audio


def _write_cache(root, shards: dict[str, tuple[str, str]]) -> dict[str, tuple]:
    """shards: id -> (subject, split). Writes arrays, index, splits and settings."""
    written, rows = {}, []
    for k, (shard_id, (subject, split)) in enumerate(shards.items()):
        frames, labels, gaze, flags, audio = _arrays(10 + k, seed=k)
        writer = ShardWriter(root, shard_id, capacity=len(frames), size=(8, 12))
        writer.append(frames[:4])
        writer.append(frames[4:])
        info = writer.finish(audio=audio if k else None, labels=labels, gaze=gaze, flags=flags,
                             info={"subject": subject, "fps": 15.0, "height": 8, "width": 12,
                                   "has_audio": bool(k), "has_speech": False,
                                   "n_labelled": int((labels >= 0).sum())})  # fmt: skip
        rows.append({**info, "split": split})
        written[shard_id] = (frames, labels, gaze, flags, audio if k else None)
    write_json_atomic(root / "cache.json", {"classes": ["background", "4ch"], "audio_rate": 1500})
    splits = {"train": [], "val": [], "test": []}
    for subject, split in shards.values():
        splits[split].append(subject)
    write_json_atomic(root / "splits.json", splits)
    cache_io.write_index(root, pd.DataFrame(rows))
    return written


@pytest.fixture()
def cache_dir(tmp_path):
    written = _write_cache(tmp_path, {"aaa1": ("s1", "train"), "bbb2": ("s2", "test"),
                                      "ccc3": ("s1", "train")})  # fmt: skip
    return tmp_path, written


def test_round_trip(cache_dir):
    root, written = cache_dir
    cache = Cache(root)
    assert cache.classes == ["background", "4ch"]
    assert list(cache.index.columns) == cache_io.INDEX_COLUMNS
    assert cache.shard_ids() == ["aaa1", "bbb2", "ccc3"]
    assert cache.shard_ids("train") == ["aaa1", "ccc3"] and cache.shard_ids("val") == []
    assert cache.splits["test"] == ["s2"]
    for shard_id, (frames, labels, gaze, flags, audio) in written.items():
        shard = cache.shard(shard_id)
        assert isinstance(shard.frames, np.memmap) and shard.frames.dtype == np.uint8
        np.testing.assert_array_equal(shard.frames, frames)
        np.testing.assert_array_equal(shard.labels, labels)
        np.testing.assert_array_equal(shard.gaze, gaze)  # NaN == NaN here
        np.testing.assert_array_equal(shard.flags, flags)
        assert shard.labels.dtype == np.int16 and shard.gaze.dtype == np.float32
        assert shard.fps == 15.0 and shard.audio_rate == 1500 and len(shard) == len(frames)
        if audio is None:
            assert shard.audio is None
        else:
            np.testing.assert_array_equal(shard.audio, audio)
    assert cache.shard("aaa1") is cache.shard("aaa1")  # opened once
    assert not list((root / "shards").glob(".tmp-*"))
    info = json.loads((root / "shards" / "bbb2" / "shard.json").read_text())
    assert info["subject"] == "s2" and len(info["digest"]) == 64 and info["n_frames"] == 11


def test_digest_follows_the_index(cache_dir):
    root, _ = cache_dir
    first = Cache(root).digest()
    assert first == Cache(root).digest() and len(first) == 64
    index = pd.read_parquet(root / "index.parquet")
    index.loc[0, "split"] = "val"
    cache_io.write_index(root, index)
    assert Cache(root).digest() != first


def test_shard_digest_depends_on_content(tmp_path):
    frames, labels, gaze, flags, _ = _arrays(6)
    digests = []
    for shard_id, f in (("x1", frames), ("x2", frames), ("x3", 255 - frames)):
        w = ShardWriter(tmp_path, shard_id, 6, (8, 12))
        w.append(f)
        digests.append(w.finish(audio=None, labels=labels, gaze=gaze, flags=flags, info={})["digest"])
    assert digests[0] == digests[1] != digests[2]


def test_fewer_frames_than_capacity_and_abort(tmp_path):
    frames, labels, gaze, flags, _ = _arrays(7)
    writer = ShardWriter(tmp_path, "short", capacity=10, size=(8, 12))
    writer.append(frames)
    writer.finish(audio=None, labels=labels, gaze=gaze, flags=flags, info={})
    assert np.load(tmp_path / "shards" / "short" / "frames.npy").shape == (7, 8, 12)
    with pytest.raises(ValueError, match="capacity"):
        ShardWriter(tmp_path, "full", capacity=2, size=(8, 12)).append(frames)
    broken = ShardWriter(tmp_path, "broken", capacity=7, size=(8, 12))
    broken.append(frames)
    with pytest.raises(ValueError, match="labels"):
        broken.finish(audio=None, labels=labels[:3], gaze=gaze, flags=flags, info={})
    broken.abort()
    assert not (tmp_path / "shards" / ".tmp-broken").exists()
    assert not (tmp_path / "shards" / "broken").exists()
    assert cache_io.shard_info(tmp_path, "broken") is None


def test_not_a_cache(tmp_path):
    with pytest.raises(DataError, match="not a usssl cache"):
        Cache(tmp_path)
    write_json_atomic(tmp_path / "cache.json", {})
    with pytest.raises(DataError, match="did not finish"):
        Cache(tmp_path)


def test_unknown_shard_and_split(cache_dir):
    cache = Cache(cache_dir[0])
    with pytest.raises(DataError, match="no shard"):
        cache.shard("nope")
    with pytest.raises(DataError, match="unknown split"):
        cache.shard_ids("holdout")

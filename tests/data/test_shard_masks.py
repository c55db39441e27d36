"""Imaging-region and anatomy masks in the cache (format 3): hand-computed crops, the synthetic
corpus's masks through ingest, frames unchanged by them, a misfit mask left out, an old cache refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from usssl.config import IngestConfig
from usssl.data.cache import CACHE_FORMAT, Cache, shard_info
from usssl.data.ingest import ingest
from usssl.data.shard_masks import cached_masks, cached_region
from usssl.errors import DataError

CFG = IngestConfig(size=(32, 32), fps=10, workers=1)


def test_cached_masks_crop_and_nearest_resize_by_hand():
    masks = np.zeros((3, 6, 8), np.uint8)
    masks[1, 2:4, 2:6] = 7  # source frame 1: rows 2-3, columns 2-5 (any non-zero value is anatomy)
    out = cached_masks(masks, np.array([1, 0]), (2, 2, 6, 6), (2, 2))  # crop 4x4 at (2, 2), halve
    # nearest 4 -> 2 samples crop rows/columns 0 and 2: rows 2, 4 and columns 2, 4 of the source
    assert out.dtype == np.uint8 and out.shape == (2, 2, 2)
    assert out[0].tolist() == [[1, 1], [0, 0]] and out[1].tolist() == [[0, 0], [0, 0]]
    assert cached_masks(None, np.array([0]), (0, 0, 8, 6), (2, 2)) is None


def test_cached_region_is_the_motion_mask_else_the_whole_box():
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:4] = True
    geo = SimpleNamespace(box=(1, 1, 4, 3), mask=mask)
    assert cached_region(geo, (2, 3)).tolist() == [[1, 1, 1], [1, 1, 1]]
    mask[1, 1] = False
    assert cached_region(geo, (2, 3)).tolist() == [[0, 1, 1], [1, 1, 1]]
    assert cached_region(SimpleNamespace(box=(0, 0, 4, 4), mask=None), (2, 2)).tolist() == [[1, 1], [1, 1]]


@pytest.fixture(scope="module")
def synth_pair(tmp_path_factory):
    """A two-scan synthetic corpus ingested with its masks and again with its masks folder removed."""
    from usssl.data.synth import generate

    root = tmp_path_factory.mktemp("masks")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("USSSL_SUBJECT_KEY", "masks-key")
        generate(root / "synth", subjects=2, duration_s=6, fps=10, size=(64, 64), write_dicom=False)
        ingest([root / "synth"], root / "with", CFG, progress=False, subject_per_recording=True,
               min_subjects_per_class=0)
        shutil.copytree(root / "synth", root / "bare")
        shutil.rmtree(root / "bare" / "masks")
        ingest([root / "bare"], root / "without", CFG, progress=False, subject_per_recording=True,
               min_subjects_per_class=0)
    return root, Cache(root / "with"), Cache(root / "without")


def test_synthetic_anatomy_masks_reach_the_shard(synth_pair):
    root, cache, _ = synth_pair
    masked = 0
    for shard_id in cache.shard_ids():
        shard = cache.shard(shard_id)
        assert shard.masks.shape == shard.frames.shape == (60, 32, 32) and shard.masks.dtype == np.uint8
        assert set(np.unique(shard.masks)) <= {0, 1}
        # the corpus's masks are non-empty exactly on the plane frames (labels > 0)
        assert (shard.masks.reshape(60, -1).any(1) == (shard.labels > 0)).all()
        masked += int(shard.masks.any())
        assert shard.region_mask.shape == (32, 32) and 0.4 < shard.region_mask.mean() < 0.9  # the fan
        assert shard_info(cache.root, shard_id)["has_masks"] is True
        inside = shard.frames[shard.masks.astype(bool)].mean() if shard.masks.any() else 0
        around = shard.frames[(shard.masks == 0) & shard.region_mask.astype(bool)[None]].mean()
        if shard.masks.any():
            assert inside > around + 10  # the anatomy is brighter than the rest of the fan: aligned frames
    assert masked >= 1
    assert json.loads((cache.root / "cache.json").read_text())["cache_format"] == CACHE_FORMAT == 3


def test_masks_leave_the_frames_byte_identical(synth_pair):
    _, cache, bare = synth_pair
    assert cache.frame_digests == bare.frame_digests  # same shards in the same order, same frames
    for shard_id in bare.shard_ids():
        assert bare.shard(shard_id).masks is None and shard_info(bare.root, shard_id)["has_masks"] is False
        assert np.array_equal(bare.shard(shard_id).frames, cache.shard(shard_id).frames)
        assert np.array_equal(bare.shard(shard_id).region_mask, cache.shard(shard_id).region_mask)


def test_a_mask_file_that_does_not_fit_is_left_out_with_a_note(synth_pair, tmp_path, monkeypatch):
    root, _, _ = synth_pair
    monkeypatch.setenv("USSSL_SUBJECT_KEY", "masks-key")
    shutil.copytree(root / "synth", tmp_path / "src")
    np.savez_compressed(tmp_path / "src" / "masks" / "scan_000.npz", masks=np.zeros((5, 8, 8), np.uint8))
    ingest([tmp_path / "src"], tmp_path / "cache", CFG, progress=False, subject_per_recording=True,
           min_subjects_per_class=0)
    cache = Cache(tmp_path / "cache")
    report = pd.read_csv(cache.root / "ingest_report.csv").set_index("source")
    assert (report["status"] == "ok").all()
    assert "anatomy masks left out" in report.loc["videos/scan_000.mp4", "reason"]
    shard = cache.shard(report.loc["videos/scan_000.mp4", "shard"])
    assert shard.masks is None and len(shard) == 60
    assert "scan_000" not in json.dumps(shard_info(cache.root, shard.id)["notes"])  # no file names in the cache


def test_an_old_cache_is_refused_with_a_reingest_line(synth_pair, tmp_path):
    _, cache, _ = synth_pair
    shutil.copytree(cache.root, tmp_path / "old")
    settings = json.loads((tmp_path / "old" / "cache.json").read_text())
    (tmp_path / "old" / "cache.json").write_text(json.dumps({**settings, "cache_format": 2}))
    with pytest.raises(DataError) as err:
        Cache(tmp_path / "old")
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "old") in message
    assert "re-ingest" in message and "usssl ingest" in message and "--overwrite" in message
    assert err.value.exit_code == 1


def test_shard_writer_checks_mask_shapes_and_digests_them(tmp_path):
    from usssl.data.cache import ShardWriter

    writer = ShardWriter(tmp_path, "s0", capacity=2, size=(4, 5))
    writer.append(np.zeros((2, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="masks"):
        writer.finish(audio=None, labels=np.full(2, -1), gaze=np.zeros((2, 2)), flags=np.zeros(2), info={},
                      masks=np.zeros((2, 3, 5), np.uint8))
    writer = ShardWriter(tmp_path, "s0", capacity=2, size=(4, 5))
    writer.append(np.zeros((2, 4, 5), np.uint8))
    plain = writer.finish(audio=None, labels=np.full(2, -1), gaze=np.zeros((2, 2)), flags=np.zeros(2), info={})
    assert not (tmp_path / "shards" / "s0" / "masks.npy").exists() and plain["has_masks"] is False
    writer = ShardWriter(tmp_path, "s1", capacity=2, size=(4, 5))
    writer.append(np.zeros((2, 4, 5), np.uint8))
    masked = writer.finish(audio=None, labels=np.full(2, -1), gaze=np.zeros((2, 2)), flags=np.zeros(2), info={},
                           masks=np.ones((2, 4, 5), np.uint8), region_mask=np.ones((4, 5), np.uint8))
    assert masked["digest"] != plain["digest"] and masked["frame_digest"] == plain["frame_digest"]
    assert np.load(tmp_path / "shards" / "s1" / "masks.npy").shape == (2, 4, 5)

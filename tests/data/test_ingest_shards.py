"""``--shard K/N`` + ``--merge``: N machines each ingest a disjoint part; the merge is the cache one
unsharded ingest writes (same shards, subjects, split, report)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_video as fx  # noqa: E402

from usssl.config import IngestConfig, SplitConfig  # noqa: E402
from usssl.data.cache import Cache, part_names  # noqa: E402
from usssl.data.ingest import ingest, merge_parts, parse_part  # noqa: E402
from usssl.errors import ConfigError, DataError  # noqa: E402

CFG = IngestConfig(size=(16, 16), fps=10, workers=1, split=SplitConfig(test=0.4, seed=3))


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(SRC, unsharded cache, sharded cache after parts 1/2 and 2/2, before the merge)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("USSSL_SUBJECT_KEY", "shard-key")
        root = tmp_path_factory.mktemp("shards")
        src = root / "SRC"
        fx.make_corpus(src, n_subjects=5, seconds=1.0)
        (src / "videos" / "broken.mp4").write_bytes(b"\x00" * 64)
        (src / "lonely.wav").write_bytes((src / "videos" / "scan_000.mp4").read_bytes()[:10])
        ingest([src], root / "whole", CFG, progress=False)
        for k in (1, 2):
            ingest([src], root / "split", CFG, progress=False, part=(k, 2))
        yield src, root / "whole", root / "split"


def test_parts_are_disjoint_and_cover_every_input(both):
    _, whole, split = both
    assert not (split / "index.parquet").exists()  # nothing final before the merge
    reports = [pd.read_csv(split / "parts" / part_names(k, 2)[1]) for k in (1, 2)]
    sources = [set(r["source"]) for r in reports]
    assert not sources[0] & sources[1]
    assert sources[0] | sources[1] == set(pd.read_csv(whole / "ingest_report.csv")["source"])
    assert abs(len(sources[0]) - len(sources[1])) <= 1  # round-robin: an even deal
    indexes = [pd.read_parquet(split / "parts" / part_names(k, 2)[0]) for k in (1, 2)]
    assert sum(len(i) for i in indexes) == 5 and "split" not in indexes[0].columns


def test_merge_gives_the_unsharded_cache(both):
    _, whole, split = both
    summary = merge_parts(split)
    assert (summary.n_ok, summary.n_failed, summary.n_skipped) == (5, 1, 2)
    a, b = Cache(whole), Cache(split)
    pd.testing.assert_frame_equal(a.index, b.index)  # same shards, subjects, digests, split
    assert a.splits == b.splits and len(a.splits["test"]) == 2
    assert json.loads((whole / "cache.json").read_text()) == json.loads((split / "cache.json").read_text())
    ra, rb = pd.read_csv(whole / "ingest_report.csv"), pd.read_csv(split / "ingest_report.csv")
    pd.testing.assert_frame_equal(ra, rb)
    assert set(rb["status"]) == {"ok", "failed", "skipped"}
    for shard in a.shard_ids():
        np.testing.assert_array_equal(a.shard(shard).frames, b.shard(shard).frames)
    assert (split / "DATA_CARD.md").read_text() == (whole / "DATA_CARD.md").read_text()
    assert merge_parts(split).n_ok == 5  # merging again is harmless


def test_a_missing_part_or_a_stale_total_is_an_error(both, tmp_path):
    _, _, split = both
    copy = tmp_path / "copy"
    shutil.copytree(split, copy)
    (copy / "parts" / part_names(2, 2)[0]).unlink()
    with pytest.raises(DataError, match=r"part\(s\) 2/2 missing .*--shard K/2"):
        merge_parts(copy)
    shutil.copy(split / "parts" / part_names(2, 2)[0], copy / "parts" / part_names(2, 2)[0])
    shutil.copy(split / "parts" / part_names(1, 2)[0], copy / "parts" / part_names(1, 3)[0])
    with pytest.raises(DataError, match=r"different --shard totals N = \[2, 3\]"):
        merge_parts(copy)
    shutil.rmtree(copy / "parts")
    with pytest.raises(DataError, match="no partial indexes"):
        merge_parts(copy)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a usssl cache"):
        merge_parts(tmp_path / "empty")


def test_shard_option_and_overwrite(both, monkeypatch):
    src, _, split = both
    assert parse_part("3/8") == (3, 8)
    for bad in ("0/2", "3/2", "2", "a/b"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_part(bad)
    monkeypatch.setenv("USSSL_SUBJECT_KEY", "shard-key")
    with pytest.raises(DataError, match="overwrite cannot be combined with --shard"):
        ingest([src], split, CFG.model_copy(update={"overwrite": True}), progress=False, part=(1, 2))

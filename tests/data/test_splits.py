"""Subject-level splits: disjoint, complete, deterministic, never empty train or test."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usssl.config import SplitConfig
from usssl.data.splits import split_subjects, subject_split
from usssl.errors import DataError


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 40),
    val=st.floats(0.0, 0.5),
    test=st.floats(0.01, 0.6),
    seed=st.integers(0, 2**16),
)
def test_every_subject_in_exactly_one_split(n, val, test, seed):
    subjects = [f"s{i:02d}" for i in range(n)] * 2  # two recordings per subject
    cfg = SplitConfig(val=val, test=test, seed=seed)
    splits = split_subjects(subjects, cfg)
    assert set(splits) == {"train", "val", "test"}
    flat = splits["train"] + splits["val"] + splits["test"]
    assert sorted(flat) == sorted(set(subjects))  # disjoint and complete
    assert len(splits["train"]) >= 1 and len(splits["test"]) >= 1
    assert split_subjects(list(reversed(subjects)), cfg) == splits  # deterministic, order-free


def test_fractions_and_seed():
    subjects = [f"s{i:02d}" for i in range(20)]
    a = split_subjects(subjects, SplitConfig(val=0.2, test=0.3, seed=1))
    assert [len(a[k]) for k in ("train", "val", "test")] == [10, 4, 6]
    b = split_subjects(subjects, SplitConfig(val=0.2, test=0.3, seed=2))
    assert a != b
    assert subject_split(a)["s00"] in {"train", "val", "test"}


def test_two_subjects_give_one_train_one_test():
    splits = split_subjects(["a", "b", "a"], SplitConfig(val=0.3, test=0.5))
    assert len(splits["train"]) == len(splits["test"]) == 1 and splits["val"] == []


@pytest.mark.parametrize("subjects", [[], ["only"], ["only", "only"]])
def test_too_few_subjects(subjects):
    with pytest.raises(DataError, match="at least 2 subjects"):
        split_subjects(subjects, SplitConfig())


def test_subject_strata_is_the_main_non_background_label():
    import numpy as np

    from usssl.data.splits import subject_strata

    classes = ["background", "covid", "regular"]
    recordings = [("p1", np.array([0, 0, 0, 1, -1])), ("p1", np.array([2, 2, 1, 1])), ("p2", np.array([0, 0])),
                  ("p3", np.array([-1, -1]))]
    assert subject_strata(recordings, classes) == {"p1": "covid", "p2": "background", "p3": ""}


def test_splits_and_folds_depend_on_the_data_and_seed_not_on_the_subject_key(tmp_path, monkeypatch):
    """The same recordings and seed give the same subjects in each split and fold under any key, so a
    collaborator reproduces the split (the pseudonyms differ; the data order them)."""
    import sys

    import pandas as pd

    sys.path.insert(0, str(Path(__file__).parent))
    import fixtures_video as fx

    from usssl.config import IngestConfig, SplitConfig
    from usssl.data.cache import Cache
    from usssl.data.ingest import ingest
    from usssl.data.splits import cache_folds

    corpus = fx.make_corpus(tmp_path / "SRC", n_subjects=6, seconds=1.0)
    parts = {}
    for key in ("key-of-hospital-a", "key-of-hospital-b"):
        monkeypatch.setenv("USSSL_SUBJECT_KEY", key)
        out = tmp_path / key
        ingest([corpus["root"]], out, IngestConfig(size=(32, 32), fps=15, workers=1, split=SplitConfig(test=0.34)),
               progress=False)
        cache = Cache(out)
        report = pd.read_csv(out / "ingest_report.csv").set_index("shard")["source"]
        source_of_subject = {row.subject: report[row.shard] for row in cache.index.itertuples()}
        parts[key] = ({split: sorted(source_of_subject[s] for s in subjects) for split, subjects in cache.splits.items()},
                      sorted(sorted(source_of_subject[s] for s in fold) for fold in cache_folds(cache, 3, seed=0)),
                      set(cache.index["subject"]))
    (splits_a, folds_a, ids_a), (splits_b, folds_b, ids_b) = parts.values()
    assert not ids_a & ids_b  # other keys: other pseudonyms ...
    assert splits_a == splits_b and folds_a == folds_b  # ... and the same split and folds
    assert len(splits_a["test"]) == 2 and len(folds_a) == 3

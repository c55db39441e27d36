"""Subject-level splits and k-fold: every recording of a subject lands in one part, never by frame.

Both the train/val/test split and the k folds are stratified by each subject's main label when
labels exist: within each stratum the subjects are shuffled with the seed; the split cuts an order
that interleaves the strata in proportion, the folds deal the strata round-robin. The same
subjects, strata and seed always give the same parts.

    >>> splits = split_subjects(subjects, SplitConfig(test=0.3, seed=0), strata)
    >>> folds = kfold_subjects(subjects, k=3, seed=0, strata=strata)   # list of 3 disjoint lists
    >>> train, test = cache_fold(cache, k=3, seed=0, fold=1)           # subject ids
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from pathlib import Path

import numpy as np

from usssl.config import SplitConfig
from usssl.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
BACKGROUND = "background"


def _strata_groups(subjects: list[str], seed: int, strata: dict[str, str] | None) -> list[list[str]]:
    """Distinct subjects grouped by stratum (missing: one shared stratum), each group shuffled."""
    rng = random.Random(seed)
    groups: dict[str, list[str]] = {}
    for s in sorted(set(subjects)):
        groups.setdefault((strata or {}).get(s, ""), []).append(s)
    out = [groups[name] for name in sorted(groups)]
    for members in out:
        rng.shuffle(members)
    return out


def stratified_order(subjects: list[str], seed: int, strata: dict[str, str] | None = None) -> list[str]:
    """The distinct subjects in a seeded order whose every prefix holds each stratum in proportion.

    The i-th subject of a stratum of size n sits at relative position (i + ½) / n; ties between
    strata are broken in a seeded order. Without strata this is a seeded shuffle.
    """
    groups = _strata_groups(subjects, seed, strata)
    tie = list(range(len(groups)))
    random.Random(seed + 1).shuffle(tie)
    keyed = [((i + 0.5) / len(g), tie[j], s) for j, g in enumerate(groups) for i, s in enumerate(g)]
    return [s for *_, s in sorted(keyed)]


def check_disjoint(parts: dict[str, list[str]]) -> None:
    """Raise ``DataError`` when a subject appears in two parts (a leakage check)."""
    seen: dict[str, str] = {}
    for name, members in parts.items():
        for s in members:
            if s in seen and seen[s] != name:
                raise DataError(f"subject leakage: subject {s} is in both '{seen[s]}' and '{name}'; "
                                "splits must be by subject — re-create the split (re-run ingest)")
            seen[s] = name


def split_subjects(subjects: list[str], cfg: SplitConfig, strata: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Assign each distinct subject to train, val or test.

    The stratified order (``stratified_order``) is cut into ``round(cfg.test * n)`` test (at
    least 1), ``round(cfg.val * n)`` val (may be 0) and the rest train (at least 1).

    Args:
        subjects: subject ids, repeats allowed (one per recording).
        cfg: fractions and seed.
        strata: optional subject -> main label, to stratify.

    Returns:
        {"train": [...], "val": [...], "test": [...]}, each sorted.

    Raises:
        DataError: fewer than two distinct subjects (one to train on, one to test on).
    """
    n = len(set(subjects))
    if n < 2:
        raise DataError(
            f"a subject-level split needs at least 2 subjects (one for training, one for testing), "
            f"got {n}; add recordings of more subjects or check subjects.csv (patient_id column)"
        )
    n_test = min(max(1, int(round(cfg.test * n))), n - 1)
    n_val = max(0, min(int(round(cfg.val * n)), n - 1 - n_test))
    if cfg.val > 0 and n_val == 0:
        log.warning("split: %d subjects are too few for a validation split; val is empty", n)
    order = stratified_order(subjects, cfg.seed, strata)
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    splits = {"train": sorted(train), "val": sorted(val), "test": sorted(test)}
    check_disjoint(splits)
    return splits


def kfold_subjects(subjects: list[str], k: int, seed: int = 0, strata: dict[str, str] | None = None) -> list[list[str]]:
    """``k`` disjoint folds covering every subject (stratified k-fold).

    The strata, each shuffled, are laid back to back and dealt round-robin (fold i takes every
    k-th subject), so each fold holds each stratum within one subject of its share.

    Raises:
        DataError: fewer subjects than folds.
    """
    order = [s for group in _strata_groups(subjects, seed, strata) for s in group]  # strata back to back
    if k < 2 or len(order) < k:
        raise DataError(f"{k}-fold cross-validation needs k >= 2 and at least k subjects, got {len(order)} "
                        "subject(s); lower finetune.folds or add subjects")
    folds = [sorted(order[i::k]) for i in range(k)]
    check_disjoint({f"fold {i}": f for i, f in enumerate(folds)})
    return folds


def subject_split(splits: dict[str, list[str]]) -> dict[str, str]:
    """Invert ``split_subjects``: subject -> split name."""
    return {subject: name for name in SPLITS for subject in splits.get(name, [])}


def subject_strata(labels_by_subject, classes: list[str]) -> dict[str, str]:
    """subject -> its most frequent labelled class other than background ('' when unlabelled).

    Args:
        labels_by_subject: iterable of (subject, per-frame labels (T,), -1 unlabelled), one per
            recording; a subject may repeat.
        classes: label names (``labels == i`` means ``classes[i]``).
    """
    counts: dict[str, Counter] = {}
    for subject, labels in labels_by_subject:
        labels = np.asarray(labels)
        counts.setdefault(str(subject), Counter()).update(labels[labels >= 0].tolist())
    strata = {}
    for subject, c in counts.items():
        named = [(n, classes[i] if i < len(classes) else str(i)) for i, n in c.items()]
        planes = [(n, name) for n, name in named if name != BACKGROUND] or named
        strata[subject] = max(planes)[1] if planes else ""
    return strata


def cache_strata(cache) -> dict[str, str]:
    """``subject_strata`` of every recording of a ``usssl.data.cache.Cache``."""
    shards = (cache.shard(s) for s in cache.shard_ids())
    return subject_strata(((sh.subject, sh.labels) for sh in shards), cache.classes)


def cache_folds(cache, k: int, seed: int = 0) -> list[list[str]]:
    """The cache's stratified subject-level k folds, stored beside the index on first use.

    ``CACHE/folds-k<k>-seed<seed>.json`` holds ``{"k", "seed", "folds": [[subject, ...], ...]}``;
    later calls read it, so every stage (and every re-run) sees the same folds.
    """
    path = Path(cache.root) / f"folds-k{k}-seed{seed}.json"
    subjects = sorted(set(cache.index["subject"].astype(str)))
    if path.is_file():
        folds = json.loads(path.read_text())["folds"]
        if sorted(s for f in folds for s in f) == subjects:
            check_disjoint({f"fold {i}": f for i, f in enumerate(folds)})
            return folds
        log.warning("%s does not match the cache's subjects (re-ingested?); recomputing the folds", path.name)
    folds = kfold_subjects(subjects, k, seed, cache_strata(cache))
    from usssl.engine.files import write_json_atomic

    write_json_atomic(path, {"k": k, "seed": seed, "folds": folds})
    return folds


def cache_fold(cache, k: int, seed: int, fold: int) -> tuple[list[str], list[str]]:
    """(training subjects, test subjects) of ``fold`` (0-based) of the cache's k folds."""
    folds = cache_folds(cache, k, seed)
    if not 0 <= fold < k:
        raise DataError(f"fold {fold} does not exist: folds are numbered 0..{k - 1}")
    test = folds[fold]
    train = sorted(s for i, f in enumerate(folds) if i != fold for s in f)
    check_disjoint({"train": train, "test": test})
    return train, test


def shards_of(cache, subjects: list[str]) -> list[str]:
    """Shard ids (index order) whose subject is in ``subjects``."""
    wanted = set(subjects)
    index = cache.index
    return index.loc[index["subject"].astype(str).isin(wanted), "shard"].tolist()


def require_split(cache, shard_ids: list[str], split: str | None) -> None:
    """Refuse shards whose subject is not in ``split`` of ``cache`` (None allows every shard).

    Raises:
        DataError: some of ``shard_ids`` belong to subjects outside the split.
    """
    if split is None:
        return
    allowed = set(cache.shard_ids(split))
    outside = [s for s in shard_ids if s not in allowed]
    if outside:
        raise DataError(
            f"{len(outside)} shard(s) are not in the '{split}' split (e.g. {outside[0]}); "
            "pretraining and fine-tuning must read only training subjects"
        )

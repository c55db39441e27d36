"""Subject-level splits and k-fold: every recording of a subject lands in one part, never by frame.

Both the train/val/test split and the k folds are stratified by each subject's main label when
labels exist: within each stratum the subjects are shuffled with the seed; the split cuts an order
that interleaves the strata in proportion, the folds deal the strata round-robin. The same
subjects, strata and seed always give the same parts.

    >>> splits = split_subjects(subjects, SplitConfig(test=0.3, seed=0), strata)
    >>> folds = kfold_subjects(subjects, k=3, seed=0, strata=strata)   # list of 3 disjoint lists
    >>> train, test = cache_fold(cache, k=3, seed=0, fold=1)           # subject ids

Leakage has one more source than subject ids: the same recording under two names (a copy, a hard
link, a second export) is two index rows with identical frames. ``drop_duplicates`` keeps one of
each such set before the split is made; ``require_test_split`` stops a stage that scores on test
when a cache (of one subject) has none.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from usssl.config import SplitConfig
from usssl.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
BACKGROUND = "background"


def _strata_groups(subjects: list[str], seed: int, strata: dict[str, str] | None,
                   keys: dict[str, str] | None = None) -> list[list[str]]:
    """Distinct subjects grouped by stratum (missing: one shared stratum), each group shuffled.

    Before the seeded shuffle the subjects are put in the order of ``keys`` (a subject -> a digest of
    its data, :func:`subject_order_keys`), not of their pseudonyms: the pseudonyms depend on the secret
    subject key, the data do not, so the same data and seed give the same split on every machine.
    """
    rng = random.Random(seed)
    groups: dict[str, list[str]] = {}
    for s in sorted(set(subjects), key=lambda s: ((keys or {}).get(s, ""), s)):
        groups.setdefault((strata or {}).get(s, ""), []).append(s)
    out = [groups[name] for name in sorted(groups)]
    for members in out:
        rng.shuffle(members)
    return out


def stratified_order(subjects: list[str], seed: int, strata: dict[str, str] | None = None,
                     keys: dict[str, str] | None = None) -> list[str]:
    """The distinct subjects in a seeded order whose every prefix holds each stratum in proportion.

    The i-th subject of a stratum of size n sits at relative position (i + ½) / n; ties between
    strata are broken in a seeded order. Without strata this is a seeded shuffle.
    """
    groups = _strata_groups(subjects, seed, strata, keys)
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


def split_subjects(subjects: list[str], cfg: SplitConfig, strata: dict[str, str] | None = None,
                   train_only_below_two: bool = False,
                   keys: dict[str, str] | None = None) -> dict[str, list[str]]:  # fmt: skip
    """Assign each distinct subject to train, val or test.

    The stratified order (``stratified_order``) is cut into ``round(cfg.test * n)`` test (at
    least 1), ``round(cfg.val * n)`` val (may be 0) and the rest train (at least 1).

    Args:
        subjects: subject ids, repeats allowed (one per recording).
        cfg: fractions and seed.
        strata: optional subject -> main label, to stratify.
        train_only_below_two: with fewer than two subjects, put them all in train (with a warning
            that no test split is possible) instead of raising; ingest does, so that one subject's
            recordings can still be cached and pretrained on (:func:`require_test_split` then stops
            the stages that need a test split).

    Returns:
        {"train": [...], "val": [...], "test": [...]}, each sorted.

    Raises:
        DataError: fewer than two distinct subjects (one to train on, one to test on), unless
            ``train_only_below_two``.
    """
    n = len(set(subjects))
    if n < 2 and train_only_below_two:
        log.warning("split: only %d subject in the cache, so there can be no test split: every recording "
                    "is in train (pretraining works; fine-tuning and evaluation need recordings of at "
                    "least 2 subjects)", n)  # fmt: skip
        return {"train": sorted(set(subjects)), "val": [], "test": []}
    if n < 2:
        raise DataError(
            f"a subject-level split needs at least 2 subjects (one for training, one for testing), "
            f"got {n}; add recordings of more subjects or check subjects.csv (patient_id column)"
        )
    n_test = min(max(1, int(round(cfg.test * n))), n - 1)
    n_val = max(0, min(int(round(cfg.val * n)), n - 1 - n_test))
    if cfg.val > 0 and n_val == 0:
        log.warning("split: %d subjects are too few for a validation split; val is empty", n)
    order = stratified_order(subjects, cfg.seed, strata, keys)
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    splits = {"train": sorted(train), "val": sorted(val), "test": sorted(test)}
    check_disjoint(splits)
    return splits


def kfold_subjects(subjects: list[str], k: int, seed: int = 0, strata: dict[str, str] | None = None,
                   keys: dict[str, str] | None = None) -> list[list[str]]:
    """``k`` disjoint folds covering every subject (stratified k-fold).

    The strata, each shuffled, are laid back to back and dealt round-robin (fold i takes every
    k-th subject), so each fold holds each stratum within one subject of its share.

    Raises:
        DataError: fewer subjects than folds.
    """
    order = [s for group in _strata_groups(subjects, seed, strata, keys) for s in group]  # strata back to back
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


def class_subject_counts(labels_by_subject, classes: list[str]) -> dict[str, int]:
    """class name -> number of subjects with at least one frame of it (background left out).

    Args: as :func:`subject_strata` (an iterable of (subject, per-frame labels), one per recording).
    """
    seen: dict[str, set[str]] = {name: set() for name in classes if name != BACKGROUND}
    for subject, labels in labels_by_subject:
        labels = np.asarray(labels)
        for i in np.unique(labels[labels >= 0]).tolist():
            name = classes[i] if i < len(classes) else str(i)
            if name != BACKGROUND:
                seen.setdefault(name, set()).add(str(subject))
    return {name: len(subjects) for name, subjects in seen.items()}


def thin_classes(counts: dict[str, int], min_subjects: int) -> dict[str, int]:
    """The classes of ``counts`` (from :func:`class_subject_counts`) labelled in fewer than
    ``min_subjects`` subjects, but in at least one."""
    return {name: n for name, n in counts.items() if 0 < n < min_subjects}


def warn_thin_classes(counts: dict[str, int], min_subjects: int, when: str) -> dict[str, int]:
    """Log a warning naming each class labelled in fewer than ``min_subjects`` subjects (with k-fold
    cross-validation, some folds then train or test without it); returns those classes."""
    thin = thin_classes(counts, min_subjects)
    if thin:
        said = ", ".join(f"{name!r} ({n} subject{'s' if n > 1 else ''})" for name, n in sorted(thin.items()))
        log.warning("%s: class(es) %s are labelled in fewer than %d subjects: some folds will train or be "
                    "tested without them; label more subjects, merge the class, or use fewer folds", when, said,
                    min_subjects)  # fmt: skip
    return thin


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
    folds = kfold_subjects(subjects, k, seed, cache_strata(cache), cache_order_keys(cache))
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


def require_test_split(cache, stage: str) -> list[str]:
    """The shard ids of the cache's test split, for a stage that scores on it.

    Raises:
        DataError: the test split is empty (a cache of fewer than 2 subjects puts every recording in
            train); the message names the cache, the stage and what to do.
    """
    shards = cache.shard_ids("test") if "test" in cache.splits else []
    if not shards:
        n = cache.index["subject"].nunique()
        raise DataError(
            f"{cache.root}: stage '{stage}' needs a test split, but this cache has none: it holds "
            f"{n} subject(s), so every recording is in train. Ingest recordings of at least 2 subjects "
            f"(one patient per subject: subjects.csv patient_id, or the DICOM PatientID), or drop "
            f"'{stage}' from the pipeline's stages"
        )
    return shards


def drop_duplicates(index: pd.DataFrame, report: pd.DataFrame,
                    frame_digests: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:  # fmt: skip
    """Keep one recording of each set whose cached frames are identical (``frame_digests``, one per
    index row: the same clip copied, hard-linked or exported twice), so that no split can hold one
    copy in train and another in test (ingest calls this before splitting).

    The one kept has the most labelled frames, then the first source path. The others leave the
    index and become ``skipped`` report rows naming the one kept (their shard folders stay, so a
    resume does not ingest them again).

    Args:
        index: the cache's index rows (``shard``, ``n_labelled``, ...); report: its report rows
            (``source``, ``status``, ``reason``, ``shard``, ``cached_frames``).
        frame_digests: each index row's ``frame_digest`` (``shard.json``).

    Returns:
        (index, report, shard ids of the repeats), as new DataFrames.
    """
    if index.empty:
        return index, report, []
    sources = dict(zip(report["shard"], report["source"]))
    rows = index.assign(frames_key=list(frame_digests), source_key=index["shard"].map(sources).fillna(""))
    rows = rows.sort_values(["n_labelled", "source_key"], ascending=[False, True], kind="stable")
    first = rows.drop_duplicates("frames_key")
    kept_source = dict(zip(first["frames_key"], first["source_key"]))
    repeats = rows.drop(first.index)
    report = report.copy()
    for row in repeats.itertuples():
        at = report.index[report["shard"] == row.shard]
        report.loc[at, ["status", "cached_frames"]] = ["skipped", 0]
        report.loc[at, "reason"] = (f"duplicate of {kept_source[row.frames_key]}: the very same frames (a copy, a "
                                    "link or a second export of one recording); cached once so that it cannot "
                                    "sit in two splits. Remove one of them from the sources")  # fmt: skip
    return index.loc[sorted(first.index)].reset_index(drop=True), report, repeats["shard"].tolist()


def subject_order_keys(subjects, frame_digests) -> dict[str, str]:
    """Subject -> the smallest frame digest of its recordings (sha256 of the cached frames alone): an
    order of the subjects that depends on the data, not on the pseudonymisation key."""
    keys: dict[str, str] = {}
    for subject, digest in zip(subjects, frame_digests):
        keys[subject] = min(keys.get(subject, str(digest)), str(digest))
    return keys


def cache_order_keys(cache) -> dict[str, str]:
    """:func:`subject_order_keys` of a cache's recordings (their ``Cache.frame_digests``, read once)."""
    return subject_order_keys(cache.index["subject"], cache.frame_digests)

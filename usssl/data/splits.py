"""Subject-level splits: every recording of a subject lands in the same split, never by frame."""

from __future__ import annotations

import logging
import random

from usssl.config import SplitConfig
from usssl.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def split_subjects(subjects: list[str], cfg: SplitConfig) -> dict[str, list[str]]:
    """Assign each distinct subject to train, val or test.

    The sorted distinct subjects are shuffled with ``cfg.seed`` and cut into
    ``round(cfg.test * n)`` test (at least 1), ``round(cfg.val * n)`` val (may be 0) and the rest
    train (at least 1): the same subjects and seed always give the same split.

    Args:
        subjects: subject ids, repeats allowed (one per recording).
        cfg: fractions and seed.

    Returns:
        {"train": [...], "val": [...], "test": [...]}, each sorted.

    Raises:
        DataError: fewer than two distinct subjects (one to train on, one to test on).
    """
    unique = sorted(set(subjects))
    n = len(unique)
    if n < 2:
        raise DataError(
            f"a subject-level split needs at least 2 subjects (one for training, one for testing), "
            f"got {n}; add recordings of more subjects or check subjects.csv (patient_id column)"
        )
    n_test = max(1, int(round(cfg.test * n)))
    n_val = int(round(cfg.val * n))
    n_test = min(n_test, n - 1)
    n_val = max(0, min(n_val, n - 1 - n_test))
    if cfg.val > 0 and n_val == 0:
        log.warning("split: %d subjects are too few for a validation split; val is empty", n)
    order = unique[:]
    random.Random(cfg.seed).shuffle(order)
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def subject_split(splits: dict[str, list[str]]) -> dict[str, str]:
    """Invert ``split_subjects``: subject -> split name."""
    return {subject: name for name in SPLITS for subject in splits.get(name, [])}

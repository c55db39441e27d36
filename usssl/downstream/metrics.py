"""Classification metrics for standard-plane detection and clip-level diagnosis.

Confusion matrix, macro P/R/F1 (with a subject bootstrap), one-vs-rest AUROC and per-class
sensitivity. Per class: precision = TP / (TP + FP) (0 when nothing was predicted as the class),
recall = TP / (TP + FN) (0 when the class is absent from the truth), F1 = 2PR / (P + R) (0 when
P + R = 0). Macro averages are means over the classes that occur in the truth *or* the
predictions, so a class predicted but absent from the test subjects counts with P = R = F1 = 0:
scikit-learn's default (``average='macro'``, ``zero_division=0``, ``labels`` unset). Macro F1 is the
mean of the per-class F1 (not the F1 of macro P and macro R), as in scikit-learn and the papers'
tables. A class neither in the truth nor predicted is left out of every mean.

    >>> scores = classification_scores(y_true, y_pred, n_classes=7)
    >>> scores["f1"], scores["per_class"]["f1"]
    >>> auroc_ovr(probs, y_true, classes), per_class_sensitivity(y_true, y_pred, n_classes=7)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts, rows = truth, columns = prediction."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def per_class_scores(cms: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support of one or a stack of confusion matrices.

    Args:
        cms: (..., C, C) counts, rows = truth, columns = prediction.

    Returns:
        {"precision", "recall", "f1", "support"}, each (..., C); 0 where undefined.
    """
    tp = np.diagonal(cms, axis1=-2, axis2=-1).astype(np.float64)
    support, predicted = cms.sum(axis=-1).astype(np.float64), cms.sum(axis=-2).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def _macro(cms: np.ndarray) -> dict[str, np.ndarray]:
    """Means of P, R, F1 over the classes in the truth or the predictions, each shape (...).

    The one macro rule, shared by ``scores_from_confusion`` and the vectorised ``bootstrap_ci``.
    """
    per_class = per_class_scores(cms)
    scored = (cms.sum(axis=-1) > 0) | (cms.sum(axis=-2) > 0)  # (..., C): true or predicted
    n = scored.sum(axis=-1)
    return {k: np.where(n > 0, (per_class[k] * scored).sum(axis=-1) / np.maximum(n, 1), 0.0)
            for k in ("precision", "recall", "f1")}


def scores_from_confusion(cm: np.ndarray) -> dict:
    """Macro precision / recall / F1 / accuracy and per-class arrays from a confusion matrix.

    Macro means run over the classes in the truth or the predictions (module docstring).

    Args:
        cm: (n_classes, n_classes) counts, rows = truth, columns = prediction.

    Returns:
        dict with floats ``precision``, ``recall``, ``f1``, ``accuracy``, ``confusion`` (``cm``) and
        ``per_class`` (dict of (n_classes,) arrays ``precision``, ``recall``, ``f1``, ``support``).
    """
    return {
        **{k: float(v) for k, v in _macro(cm).items()},
        "accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
        "confusion": cm,
        "per_class": per_class_scores(cm),
    }


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """``scores_from_confusion`` of the predictions (see there for the keys).

    Args:
        y_true: (N,) true class indices.
        y_pred: (N,) predicted class indices.
        n_classes: number of classes.
    """
    return scores_from_confusion(confusion_matrix(y_true, y_pred, n_classes))


def _per_subject(y_true, y_pred, subjects, groups, n_classes) -> tuple[np.ndarray, int]:
    """(G, S, C, C) confusion counts per group (e.g. seed) and subject, and S."""
    _, inverse = np.unique(np.asarray(subjects), return_inverse=True)
    group_ids, g_inverse = np.unique(np.zeros(len(inverse), int) if groups is None else np.asarray(groups),
                                     return_inverse=True)  # fmt: skip
    counts = np.zeros((len(group_ids), inverse.max() + 1 if len(inverse) else 0, n_classes, n_classes), np.int64)
    np.add.at(counts, (g_inverse, inverse, np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return counts, counts.shape[1]


def pooled_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
                  groups: np.ndarray | None = None) -> dict[str, float]:
    """Macro P / R / F1 of the predictions pooled within each group (e.g. the out-of-fold predictions
    of one seed: every subject predicted once by a model that never saw it), averaged over groups."""
    counts, _ = _per_subject(y_true, y_pred, np.zeros(len(y_true), int), groups, n_classes)
    macro = _macro(counts.sum(axis=1))  # each (G,)
    return {k: float(v.mean()) for k, v in macro.items()}


def bootstrap_ci(y_true: np.ndarray, y_pred: np.ndarray, subjects: np.ndarray, n_classes: int,
                 n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                 groups: np.ndarray | None = None) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of macro P / R / F1, resampling *subjects* with replacement.

    Frames of one subject are correlated, so the unit of resampling is the subject: each replicate
    draws as many subjects as there are (with replacement) and pools all their frames. Each
    replicate is scored by the same macro rule as ``classification_scores`` (over the classes in
    that replicate's truth or predictions). With ``groups`` (e.g. the seed of each prediction) a
    replicate draws the subjects once and scores each group's pooled predictions of them, then
    averages over groups: the interval of :func:`pooled_scores`, the same quantity as the estimate.

    Args:
        y_true, y_pred: (N,) class indices.
        subjects: (N,) subject id of each frame.
        n_boot: replicates; level: e.g. 0.95 for a 95% interval; seed: of the resampling.
        groups: (N,) group of each prediction, or None (one group).

    Returns:
        {"precision": (lo, hi), "recall": (lo, hi), "f1": (lo, hi)}.
    """
    per_subject, n_subjects = _per_subject(y_true, y_pred, subjects, groups, n_classes)  # (G, S, C, C)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_subjects, np.full(n_subjects, 1.0 / n_subjects), size=n_boot)  # (R, S) counts
    cms = np.einsum("rs,gscd->rgcd", draws, per_subject)  # (R, G, C, C)
    macro = {k: v.mean(axis=1) for k, v in _macro(cms).items()}  # each (R,): the mean over groups
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    return {k: tuple(float(v) for v in np.quantile(m, q)) for k, m in macro.items()}


def mann_whitney_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Area under the ROC curve as the Mann–Whitney statistic, ties counted ½.

    P(s⁺ > s⁻) + ½ P(s⁺ = s⁻) over all (positive, negative) pairs (Hanley & McNeil, Radiology
    1982, eq. 1: the AUC equals the Wilcoxon–Mann–Whitney U / (n⁺ n⁻)).

    Args:
        positives: (n⁺,) scores of the positive samples; negatives: (n⁻,) of the negative ones.
    """
    pos = np.asarray(positives, np.float64).ravel()
    neg = np.sort(np.asarray(negatives, np.float64).ravel())
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"mann_whitney_auc needs positives and negatives, got {pos.size} and {neg.size}")
    below = np.searchsorted(neg, pos, side="left")  # (n⁺,) negatives strictly below each positive
    tied = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * tied).sum() / (pos.size * neg.size))


def auroc_ovr(probs: np.ndarray, truth: np.ndarray, classes: int | Sequence[str]) -> float:
    """Macro one-vs-rest AUROC: the mean over classes c of the AUROC of ``probs[:, c]`` for
    "class c" against "any other class" (``mann_whitney_auc``, ties ½).

    A class absent from ``truth`` (no positives), or the only class in it (no negatives), has no
    AUROC and is skipped: the mean runs over the classes with both. (scikit-learn's
    ``roc_auc_score(multi_class='ovr')`` agrees when every class occurs; otherwise it returns NaN
    or refuses.)

    Args:
        probs: (N, C) scores, e.g. softmax probabilities (any monotone score works).
        truth: (N,) true class indices in [0, C).
        classes: the class names in column order, or their number C.

    Raises:
        ValueError: when ``probs`` does not have C columns, or no class has both positives and
            negatives (``truth`` holds a single class).
    """
    probs, truth = np.asarray(probs, np.float64), np.asarray(truth, int)
    n_classes = classes if isinstance(classes, int) else len(classes)
    if probs.ndim != 2 or probs.shape != (len(truth), n_classes):
        raise ValueError(f"auroc_ovr: probs must be (N={len(truth)}, C={n_classes}), got {probs.shape}")
    scorable = [c for c in range(n_classes) if 0 < (truth == c).sum() < len(truth)]
    if not scorable:
        raise ValueError("auroc_ovr: the truth holds a single class; one-vs-rest AUROC is undefined")
    return float(np.mean([mann_whitney_auc(probs[truth == c, c], probs[truth != c, c]) for c in scorable]))


def per_class_sensitivity(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Sensitivity (recall, true-positive rate) TP / (TP + FN) of each class.

    Args:
        y_true, y_pred: (N,) class indices; n_classes: C.

    Returns:
        (C,) float64; NaN for a class absent from the truth (no cases to detect; ``per_class_scores``
        reports 0 there instead).
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    return np.divide(np.diag(cm), support, out=np.full(n_classes, np.nan), where=support > 0)

"""Classification metrics for standard-plane detection: confusion matrix, macro P/R/F1.

Macro averages are taken over the classes present in the ground truth (a class never seen in the
test subjects has no recall to average). Per class: precision = TP / (TP + FP) (0 when nothing was
predicted as the class), recall = TP / (TP + FN), F1 = 2PR / (P + R) (0 when P + R = 0). Macro F1 is
the mean of the per-class F1 (not the F1 of macro P and macro R), as in scikit-learn and the
papers' tables.

    >>> scores = classification_scores(y_true, y_pred, n_classes=7)
    >>> scores["f1"], scores["per_class"]["f1"]
"""

from __future__ import annotations

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


def _macro(per_class: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Means of P, R, F1 over the classes present in the truth (support > 0), shape (...)."""
    present = per_class["support"] > 0
    n = present.sum(axis=-1)
    return {k: np.where(n > 0, (per_class[k] * present).sum(axis=-1) / np.maximum(n, 1), 0.0)
            for k in ("precision", "recall", "f1")}


def scores_from_confusion(cm: np.ndarray) -> dict:
    """Macro precision / recall / F1 / accuracy and per-class arrays from a confusion matrix.

    Args:
        cm: (n_classes, n_classes) counts, rows = truth, columns = prediction.

    Returns:
        dict with floats ``precision``, ``recall``, ``f1``, ``accuracy``, ``confusion`` (``cm``) and
        ``per_class`` (dict of (n_classes,) arrays ``precision``, ``recall``, ``f1``, ``support``).
    """
    per_class = per_class_scores(cm)
    return {
        **{k: float(v) for k, v in _macro(per_class).items()},
        "accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
        "confusion": cm,
        "per_class": per_class,
    }


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """``scores_from_confusion`` of the predictions (see there for the keys).

    Args:
        y_true: (N,) true class indices.
        y_pred: (N,) predicted class indices.
        n_classes: number of classes.
    """
    return scores_from_confusion(confusion_matrix(y_true, y_pred, n_classes))


def bootstrap_ci(y_true: np.ndarray, y_pred: np.ndarray, subjects: np.ndarray, n_classes: int,
                 n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of macro P / R / F1, resampling *subjects* with replacement.

    Frames of one subject are correlated, so the unit of resampling is the subject: each replicate
    draws as many subjects as there are (with replacement) and pools all their frames.

    Args:
        y_true, y_pred: (N,) class indices.
        subjects: (N,) subject id of each frame.
        n_boot: replicates; level: e.g. 0.95 for a 95% interval.

    Returns:
        {"precision": (lo, hi), "recall": (lo, hi), "f1": (lo, hi)}.
    """
    ids, inverse = np.unique(np.asarray(subjects), return_inverse=True)
    per_subject = np.zeros((len(ids), n_classes, n_classes), dtype=np.int64)  # (S, C, C)
    np.add.at(per_subject, (inverse, np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=n_boot)  # (R, S) counts
    cms = np.einsum("rs,scd->rcd", draws, per_subject)
    macro = _macro(per_class_scores(cms))  # each (R,)
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    return {k: tuple(float(v) for v in np.quantile(m, q)) for k, m in macro.items()}

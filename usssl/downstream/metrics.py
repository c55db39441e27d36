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


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """Macro precision / recall / F1 / accuracy and per-class arrays.

    Args:
        y_true: (N,) true class indices.
        y_pred: (N,) predicted class indices.
        n_classes: number of classes.

    Returns:
        dict with floats ``precision``, ``recall``, ``f1``, ``accuracy``, ``confusion`` (array) and
        ``per_class`` (dict of (n_classes,) arrays ``precision``, ``recall``, ``f1``, ``support``).
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    return {
        "precision": float(precision[present].mean()) if present.any() else 0.0,
        "recall": float(recall[present].mean()) if present.any() else 0.0,
        "f1": float(f1[present].mean()) if present.any() else 0.0,
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "confusion": cm,
        "per_class": {"precision": precision, "recall": recall, "f1": f1, "support": support},
    }

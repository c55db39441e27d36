"""Macro precision / recall / F1 against hand-computed values."""

import numpy as np
import pytest

from usssl.downstream.metrics import classification_scores, confusion_matrix


def test_macro_and_per_class_hand_computed():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    s = classification_scores(y_true, y_pred, 3)
    # class 0: P 2/2, R 2/3; class 1: P 1/2, R 1/2; class 2: P 1/2, R 1/1
    p = np.array([1.0, 0.5, 0.5])
    r = np.array([2 / 3, 0.5, 1.0])
    f1 = 2 * p * r / (p + r)
    assert s["per_class"]["precision"] == pytest.approx(p)
    assert s["per_class"]["recall"] == pytest.approx(r)
    assert s["precision"] == pytest.approx(p.mean())
    assert s["recall"] == pytest.approx(r.mean())
    assert s["f1"] == pytest.approx(f1.mean())  # mean of per-class F1, not F1 of the means
    assert s["f1"] != pytest.approx(2 * p.mean() * r.mean() / (p.mean() + r.mean()))
    assert s["accuracy"] == pytest.approx(4 / 6)


def test_absent_class_is_not_averaged_and_never_predicted_class_scores_zero():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 0, 0, 0])
    s = classification_scores(y_true, y_pred, 4)  # classes 2, 3 absent from the truth
    assert s["per_class"]["precision"][1] == 0.0
    assert s["recall"] == pytest.approx((1.0 + 0.0) / 2)
    assert s["f1"] == pytest.approx((2 * 0.5 * 1 / 1.5 + 0) / 2)


def test_confusion_matrix_rows_are_truth():
    cm = confusion_matrix(np.array([0, 1, 1]), np.array([1, 1, 0]), 2)
    assert cm.tolist() == [[0, 1], [1, 1]]

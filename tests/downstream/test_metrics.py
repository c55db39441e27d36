"""Classification metrics against hand-computed values and scikit-learn's.

scikit-learn is not a dependency: the values marked "scikit-learn" were computed once with
scikit-learn 1.9.1 (numpy 2.4.6), ``precision_recall_fscore_support(y_true, y_pred,
average='macro', zero_division=0)`` with the default ``labels`` (the union of true and predicted
classes), and are written here as numbers.
"""

import numpy as np
import pytest

from usssl.downstream.metrics import (auroc_ovr, bootstrap_ci, classification_scores, confusion_matrix,
                                      mann_whitney_auc, per_class_sensitivity)


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


def test_class_neither_true_nor_predicted_is_not_averaged():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 0, 0, 0])
    s = classification_scores(y_true, y_pred, 4)  # classes 2, 3 neither true nor predicted
    assert s["per_class"]["precision"][1] == 0.0
    assert s["recall"] == pytest.approx((1.0 + 0.0) / 2)
    assert s["f1"] == pytest.approx((2 * 0.5 * 1 / 1.5 + 0) / 2)


# Five classes in the truth; class 5 is predicted once but never true. Per class (TP, FP, FN):
# 0 (1, 0, 0) F1 1;  1 (4, 0, 1) 8/9;  2 (3, 2, 2) 3/5;  3 (1, 1, 1) 1/2;  4 (3, 4, 4) 3/7;  5 (0, 1, 0) 0.
PREDICTED_ABSENT_TRUE = np.array([0] + [1] * 5 + [2] * 5 + [3] * 2 + [4] * 7)
PREDICTED_ABSENT_PRED = np.array([0] + [1] * 4 + [4] + [2] * 3 + [4] * 2 + [3, 4] + [4] * 3 + [2, 2, 3, 5])


def test_predicted_but_absent_class_counts_as_zero_like_scikit_learn():
    s = classification_scores(PREDICTED_ABSENT_TRUE, PREDICTED_ABSENT_PRED, 6)
    f1 = np.array([1, 8 / 9, 3 / 5, 1 / 2, 3 / 7, 0])
    assert s["per_class"]["f1"] == pytest.approx(f1)
    assert s["f1"] == pytest.approx(f1.mean())  # over the 6 true-or-predicted classes
    # scikit-learn: P, R, F1 = 0.58810, 0.55476, 0.56958 (the 0.570)
    assert s["precision"] == pytest.approx(0.5880952380952381, abs=1e-12)
    assert s["recall"] == pytest.approx(0.5547619047619047, abs=1e-12)
    assert s["f1"] == pytest.approx(0.5695767195767195, abs=1e-12)
    # the old rule (truth classes only; scikit-learn with labels=[0..4]) gave the 0.683
    assert f1[:5].mean() == pytest.approx(0.6834920634920635, abs=1e-12)


def test_true_only_and_predicted_only_classes_match_scikit_learn():
    # class 2 is never predicted, classes 4 and 5 are never true
    y_true = np.array([3, 0, 0, 1, 0, 3, 3, 2, 0, 0, 1, 2, 3, 2, 1, 0, 3, 3, 0, 0, 2, 1, 3, 2, 2, 2, 3, 2, 0, 3])
    y_pred = np.array([5, 0, 1, 5, 0, 4, 3, 1, 0, 1, 5, 1, 1, 1, 1, 0, 3, 1, 3, 0, 0, 1, 3, 3, 1, 1, 0, 3, 5, 3])
    s = classification_scores(y_true, y_pred, 6)
    # scikit-learn
    assert s["precision"] == pytest.approx(0.24458874458874458, abs=1e-12)
    assert s["recall"] == pytest.approx(0.25, abs=1e-12)
    assert s["f1"] == pytest.approx(0.23194444444444443, abs=1e-12)
    assert s["per_class"]["f1"] == pytest.approx([0.625, 4 / 15, 0, 0.5, 0, 0])  # scikit-learn, average=None
    assert classification_scores(y_true, y_pred, 7)["f1"] == s["f1"]  # an unused 7th class changes nothing


def test_bootstrap_replicates_use_the_point_rule():
    # subject "a" predicts class 2, which no subject has; with two subjects every replicate pools
    # a + a, b + b or a + b, whose scores equal those of a, b and a + b; level 1 spans min to max
    y_true = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    y_pred = np.array([0, 0, 1, 2, 1, 1, 1, 0])
    subjects = np.array(["a"] * 4 + ["b"] * 4)
    # scikit-learn (P, R, F1) of a, b, a + b
    sklearn = {"a": (2 / 3, 0.5, 0.5555555555555555), "b": (1 / 3, 1 / 3, 1 / 3),
               "ab": (0.47222222222222215, 0.4222222222222222, 0.4444444444444444)}
    ci = bootstrap_ci(y_true, y_pred, subjects, 3, n_boot=200, level=1.0)
    for i, metric in enumerate(("precision", "recall", "f1")):
        values = [v[i] for v in sklearn.values()]
        assert ci[metric] == pytest.approx((min(values), max(values)), abs=1e-12)
        point = classification_scores(y_true, y_pred, 3)[metric]
        assert point == pytest.approx(sklearn["ab"][i], abs=1e-12)


def test_confusion_matrix_rows_are_truth():
    cm = confusion_matrix(np.array([0, 1, 1]), np.array([1, 1, 0]), 2)
    assert cm.tolist() == [[0, 1], [1, 1]]


def test_mann_whitney_counts_ties_half():
    # pairs (pos, neg): (3, 1) 1, (3, 2) 1, (2, 1) 1, (2, 2) ½  →  3.5 / 4
    assert mann_whitney_auc(np.array([3.0, 2.0]), np.array([1.0, 2.0])) == pytest.approx(0.875)
    assert mann_whitney_auc(np.ones(3), np.ones(2)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="positives and negatives"):
        mann_whitney_auc(np.ones(3), np.array([]))


PROBS = np.array([[.5, .3, .2], [.5, .2, .3], [.2, .6, .2], [.1, .2, .7],
                  [.4, .4, .2], [.3, .3, .4], [.6, .2, .2], [.2, .2, .6]])
TRUTH = np.array([0, 1, 1, 2, 0, 2, 1, 0])


def test_auroc_ovr_hand_computed_with_ties():
    # class 0: positives .5 .4 .2 vs negatives .5 .2 .1 .3 .6 → (3 + ½) + 3 + (1 + ½) = 8 of 15
    # class 1: positives .2 .6 .2 vs .3 .2 .4 .3 .2 → 1 + 5 + 1 = 7 of 15
    # class 2: positives .7 .4 vs .2 .3 .2 .2 .2 .6 → 6 + 5 = 11 of 12
    expected = (8 / 15 + 7 / 15 + 11 / 12) / 3
    assert auroc_ovr(PROBS, TRUTH, 3) == pytest.approx(expected, abs=1e-12)
    # scikit-learn roc_auc_score(multi_class='ovr', average='macro'): 0.638888888888889
    assert auroc_ovr(PROBS, TRUTH, ["a", "b", "c"]) == pytest.approx(0.638888888888889, abs=1e-12)


def test_auroc_ovr_skips_classes_absent_from_the_truth():
    probs = np.array([[.6, .3, .1], [.2, .5, .3], [.3, .3, .4], [.5, .1, .4]])
    # class 0: .6 .5 vs .2 .3 → 1;  class 1: .5 .3 vs .3 .1 → (2 + 1.5) / 4;  class 2 never true: skipped
    assert auroc_ovr(probs, np.array([0, 1, 1, 0]), 3) == pytest.approx((1 + 0.875) / 2)
    with pytest.raises(ValueError, match="single class"):
        auroc_ovr(probs, np.array([1, 1, 1, 1]), 3)
    with pytest.raises(ValueError, match="C=4"):
        auroc_ovr(probs, np.array([0, 1, 1, 0]), 4)


def test_per_class_sensitivity_hand_computed():
    sens = per_class_sensitivity(np.array([0, 0, 1, 1, 1, 3]), np.array([0, 1, 1, 1, 0, 3]), 4)
    # 1 of 2, 2 of 3, no class-2 cases, 1 of 1 (scikit-learn recall_score(average=None): .5 .667 1)
    assert sens[[0, 1, 3]] == pytest.approx([0.5, 2 / 3, 1.0])
    assert np.isnan(sens[2])

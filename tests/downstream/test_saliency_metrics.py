"""Saliency metrics against values computed by hand (MIT benchmark definitions), edge cases included."""

import math

import numpy as np
import pytest

from usssl.downstream.saliency_metrics import (auc_judd, cc, fixation_map, kl_div, nss, saliency_scores, sim,
                                               sigma_from_visual_angle)


def test_kl_uniform_prediction_single_fixation_map():
    gt = np.array([[1.0, 0.0], [0.0, 0.0]])
    # G = 1 at one pixel, S = 0.25 everywhere: KL = 1 · log(ε + 1 / (0.25 + ε)) = log 4
    assert kl_div(np.ones((2, 2)), gt) == pytest.approx(math.log(4), abs=1e-9)
    assert kl_div(gt * 7, gt) == pytest.approx(0.0, abs=1e-9)  # scale-free: maps are normalised


def test_cc_signs_and_constant_map():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert cc(a, 2 * a + 1) == pytest.approx(1.0)
    assert cc(a, -a) == pytest.approx(-1.0)
    assert cc(np.ones((2, 2)), a) == 0.0


def test_nss_hand_computed_single_fixation_and_constant():
    pred = np.array([[0.0, 0.0], [0.0, 4.0]])  # mean 1, population std √3
    fix = np.array([[0, 0], [0, 1]])
    assert nss(pred, fix) == pytest.approx(3 / math.sqrt(3))
    assert nss(pred, np.array([[1, 0], [0, 0]])) == pytest.approx(-1 / math.sqrt(3))
    assert nss(np.full((2, 2), 5.0), fix) == 0.0
    with pytest.raises(ValueError):
        nss(pred, np.zeros((2, 2)))


def test_sim_hand_computed_and_zero_map():
    p = np.array([1.0, 0.0, 0.0, 0.0])
    q = np.array([0.5, 0.5, 0.0, 0.0])  # min-max → [1, 1, 0, 0] → [0.5, 0.5, 0, 0]
    assert sim(p, q) == pytest.approx(0.5)
    assert sim(q, q) == pytest.approx(1.0)
    assert sim(np.zeros(4), q) == 0.0


def test_auc_judd_hand_computed():
    pred = np.array([[0.1, 0.4, 0.35, 0.8]])
    # min-max: [0, 3/7, 2.5/7, 1]; fixations on the 2nd and 3rd pixels
    # i=1: t=3/7, 2 pixels ≥ t → TP .5, FP (2-1)/2 = .5;  i=2: t=2.5/7, 3 pixels → TP 1, FP .5
    # points (0,0) (.5,.5) (.5,1) (1,1): area .125 + 0 + .5 = .625
    assert auc_judd(pred, np.array([[0, 1, 1, 0]])) == pytest.approx(0.625)
    assert auc_judd(pred, np.array([[0, 0, 0, 1]])) == pytest.approx(1.0)  # single fixation at the peak
    assert auc_judd(np.ones((2, 2)), np.array([[1, 0], [0, 0]])) == 0.5  # constant map: chance


def test_fixation_map_sums_to_one_and_peaks_at_fixation():
    fix = np.zeros((40, 50), bool)
    fix[10, 30] = True
    m = fixation_map(fix, sigma_px=2.0)
    assert m.sum() == pytest.approx(1.0)
    assert np.unravel_index(m.argmax(), m.shape) == (10, 30)
    # a Gaussian with σ = 2: the value one σ away is e^{-1/2} of the peak
    assert m[10, 32] / m[10, 30] == pytest.approx(math.exp(-0.5), rel=0.02)
    assert fixation_map(np.zeros((4, 4)), 1.0).sum() == 0.0


def test_sigma_from_visual_angle_and_all_scores():
    # 1° at 600 mm is 10.47 mm; on a 520 mm, 1920 px wide screen that is 38.7 px
    assert sigma_from_visual_angle(1.0, 1920, 520.0, 600.0) == pytest.approx(38.66, abs=0.05)
    fix = np.zeros((20, 20), bool)
    fix[5, 5] = fix[14, 12] = True
    gt = fixation_map(fix, 2.0)
    scores = saliency_scores(gt, gt, fix)
    assert scores["cc"] == pytest.approx(1.0) and scores["sim"] == pytest.approx(1.0)
    assert scores["kl"] == pytest.approx(0.0, abs=1e-9) and scores["auc_judd"] > 0.99 and scores["nss"] > 3

"""Saliency metrics against values computed by hand (MIT benchmark definitions), edge cases included."""

import math

import numpy as np
import pytest

from usssl.downstream.saliency_metrics import (auc_judd, cc, fixation_map, gaze_fixations, kl_div, nss,
                                               saliency_scores, sigma_from_visual_angle, sim)


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
    assert auc_judd(np.ones((2, 2)), np.array([[1, 0], [0, 0]])) == 0.5  # constant map: chance (ours)


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


def test_kl_hand_computed_with_the_reference_epsilon():
    gt = np.array([0.5, 0.5, 0.0, 0.0])
    assert kl_div(np.full(4, 3.0), gt) == pytest.approx(math.log(2), abs=1e-9)  # constant prediction
    # S = 0 at a fixated pixel: only ε keeps the log finite, KL = .5·log(ε + .5/(1 + ε)) + .5·log(ε + .5/ε)
    eps = 2.2204e-16
    expected = 0.5 * math.log(eps + 0.5 / (1 + eps)) + 0.5 * math.log(eps + 0.5 / eps)
    assert kl_div(np.array([1.0, 0.0, 0.0, 0.0]), gt) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(17.33, abs=0.01)
    assert kl_div(np.ones(4), np.zeros(4)) == 0.0  # no ground truth mass: nothing to diverge from


def test_cc_hand_computed():
    a = np.array([1.0, 2.0, 3.0, 4.0])  # deviations −1.5, −.5, .5, 1.5
    b = np.array([0.0, 0.0, 1.0, 1.0])  # deviations −.5, −.5, .5, .5
    # Σ products = 2, Σ a-dev² = 5, Σ b-dev² = 1  →  2 / √5
    assert cc(a, b) == pytest.approx(2 / math.sqrt(5))
    assert cc(b, a) == pytest.approx(2 / math.sqrt(5))


def test_sim_min_max_normalises_and_constant_map_is_uniform():
    # [2, 4, 6] → [0, .5, 1] → [0, 1/3, 2/3];  [1, 1, 3] → [0, 0, 1];  Σ min = 2/3
    assert sim(np.array([2.0, 4.0, 6.0]), np.array([1.0, 1.0, 3.0])) == pytest.approx(2 / 3)
    # a constant map is the uniform 1/4: overlap with [.5, .5, 0, 0] is .25 + .25
    assert sim(np.full(4, 5.0), np.array([0.5, 0.5, 0.0, 0.0])) == pytest.approx(0.5)
    assert sim(np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.0, 0.0, 0.0, 3.0])) == pytest.approx(1.0)  # single fixation


def test_auc_judd_single_fixation_below_the_peak_and_repeated_fixations():
    pred = np.array([[0.1, 0.4, 0.35, 0.8]])
    # one fixation at 2.5/7: 3 pixels ≥ t → TP 1, FP (3 − 1)/3;  points (0,0) (2/3,1) (1,1): area 1/3 + 1/3
    assert auc_judd(pred, np.array([[0, 0, 1, 0]])) == pytest.approx(2 / 3)
    assert auc_judd(pred, np.array([[0, 0, 3, 0]])) == pytest.approx(2 / 3)  # a pixel counts once
    # fixation at the minimum: its threshold admits every pixel, TP 1 and FP (4 − 1)/3 = 1: the
    # curve is the diagonal, 0.5
    assert auc_judd(pred, np.array([[1, 0, 0, 0]])) == pytest.approx(0.5)


def test_nss_counts_a_pixel_once():
    pred = np.array([[0.0, 0.0], [0.0, 4.0]])
    assert nss(pred, np.array([[2, 0], [0, 1]])) == pytest.approx((-1 / math.sqrt(3) + 3 / math.sqrt(3)) / 2)


def test_fixation_map_anisotropic_sigma_and_counts():
    fix = np.zeros((40, 60))
    fix[20, 15] = 2
    fix[20, 45] = 1
    m = fixation_map(fix, sigma_px=(3.0, 1.5))  # (σ_y, σ_x)
    assert m.sum() == pytest.approx(1.0)
    assert m[20, 15] / m[20, 45] == pytest.approx(2.0, rel=1e-6)  # a pixel fixated twice weighs twice
    assert m[23, 15] / m[20, 15] == pytest.approx(math.exp(-0.5), rel=0.02)  # one σ_y down
    assert m[20, 17] / m[20, 15] == pytest.approx(math.exp(-(2**2) / (2 * 1.5**2)), rel=0.02)  # 2 px along x
    with pytest.raises(ValueError):
        fixation_map(fix, 0.0)


def test_gaze_fixations_rounds_to_pixel_centres_skips_nan_and_clips():
    pts = np.array([[2.4, 1.6], [2.6, 1.4], [np.nan, np.nan], [-3.0, 9.0], [2.0, 2.0]])
    counts = gaze_fixations(pts, (4, 5))  # (H, W)
    assert counts[2, 2] == 2 and counts[1, 3] == 1 and counts[3, 0] == 1  # x 2.4 → col 2, y 1.6 → row 2
    assert counts.sum() == 4  # the NaN point is skipped, the outside one clipped to the corner
    assert gaze_fixations(np.full((3, 2), np.nan), (4, 5)).sum() == 0


def test_sigma_from_visual_angle_rejects_nonsense():
    with pytest.raises(ValueError, match="positive"):
        sigma_from_visual_angle(1.0, 1920, 0.0, 600.0)


def _reference_auc_judd(pred: np.ndarray, fixations: np.ndarray, n_jitter: int = 200, seed: int = 0):
    """The MIT benchmark's AUC_Judd.m as its description reads (jitter on), averaged over jitters.

    Each draw adds U(0, 1e-7) to every pixel, min-max normalises, thresholds at the fixated values
    (descending) with TP = i / n, FP = (pixels ≥ t − i) / (N − n), adds (0, 0), (1, 1), integrates
    by trapezoids. Returns (mean, standard error of the mean).
    """
    rng = np.random.default_rng(seed)
    fix = np.asarray(fixations).ravel() > 0
    n, n_pix = int(fix.sum()), fix.size
    i = np.arange(1, n + 1)
    scores = []
    for _ in range(n_jitter):
        s = np.asarray(pred, np.float64).ravel() + rng.random(n_pix) / 1e7
        s = (s - s.min()) / (s.max() - s.min())
        thresholds = np.sort(s[fix])[::-1]  # (n,)
        above = (s[None, :] >= thresholds[:, None]).sum(axis=1)  # (n,) pixels ≥ each threshold
        tp = np.r_[0.0, i / n, 1.0]
        fp = np.r_[0.0, (above - i) / (n_pix - n), 1.0]
        scores.append(np.trapezoid(tp, fp))
    return float(np.mean(scores)), float(np.std(scores) / math.sqrt(n_jitter))


def _zero_plateau():
    """8 × 8 map, 1 on a 3 × 3 block (rows 5–7, cols 1–3), 0 elsewhere; one fixation in the block
    and three on the plateau (the issue's case)."""
    pred = np.zeros((8, 8))
    pred[5:8, 1:4] = 1.0
    fix = np.zeros((8, 8), int)
    fix[5, 2] = fix[3, 2] = fix[4, 0] = fix[7, 6] = 1
    return pred, fix


def test_auc_judd_zero_plateau_hand_computed():
    pred, fix = _zero_plateau()
    # n = 4 fixated, 60 not: 8 in the block, 52 on the plateau.
    # Mann–Whitney, ties ½: block fixation 52 + 8/2 = 56; each plateau fixation 52/2 = 26 → 134 / 240.
    # Lowest fixated value 0, shared by k = 3 fixated and m = 52 others: E[FP_n] = (8 + 52·3/4) / 60 = 47/60.
    # AUC = 134/240 + (47/60) / (2·4) = 315/480 = 0.65625 (the 0.66; untied thresholds gave 0.34)
    assert auc_judd(pred, fix) == pytest.approx(315 / 480, abs=1e-12)


@pytest.mark.parametrize("case", ["zero_plateau", "graded_block", "four_levels"])
def test_auc_judd_equals_the_jittered_reference_on_average(case):
    if case == "zero_plateau":
        pred, fix = _zero_plateau()
    elif case == "graded_block":  # distinct values on a block, zero plateau around it
        pred = np.zeros((24, 32))
        pred[4:12, 6:16] = np.linspace(0.2, 1.0, 80).reshape(8, 10)
        fix = np.zeros((24, 32), int)
        fix[5, 7] = fix[10, 14] = fix[8, 9] = fix[20, 3] = fix[15, 25] = fix[2, 30] = 1
    else:  # ties at every level, fixations on several of them
        rng = np.random.default_rng(1)
        pred = rng.integers(0, 4, (12, 16)).astype(float)
        fix = np.zeros((12, 16), int)
        fix.flat[rng.choice(pred.size, 10, replace=False)] = 1
    mean, sem = _reference_auc_judd(pred, fix)
    assert auc_judd(pred, fix) == pytest.approx(mean, abs=3 * sem)
    assert sem < 0.01


def test_auc_judd_constant_map_departs_from_the_jittered_reference():
    fix = np.zeros((6, 6), int)
    fix[1, 1] = fix[4, 2] = 1
    mean, sem = _reference_auc_judd(np.ones((6, 6)), fix)
    assert mean == pytest.approx(0.5 + 1 / (2 * (2 + 1)), abs=3 * sem)  # the reference: 0.5 + 1/(2(n + 1))
    assert auc_judd(np.ones((6, 6)), fix) == 0.5  # ours: chance


def test_auc_judd_rejects_degenerate_inputs():
    with pytest.raises(ValueError, match="at least one fixation"):
        auc_judd(np.eye(3), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="without a fixation"):
        auc_judd(np.eye(3), np.ones((3, 3)))
    with pytest.raises(ValueError, match="shape"):
        auc_judd(np.eye(3), np.eye(4))

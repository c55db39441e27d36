"""Saliency metrics exactly as the MIT saliency benchmark defines them, and fixation maps.

Bylinskii, Judd, Oliva, Torralba, Durand. *What do different evaluation metrics tell us about
saliency models?* TPAMI 2018 (METHODS.md §3). KL, CC and SIM compare the prediction with the
blurred fixation map; NSS and AUC-Judd with the binary fixations. Maps are 2-D numpy arrays.
Where the reference returns NaN (constant maps) each function says what it returns instead.

    >>> fixations = gaze_fixations(np.array([[30.2, 19.8]]), (48, 64))   # x, y → pixel (20, 30)
    >>> gt = fixation_map(fixations, sigma_px=3.0)      # sums to 1
    >>> kl_div(pred, gt), cc(pred, gt), nss(pred, fixations), sim(pred, gt), auc_judd(pred, fixations)
"""

from __future__ import annotations

import math

import numpy as np

from usssl.downstream.metrics import mann_whitney_auc

EPS = 2.2204e-16  # the reference's ε (MATLAB eps)

from usssl.data.fixations import fixation_map, gaze_fixations, sigma_from_visual_angle  # noqa: E402,F401


def _unit_sum(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    total = x.sum()
    return x / total if total > 0 else x


def kl_div(pred: np.ndarray, gt: np.ndarray) -> float:
    """KL(G ‖ S) = Σ G · log(ε + G / (S + ε)), both normalised to sum 1 (lower is better)."""
    p, g = _unit_sum(pred), _unit_sum(gt)
    return float(np.sum(g * np.log(EPS + g / (p + EPS))))


def cc(pred: np.ndarray, gt: np.ndarray) -> float:
    """Pearson correlation of the two maps.

    A constant map scores 0 (no linear relation); the reference divides by a zero std (NaN).
    """
    p = np.asarray(pred, np.float64).ravel()
    g = np.asarray(gt, np.float64).ravel()
    ps, gs = p.std(), g.std()
    if ps == 0 or gs == 0:
        return 0.0
    return float(np.mean((p - p.mean()) * (g - g.mean())) / (ps * gs))


def nss(pred: np.ndarray, fixations: np.ndarray) -> float:
    """Mean of the z-scored prediction at the fixated pixels (a pixel fixated twice counts once).

    The z-score uses the population std (÷N, as numpy and the Python ports of the benchmark);
    the MATLAB reference's ``std`` divides by N − 1, a relative difference of √(N/(N−1)) − 1
    (< 1e-5 at 224×288). A constant prediction scores 0 (the reference: NaN).
    """
    p = np.asarray(pred, np.float64)
    fix = np.asarray(fixations) > 0
    if not fix.any():
        raise ValueError("nss needs at least one fixation")
    std = p.std()
    if std == 0:
        return 0.0
    return float(((p - p.mean()) / std)[fix].mean())


def sim(pred: np.ndarray, gt: np.ndarray) -> float:
    """Histogram intersection Σ min(P, Q) of min-max-normalised, then unit-sum maps.

    A zero map stays zero (SIM 0). A constant non-zero map, where min-max normalisation divides
    by zero (NaN in the reference), is taken as the uniform distribution 1/N: a uniform
    prediction then scores Σ min(1/N, Q), its overlap with the ground truth.
    """

    def norm(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        span = x.max() - x.min()
        if span > 0:
            return _unit_sum((x - x.min()) / span)
        return np.full_like(x, 1.0 / x.size) if x.max() != 0 else np.zeros_like(x)

    return float(np.minimum(norm(pred), norm(gt)).sum())


def auc_judd(pred: np.ndarray, fixations: np.ndarray) -> float:
    """AUC-Judd of the MIT benchmark, computed exactly on maps with ties.

    Judd, Ehinger, Durand, Torralba, ICCV 2009; Bylinskii et al. TPAMI 2018 §3. The reference (``AUC_Judd.m``) adds uniform jitter of at most 1e-7 to the map to break ties,
    then thresholds at the map's values on the n fixated pixels (descending): at the i-th, TP = i / n
    and FP = (pixels ≥ threshold − i) / (N − n), N the pixel count; with (0, 0) and (1, 1) added,
    the score is the trapezoid area under FP → TP. Once ties are broken that area is

        AUC = MW + FP_n / (2n),

    MW the Mann–Whitney probability that a fixated pixel outranks a non-fixated one and FP_n the
    FP rate at the lowest fixated value (our rewriting: each trapezoid adds 1/(2n), half a TP
    step, over its FP step, and the FP steps sum to FP_n).
    We return its expectation over the tie-breaking: MW with ties counted ½ (``mann_whitney_auc``),
    and, where the lowest fixated value v is shared by k fixated and m non-fixated pixels, each of
    those m non-fixated pixels outranks the last of the k with probability k / (k + 1). This equals
    the reference averaged over jitters as long as the jitter only breaks exact ties, i.e. distinct
    values of the map lie more than 1e-7 apart (the reference jitters the raw map, before its
    min-max normalisation).

    A pixel fixated twice counts once (the reference's ``fixationMap > 0``). A constant prediction
    scores 0.5, chance (ours); the jittered reference gives 0.5 + 1 / (2(n + 1)) on average there
    (the trapezoid bias above, 0.75 with one fixation).

    Args:
        pred: (H, W) saliency map; fixations: (H, W) fixation counts (> 0 where fixated).

    Raises:
        ValueError: on differing shapes, no fixation, or every pixel fixated.
    """
    p = np.asarray(pred, np.float64)
    fix = np.asarray(fixations) > 0
    if p.shape != fix.shape:
        raise ValueError(f"auc_judd: prediction {p.shape} and fixations {fix.shape} differ in shape")
    n_fix, n_neg = int(fix.sum()), int((~fix).sum())
    if n_fix == 0:
        raise ValueError("auc_judd needs at least one fixation")
    if n_neg == 0:
        raise ValueError("auc_judd needs at least one pixel without a fixation")
    if p.max() == p.min():
        return 0.5
    pos, neg = p[fix], p[~fix]  # (n,), (N − n,)
    v = pos.min()
    k, m = int((pos == v).sum()), int((neg == v).sum())
    fp_last = ((neg > v).sum() + m * k / (k + 1)) / n_neg  # E[FP rate at the lowest fixated pixel]
    return float(mann_whitney_auc(pos, neg) + fp_last / (2 * n_fix))


def saliency_scores(pred: np.ndarray, gt_map: np.ndarray, fixations: np.ndarray) -> dict[str, float]:
    """All five metrics: KL, CC, SIM against ``gt_map``; NSS, AUC against ``fixations``."""
    return {"kl": kl_div(pred, gt_map), "cc": cc(pred, gt_map), "sim": sim(pred, gt_map),
            "nss": nss(pred, fixations), "auc_judd": auc_judd(pred, fixations)}

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
    """AUC-Judd: thresholds at the prediction's values on fixated pixels (descending); at
    threshold i, TP = i / n_fix and FP = (pixels ≥ threshold − i) / (n_pixels − n_fix); the
    points (0, 0) and (1, 1) are added; trapezoid area.

    The reference adds a 1e-7 jitter to break ties; we do not (it changes nothing on continuous
    maps). Instead a constant prediction scores 0.5 (chance, what the jittered reference gives on
    average), and FP rates pushed above 1 by ties are clipped to 1.
    """
    p = np.asarray(pred, np.float64)
    fix = np.asarray(fixations) > 0
    n_fix, n_pix = int(fix.sum()), p.size
    if n_fix == 0:
        raise ValueError("auc_judd needs at least one fixation")
    span = p.max() - p.min()
    if span == 0:
        return 0.5
    p = (p - p.min()) / span
    thresholds = np.sort(p[fix])[::-1]  # (n_fix,)
    flat = np.sort(p.ravel())
    tp, fp = [0.0], [0.0]
    for i, t in enumerate(thresholds, start=1):
        above = n_pix - np.searchsorted(flat, t, side="left")  # pixels ≥ t
        tp.append(i / n_fix)
        fp.append(min(1.0, (above - i) / max(n_pix - n_fix, 1)))
    tp.append(1.0)
    fp.append(1.0)
    return float(np.trapezoid(tp, fp))


def saliency_scores(pred: np.ndarray, gt_map: np.ndarray, fixations: np.ndarray) -> dict[str, float]:
    """All five metrics: KL, CC, SIM against ``gt_map``; NSS, AUC against ``fixations``."""
    return {"kl": kl_div(pred, gt_map), "cc": cc(pred, gt_map), "sim": sim(pred, gt_map),
            "nss": nss(pred, fixations), "auc_judd": auc_judd(pred, fixations)}

"""Saliency metrics exactly as the MIT saliency benchmark defines them, and fixation maps.

Bylinskii, Judd, Oliva, Torralba, Durand. *What do different evaluation metrics tell us about
saliency models?* TPAMI 2018 (METHODS.md §3). KL, CC and SIM compare the prediction with the
blurred fixation map; NSS and AUC-Judd with the binary fixations. Maps are 2-D numpy arrays.

    >>> fixations = np.zeros((48, 64), bool); fixations[20, 30] = True
    >>> gt = fixation_map(fixations, sigma_px=3.0)      # sums to 1
    >>> kl_div(pred, gt), cc(pred, gt), nss(pred, fixations), sim(pred, gt), auc_judd(pred, fixations)
"""

from __future__ import annotations

import math

import numpy as np

EPS = 2.2204e-16  # the reference's ε (MATLAB eps)


def sigma_from_visual_angle(degrees: float, screen_width_px: int, screen_width_mm: float,
                            distance_mm: float) -> float:
    """Gaussian σ in pixels for ``degrees`` of visual angle at the given viewing geometry."""
    size_mm = 2 * distance_mm * math.tan(math.radians(degrees) / 2)
    return size_mm * screen_width_px / screen_width_mm


def fixation_map(fixations: np.ndarray, sigma_px: float) -> np.ndarray:
    """Sum of Gaussians (σ in pixels) at the fixated pixels, normalised to sum 1.

    Args:
        fixations: (H, W) bool/int map of fixated pixels (counts allowed).
        sigma_px: Gaussian standard deviation in pixels.

    Returns:
        (H, W) float64 summing to 1 (all zeros when there is no fixation).
    """
    import cv2

    fix = np.asarray(fixations, dtype=np.float64)
    if fix.sum() == 0:
        return np.zeros_like(fix)
    radius = max(1, int(math.ceil(4 * sigma_px)))
    blurred = cv2.GaussianBlur(fix, (2 * radius + 1, 2 * radius + 1), sigma_px, borderType=cv2.BORDER_CONSTANT)
    return blurred / blurred.sum()


def _unit_sum(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    total = x.sum()
    return x / total if total > 0 else x


def kl_div(pred: np.ndarray, gt: np.ndarray) -> float:
    """KL(G ‖ S) = Σ G · log(ε + G / (S + ε)), both normalised to sum 1 (lower is better)."""
    p, g = _unit_sum(pred), _unit_sum(gt)
    return float(np.sum(g * np.log(EPS + g / (p + EPS))))


def cc(pred: np.ndarray, gt: np.ndarray) -> float:
    """Pearson correlation of the two maps (0 when either is constant)."""
    p = np.asarray(pred, np.float64).ravel()
    g = np.asarray(gt, np.float64).ravel()
    ps, gs = p.std(), g.std()
    if ps == 0 or gs == 0:
        return 0.0
    return float(np.mean((p - p.mean()) * (g - g.mean())) / (ps * gs))


def nss(pred: np.ndarray, fixations: np.ndarray) -> float:
    """Mean of the z-scored prediction at the fixated pixels (0 for a constant prediction)."""
    p = np.asarray(pred, np.float64)
    fix = np.asarray(fixations) > 0
    if not fix.any():
        raise ValueError("nss needs at least one fixation")
    std = p.std()
    if std == 0:
        return 0.0
    return float(((p - p.mean()) / std)[fix].mean())


def sim(pred: np.ndarray, gt: np.ndarray) -> float:
    """Histogram intersection Σ min(P, Q) of min-max-normalised, then unit-sum maps."""

    def norm(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        span = x.max() - x.min()
        x = (x - x.min()) / span if span > 0 else np.zeros_like(x)
        return _unit_sum(x)

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

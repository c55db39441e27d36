"""Tables of the video–speech ablation (benchmarks/ablations/video_speech*.yaml) as markdown.

For each naming level and label fraction: the pooled out-of-fold macro F1 of each initialisation with
its subject-bootstrap interval (``evaluate/intervals.csv``), and the paired differences the paper's
claims are about, ΔF1 with a paired subject bootstrap (the same resampled subjects score both models).

    python benchmarks/ablations/summarise_video_speech.py runs/ablation-vs-100 runs/ablation-vs-30
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from usssl.downstream.metrics import confusion_matrix, scores_from_confusion

ROWS = ["random", "l_ord", "contrastive", "affinity", "full"]
CLAIMS = [("l_ord", "random", "video only (L_ord) beats random"),
          ("contrastive", "l_ord", "+ contrastive beats video only"),
          ("affinity", "contrastive", "+ affinity (the gate) beats + contrastive"),
          ("full", "affinity", "full (+ L_cls) beats + affinity"),
          ("full", "random", "full beats random")]


def per_subject_confusions(frame: pd.DataFrame, classes: list[str], subjects: list) -> np.ndarray:
    """(S, C, C) confusion counts of one model's predictions per subject."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(subjects), len(classes), len(classes)), np.int64)
    for s, (_, part) in enumerate(frame.groupby("subject", sort=True)):
        out[s] = confusion_matrix(part["true"].map(index).to_numpy(), part["pred"].map(index).to_numpy(), len(classes))
    return out


def paired_delta(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """ΔF1 = F1(a) − F1(b) of pooled confusions (S, C, C) and its 95% paired subject-bootstrap interval."""
    f1 = lambda c: scores_from_confusion(c.sum(0))["f1"]  # noqa: E731
    rng = np.random.default_rng(seed)
    draws = [f1(a[idx]) - f1(b[idx]) for idx in (rng.integers(len(a), size=len(a)) for _ in range(n_boot))]
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return f1(a) - f1(b), float(lo), float(hi)


def main(dirs: list[str]) -> str:
    lines = []
    preds = {d: pd.read_csv(Path(d) / "evaluate" / "predictions.csv") for d in dirs}
    inter = {d: pd.read_csv(Path(d) / "evaluate" / "intervals.csv") for d in dirs}
    shared = pd.concat(preds.values())
    classes = sorted(set(shared["true"]) | set(shared["pred"]))
    for d in dirs:
        lines.append(f"### {d}\n\n| init | F1 @ 10% | F1 @ 100% | fold mean ± std @ 100% |\n|---|---|---|---|")
        iv = inter[d]
        for init in ROWS:
            cells = []
            for frac in (0.1, 1.0):
                r = iv[(iv["init"] == init) & (iv["label_fraction"] == frac)]
                cells.append("—" if r.empty else
                             f"{100 * r.f1.iloc[0]:.1f} [{100 * r.f1_lo.iloc[0]:.1f} – {100 * r.f1_hi.iloc[0]:.1f}]")
            r = iv[(iv["init"] == init) & (iv["label_fraction"] == 1.0)]
            cells.append("—" if r.empty else f"{100 * r.fold_f1_mean.iloc[0]:.1f} ± {100 * r.fold_f1_std.iloc[0]:.1f}")
            lines.append(f"| {init} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("### Paired ΔF1 (points) [95% paired subject bootstrap]\n")
    lines.append("| level | claim | Δ @ 10% | Δ @ 100% |\n|---|---|---|---|")
    for d in dirs:
        p = preds[d]
        for a, b, claim in CLAIMS:
            cells = []
            for frac in (0.1, 1.0):
                def model(init):  # tags: init-linear-frac-foldK; a row not run here comes from the first run
                    tag = f"{init}-linear-{frac:g}-"
                    src = p if p["model"].str.startswith(tag).any() else preds[dirs[0]]
                    return src[src["model"].str.startswith(tag)]
                ma, mb = model(a), model(b)
                if ma.empty or mb.empty:
                    cells.append("—")
                    continue
                subjects = sorted(set(ma["subject"]) & set(mb["subject"]))
                ca = per_subject_confusions(ma[ma["subject"].isin(subjects)], classes, subjects)
                cb = per_subject_confusions(mb[mb["subject"].isin(subjects)], classes, subjects)
                delta, lo, hi = paired_delta(ca, cb)
                cells.append(f"{100 * delta:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]")
            lines.append(f"| {Path(d).name} | {claim} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(sys.argv[1:]))

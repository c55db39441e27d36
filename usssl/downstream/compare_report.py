"""The encoder × task table of ``usssl compare``: estimates with intervals, ranks, a heat map and the
rank correlation between tasks.

Each cell result (one encoder, task, fold and seed) holds the test truth, prediction and subject of
every scored item. Per (encoder, task) the **estimate** is the macro F1 of the pooled out-of-fold
predictions (each subject predicted once per seed by a head that never saw it), averaged over
seeds, with a 95% bootstrap interval over subjects of that same quantity
(``usssl.downstream.metrics``); the mean ± std over folds stands beside it. The correlation between
two tasks is Spearman's over the encoders, with a percentile interval from resampling each task's
folds with replacement; with few encoders it is very noisy, and the report says so.

    >>> table = estimates(cells, bootstrap=1000)
    >>> print(markdown(table, correlations(cells)))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from usssl.downstream.compare_fit import spearman
from usssl.downstream.metrics import bootstrap_ci, pooled_scores


def estimates(cells: list[dict], bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (encoder, task): ``f1`` (%), ``lo``/``hi`` (95%), ``fold_mean``/``fold_std`` (%),
    ``n_cells``, ``fold_aware``, ``source``, ``seconds`` (per cell, mean) and ``rank`` within the task
    (1 = best estimate; ties share the better rank)."""
    frame = pd.DataFrame(cells)
    rows = []
    for (encoder, task), group in frame.groupby(["encoder", "task"], sort=False):
        y = np.concatenate([np.asarray(v, int) for v in group["y"]])
        yhat = np.concatenate([np.asarray(v, int) for v in group["yhat"]])
        subjects = np.concatenate([np.asarray(v, str) for v in group["subjects"]])
        seeds = np.concatenate([np.full(len(v), s) for v, s in zip(group["y"], group["seed"])])
        n_classes = int(group["n_classes"].iloc[0])
        f1 = pooled_scores(y, yhat, n_classes, groups=seeds)["f1"]
        lo, hi = (bootstrap_ci(y, yhat, subjects, n_classes, n_boot=bootstrap, seed=seed, groups=seeds)["f1"]
                  if bootstrap else (np.nan, np.nan))  # fmt: skip
        by_fold = group.groupby("fold")["f1"].mean()
        rows.append({"encoder": encoder, "task": task, "f1": 100 * f1, "lo": 100 * lo, "hi": 100 * hi,
                     "fold_mean": 100 * by_fold.mean(), "fold_std": 100 * by_fold.std(ddof=1) if len(by_fold) > 1
                     else np.nan, "n_cells": len(group), "fold_aware": bool(group["fold_aware"].all()),
                     "source": group["source"].iloc[0], "seconds": float(group["seconds"].mean())})  # fmt: skip
    table = pd.DataFrame(rows)
    table["rank"] = table.groupby("task")["f1"].rank(ascending=False, method="min").astype(int)
    return table


def correlations(cells: list[dict], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Spearman correlation of every pair of tasks over the encoders: ``rho`` of the fold-mean F1, and
    ``lo``/``hi`` from ``n_boot`` replicates that redraw each task's folds with replacement (every
    encoder of a task gets the same draw). NaN with fewer than 3 encoders."""
    frame = pd.DataFrame(cells)
    per_fold = frame.groupby(["task", "encoder", "fold"])["f1"].mean()  # seeds averaged within a fold
    tasks = list(dict.fromkeys(frame["task"]))
    encoders = list(dict.fromkeys(frame["encoder"]))
    folds = {t: sorted(per_fold.loc[t].index.get_level_values("fold").unique()) for t in tasks}

    def score(task: str, chosen: list[int]) -> np.ndarray:
        return np.array([np.mean([per_fold.get((task, e, f), np.nan) for f in chosen]) for e in encoders])

    rng = np.random.default_rng(seed)
    rows = []
    for i, a in enumerate(tasks):
        for b in tasks[i + 1 :]:
            rho = spearman(score(a, folds[a]), score(b, folds[b]))
            draws = [spearman(score(a, list(rng.choice(folds[a], len(folds[a])))),
                              score(b, list(rng.choice(folds[b], len(folds[b]))))) for _ in range(n_boot)]  # fmt: skip
            draws = np.array([d for d in draws if np.isfinite(d)])
            lo, hi = (np.quantile(draws, [0.025, 0.975]) if len(draws) else (np.nan, np.nan))
            rows.append({"task_a": a, "task_b": b, "rho": rho, "lo": float(lo), "hi": float(hi),
                         "n_encoders": len(encoders)})
    return pd.DataFrame(rows, columns=["task_a", "task_b", "rho", "lo", "hi", "n_encoders"])


def _cell(row) -> str:
    interval = "" if np.isnan(row.lo) else f" [{row.lo:.1f}–{row.hi:.1f}]"
    spread = "" if np.isnan(row.fold_std) else f"; folds {row.fold_mean:.1f} ± {row.fold_std:.1f}"
    return f"{row.f1:.1f}{interval} (#{row.rank}{spread})"


def markdown(table: pd.DataFrame, corr: pd.DataFrame, folds: int, seeds: list[int]) -> str:
    """The report: the table (macro F1 %, 95% interval, rank, fold spread), then the correlations."""
    tasks = list(dict.fromkeys(table["task"]))
    lines = ["# Encoder × task comparison (`usssl compare`)", "",
             f"Frozen encoders; a linear head per task, its learning rate and epochs chosen on validation subjects; "
             f"each test subject scored once per seed. {folds} subject-level folds × {len(seeds)} seed(s) {seeds}. "
             "Cells: macro F1 (%) of the pooled out-of-fold predictions, [95% subject-bootstrap interval], "
             "(#rank within the task; mean ± std over folds).", "",
             "| encoder | source | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]  # fmt: skip
    for encoder, rows in table.groupby("encoder", sort=False):
        by_task = rows.set_index("task")
        flag = "" if rows["fold_aware"].all() else " (not fold-aware: may have seen the task's subjects)"
        cells = [_cell(by_task.loc[t]) if t in by_task.index else "n/a" for t in tasks]
        lines.append(f"| {encoder} | {rows['source'].iloc[0]}{flag} | " + " | ".join(cells) + " |")
    lines += ["", "## Rank correlation between tasks (Spearman, over encoders)", ""]
    if corr.empty:
        lines.append("One task only: no correlation.")
    else:
        n = int(corr["n_encoders"].iloc[0])
        lines += [f"{n} encoders: with so few, a rank correlation is very noisy (with 3, ρ takes only 4 values); "
                  "the interval redraws each task's folds.", "", "| task | task | ρ | 95% interval |", "|---|---|---|---|"]
        for row in corr.itertuples():
            rho = "n/a (fewer than 3 encoders or a constant column)" if np.isnan(row.rho) else f"{row.rho:.2f}"
            interval = "n/a" if np.isnan(row.lo) else f"[{row.lo:.2f}, {row.hi:.2f}]"
            lines.append(f"| {row.task_a} | {row.task_b} | {rho} | {interval} |")
    lines += ["", "Wall time per cell (s, mean): " + ", ".join(
        f"{r.encoder}×{r.task} {r.seconds:.1f}" for r in table.itertuples())]  # fmt: skip
    return "\n".join(lines) + "\n"


def heat_map(table: pd.DataFrame, path: Path) -> Path:
    """A PNG of the estimates (encoders × tasks), each cell annotated with its F1 and rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = table.pivot(index="encoder", columns="task", values="f1")
    grid = grid.loc[list(dict.fromkeys(table["encoder"])), list(dict.fromkeys(table["task"]))]
    ranks = table.pivot(index="encoder", columns="task", values="rank").loc[grid.index, grid.columns]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * grid.shape[1], 1.0 + 0.5 * grid.shape[0]))
    image = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right")
    ax.set_yticks(range(grid.shape[0]), grid.index)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            value = grid.iat[i, j]
            if np.isfinite(value):
                ax.text(j, i, f"{value:.1f}\n#{int(ranks.iat[i, j])}", ha="center", va="center",
                        color="white" if value < 60 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, label="macro F1 (%)")
    ax.set_title("Encoder × task (frozen, linear head)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

"""Paper-style result tables and plots for standard-plane detection.

``results`` is a long-format table, one row per (init, protocol, label_fraction, fold) with
macro precision / recall / F1. The report pivots it into one Markdown table (initialisation ×
protocol rows, one F1 column per label fraction), a paired comparison against random
initialisation (same folds and seeds), and a label-efficiency plot. The papers' numbers come from
private fetal data and are shown as a separate reference block, never as rows of our table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

REFERENCE = """\
Reference (Jiao et al., MICCAI 2020; private fetal data, 14 classes, 3-fold CV, 100% labels,
fine-tuned SE-ResNeXt-50 — other data, not comparable with the numbers above):

| init | P | R | F1 |
|---|---|---|---|
| random | 70.4 | 64.9 | 67.0 |
| video only (order) | 71.9 | 71.7 | 71.5 |
| video + speech (paper) | 72.7 | 73.3 | 72.6 |
"""


def to_markdown(df: pd.DataFrame, index: bool = True) -> str:
    """A DataFrame as a GitHub Markdown table (index levels become leading columns)."""
    frame = df.reset_index() if index else df
    header = [str(c) for c in frame.columns]
    rows = [[f"{v:g}" if isinstance(v, float) else str(v) for v in r] for r in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def f1_table(results: pd.DataFrame) -> pd.DataFrame:
    """Rows (init, protocol), columns ``F1 @ <fraction>`` as "mean ± std" in %: over folds, each fold's F1
    first averaged over its seeds."""
    keys = ["init", "protocol", "label_fraction"]
    per_fold = results.groupby([*keys, "fold"])["f1"].mean().reset_index()
    grouped = per_fold.groupby(keys)["f1"].agg(["mean", "std", "count"])
    table: dict[tuple[str, str], dict[str, str]] = {}
    for (init, protocol, frac), row in grouped.iterrows():
        cell = _pct(row["mean"]) if row["count"] < 2 else f"{_pct(row['mean'])} ± {_pct(row['std'])}"
        table.setdefault((init, protocol), {})[f"F1 @ {frac:g}"] = cell
    return _frame(table)


def _frame(table: dict[tuple[str, str], dict[str, str]]) -> pd.DataFrame:
    out = pd.DataFrame.from_dict(table, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["init", "protocol"])
    return out[sorted(out.columns, key=lambda c: float(c.split("@")[1]))]


def estimate_table(intervals: pd.DataFrame) -> pd.DataFrame:
    """Rows (init, protocol), columns ``F1 @ <fraction>`` as "estimate [lo – hi]" in %: macro F1 of
    the pooled out-of-fold predictions (seed-averaged) with its 95% subject-bootstrap interval."""
    table: dict[tuple[str, str], dict[str, str]] = {}
    for _, r in intervals.iterrows():
        ci = f" [{_pct(r['f1_lo'])} – {_pct(r['f1_hi'])}]" if "f1_lo" in r and pd.notna(r.get("f1_lo")) else ""
        table.setdefault((r["init"], r["protocol"]), {})[f"F1 @ {r['label_fraction']:g}"] = _pct(r["f1"]) + ci
    return _frame(table)


def paired_vs_random(results: pd.DataFrame) -> pd.DataFrame:
    """ΔF1 (init − random) on identical protocol, fraction, fold and seed, in points: the mean, the wins
    out of seeds × folds, and an approximate two-sided p-value of a paired t-test over folds on the
    seed-averaged differences (seeds within a fold share its subjects, so they are not independent
    samples; NaN with fewer than 2 folds)."""
    keys = ["protocol", "label_fraction", "fold", "seed"]
    results = results.assign(seed=results["seed"]) if "seed" in results else results.assign(seed=0)
    base = results[results["init"] == "random"].set_index(keys)["f1"]
    rows = []
    for init, part in results[results["init"] != "random"].groupby("init"):
        joined = part.set_index(keys)["f1"].to_frame("f1").join(base.rename("random"), how="inner")
        for (protocol, frac), g in joined.groupby(level=["protocol", "label_fraction"]):
            diff = 100 * (g["f1"] - g["random"])
            by_fold = diff.groupby(level="fold").mean()
            rows.append({"init": init, "protocol": protocol, "label_fraction": frac,
                         "delta_f1": float(diff.mean()), "wins": f"{int((diff > 0).sum())}/{len(diff)}",
                         "p_paired_t": _paired_p(by_fold.to_numpy())})
    return pd.DataFrame(rows)


def _paired_p(deltas: np.ndarray) -> float:
    if len(deltas) < 2:
        return float("nan")
    if np.allclose(deltas, deltas[0]):
        return 0.0 if deltas[0] != 0 else 1.0
    from scipy.stats import ttest_1samp

    return float(ttest_1samp(deltas, 0.0).pvalue)


def per_class_table(per_class: pd.DataFrame) -> pd.DataFrame:
    """Per-class F1 (%) at the largest label fraction, mean over folds and seeds: rows class, columns
    init · protocol."""
    top = per_class[per_class["label_fraction"] == per_class["label_fraction"].max()]
    seen = top.groupby("class", sort=False)["support"].sum()
    top = top[top["class"].isin(seen[seen > 0].index)]  # classes absent from every test set: no row
    mean = top.groupby(["class", "init", "protocol"], sort=False)["f1"].mean().reset_index()
    mean["model"] = mean["init"] + " · " + mean["protocol"]
    table = mean.pivot(index="class", columns="model", values="f1")
    order = list(dict.fromkeys(top["class"]))
    return (100 * table.loc[order]).round(1)


def protocol_block(protocol: dict) -> list[str]:
    """The report's "Protocol" block: what a reviewer checks without reading the YAML."""
    folds = protocol["folds"]
    cv = "the ingest's subject-level split" if protocol["cv"] == "split" else f"{folds} subject-level folds"
    n = protocol["n_subjects"]
    lines = ["### Protocol", "",
             f"- Evaluation: {cv}; subjects per fold train / validation / test: "
             + ", ".join(f"{a}/{b}/{c}" for a, b, c in zip(n["train"], n["val"], n["test"])),
             f"- Seeds: {', '.join(map(str, protocol['seeds']))} (each seed reruns pretraining and transfer; folds "
             "and validation subjects are fixed)"]
    for p in protocol["pretraining"]:
        seen = ("**the unlabelled video of test subjects (transductive)**" if p["saw_test_subjects"] else
                "training and validation subjects only (inductive)")
        how = "one pretraining per fold and seed" if p["per_fold"] else f"{p['runs']} shared pretraining(s)"
        lines.append(f"- Pretraining `{p['name']}`: {how}; it saw {seen}")
    if protocol.get("val_fraction") is not None:
        lines.append(f"- Selection on validation subjects only (val_fraction {protocol['val_fraction']:g}): "
                     f"epochs by {'early stopping on validation macro F1' if protocol['early_stopping'] else 'the fixed count'}"
                     f", learning rate from {protocol['lr_grid']}; test subjects are scored once per model")
    lines += ["- Estimate: macro F1 of the pooled out-of-fold predictions of each seed, averaged over seeds; "
              "95% interval: bootstrap over subjects of that same quantity"]
    if folds == 1 or len(protocol["seeds"]) == 1:
        lines.append("- **A quick look, not numbers to publish**: one split or one seed. The full protocol (3 "
                     "folds × 3 seeds, strictly inductive) is `usssl run pipelines/protocol.yaml`")
    lines.append("")
    return lines


def markdown_report(results: pd.DataFrame, title: str = "Standard-plane detection",
                    intervals: pd.DataFrame | None = None, per_class: pd.DataFrame | None = None,
                    reference: bool = True, protocol: dict | None = None) -> str:
    """The whole report as Markdown: protocol, estimates with intervals, folds, P/R detail, per class,
    paired comparison, reference."""
    transductive = bool((protocol or {}).get("transductive")) or bool(
        "pretrain_saw_test" in results and results["pretrain_saw_test"].any())
    mark = " — TRANSDUCTIVE (pretraining saw test subjects' video)" if transductive else ""
    lines = [f"## {title}{mark}", ""]
    if protocol is not None:
        lines += protocol_block(protocol)
    folds = results["fold"].nunique()
    if intervals is not None and len(intervals) and "f1" in intervals:
        lines += [f"### Macro F1 (%) on held-out subjects, pooled out-of-fold{mark} [95% bootstrap interval]", "",
                  to_markdown(estimate_table(intervals)), ""]
    how = f"mean ± std over {folds} subject-level folds" if folds > 1 else "one subject-level split"
    lines += [f"### Macro F1 (%) per fold ({how}, seed-averaged){mark}", "", to_markdown(f1_table(results)), ""]
    detail = results.groupby(["init", "protocol", "label_fraction"])[["precision", "recall", "f1"]].mean()
    lines += ["### Macro precision / recall / F1 (%), mean over folds and seeds", "",
              to_markdown((100 * detail).round(1)), ""]
    if per_class is not None and len(per_class):
        frac = per_class["label_fraction"].max()
        lines += [f"### Per-class F1 (%) at {100 * frac:g}% labels", "", to_markdown(per_class_table(per_class)), ""]
    paired = paired_vs_random(results)
    if len(paired):
        lines += [f"### Paired comparison against random initialisation (ΔF1, points){mark}", "",
                  to_markdown(paired.round(3), index=False), "",
                  "Wins count (fold, seed) pairs; the p-value is a paired t-test over folds of the seed-averaged "
                  "ΔF1 (seeds of one fold are not independent), approximate with few folds.", ""]
    if transductive:
        lines += ["Note: some pretrained encoders saw the (unlabelled) video of test subjects during "
                  "pretraining (`pretrain.shared: true` or an ingest split that differs from the folds): the "
                  "estimates are transductive. Leave `pretrain.shared` false for one pretraining per fold.", ""]
    if reference:
        lines += [REFERENCE]
    return "\n".join(lines)


def label_efficiency_plot(results: pd.DataFrame, path: Path, transductive: bool = False) -> Path:
    """F1 against label fraction, one line per (init, protocol), mean ± std over folds (seed-averaged);
    saved to ``path`` (PNG); ``transductive`` says so in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    inits = sorted(results["init"].unique(), key=lambda i: (i != "random", i))
    colours = {init: f"C{i}" for i, init in enumerate(inits)}
    styles = {"finetune": ("-", "o"), "linear": ("--", "s"), "knn": (":", "^")}
    for (init, protocol), g in results.groupby(["init", "protocol"]):
        m = g.groupby(["label_fraction", "fold"])["f1"].mean().groupby("label_fraction").agg(["mean", "std"]).fillna(0.0)
        line, marker = styles.get(protocol, ("-.", "x"))
        ax.errorbar(100 * m.index.values, 100 * m["mean"], yerr=100 * m["std"], marker=marker,
                    capsize=3, linestyle=line, color=colours[init], label=f"{init} · {protocol}")
    ax.set_xscale("log")
    fractions = sorted(results["label_fraction"].unique())
    ax.set_xticks([100 * f for f in fractions], [f"{100 * f:g}" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("labelled training frames (%)")
    ax.set_ylabel("macro F1 (%)")
    ax.set_title("Label efficiency (transductive)" if transductive else "Label efficiency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def confusion_plot(cm: np.ndarray, classes: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.55 * len(classes), 0.8 + 0.5 * len(classes)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path

"""The evaluate stage: score every fitted model on its fold's held-out subjects and write the report.

Outputs in ``<output_dir>/evaluate/``:

- ``results.csv``: long format, one row per (init, protocol, label_fraction, fold, seed) with macro
  precision / recall / F1 on the fold's test subjects, accuracy, the validation F1 the model was
  selected with, frame counts and ``pretrain_saw_test``;
- ``per_class.csv``: the same keys plus class, precision, recall, F1, support;
- ``intervals.csv``: per configuration, the estimate — macro P/R/F1 of the pooled out-of-fold
  predictions of each seed (every subject predicted once by a model that never saw it), averaged
  over seeds — with its 95% bootstrap interval over subjects of that same quantity, mean ± std
  over folds, the mean validation F1 and, for recording-level tasks, AUROC and per-class sensitivity;
- ``predictions.csv``: model, fold, subject (a keyed pseudonym), shard, frame, true, predicted, p
  (with ``level: recording`` one row per recording, frame -1: probabilities averaged over frames);
- ``report.md``, ``label_efficiency.png`` and ``confusion_<init>-<protocol>-<fraction>.png``
  (counts summed over folds).

In MLflow (docs/mlflow.md) the evaluate run holds these files under ``report/``; below it, one run per
configuration (params init, protocol, label_fraction; metrics: the estimate and its interval bounds, in
%), and below each, the run of every fitted model of it (params fold, seed; its test scores in % beside
the training and validation curves the finetune stage logged into it). The summary's ``headline``
(the estimate at the largest label fraction per init and protocol) goes to the pipeline run.

    >>> summary = run(cfg, cfg.stage("evaluate"), tracker, resume=False)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from usssl.config import EvaluateConfig, PipelineConfig
from usssl.downstream.metrics import (auroc_ovr, bootstrap_ci, classification_scores, confusion_matrix,
                                      per_class_sensitivity, pooled_scores)
from usssl.data.cache import Cache
from usssl.errors import ConfigError

log = logging.getLogger(__name__)

KEYS = ["init", "protocol", "label_fraction"]


def _config_tag(key: tuple) -> str:
    init, protocol, frac = key
    return f"{init}-{protocol}-{frac:g}"


def by_recording(probs: np.ndarray, labels: np.ndarray, shards: list[str], subjects: np.ndarray):
    """Pool frame predictions per recording: mean probabilities, most frequent true label.

    Returns:
        (probs (R, C), labels (R,), shard ids (R,), subjects (R,)), recordings in first-seen order.
    """
    frame = pd.DataFrame({"shard": shards, "subject": subjects, "label": labels})
    order = list(dict.fromkeys(shards))
    groups = frame.groupby("shard", sort=False)
    pooled = np.stack([probs[idx].mean(0) for idx in (groups.indices[s] for s in order)])
    truth = groups["label"].agg(lambda v: v.value_counts().idxmax()).loc[order].to_numpy()
    return pooled, truth, np.array(order), groups["subject"].first().loc[order].to_numpy()


def scoring_level(level: str, cache) -> str:
    """``level`` with ``auto`` resolved: recording when the cache's labels came one per recording (a
    recording,label table), else frame."""
    if level != "auto":
        return level
    return "recording" if cache.settings.get("label_level") == "recording" else "frame"


def run(cfg: PipelineConfig, ecfg: EvaluateConfig, tracker, resume: bool) -> dict:
    """Score the models of ``finetune/manifest.json`` once on their test subjects; write and log the
    report (module docstring)."""
    from usssl.downstream.checkpoint import load_classifier
    from usssl.downstream.plane_detection import predict
    from usssl.downstream.report import confusion_plot, label_efficiency_plot, markdown_report
    from usssl.stages.common import fold_plan, protocol_description

    cache = Cache(cfg.cache_dir)
    classes = cache.classes
    ecfg = ecfg.model_copy(update={"level": scoring_level(ecfg.level, cache)})
    manifest_path = Path(cfg.output_dir) / "finetune" / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError("evaluate: no fine-tuned models found; add a finetune stage before evaluate")
    manifest = json.loads(manifest_path.read_text())
    folds = {f.index: f for f in fold_plan(cfg, cfg.stage("finetune"), cache)}
    tests: dict[tuple[int, int], object] = {}  # (fold, clip_frames) → its test frames, read once
    out = Path(cfg.output_dir) / "evaluate"
    out.mkdir(parents=True, exist_ok=True)
    rows, per_class, predictions = [], [], []
    pooled: dict[tuple, list[pd.DataFrame]] = {}
    probs_of: dict[tuple, list[np.ndarray]] = {}
    for entry in manifest:
        where = (entry["fold"], entry.get("clip_frames", 1))  # the clip the model's encoder reads
        if where not in tests:
            tests[where] = folds[where[0]].frames(cache, "test", ecfg.frame_stride, clip_frames=where[1])
        test = tests[where]
        model = load_classifier(entry["path"])
        probs = predict(model, test)
        labels, subjects = test.labels, test.subject_ids
        shards, frames = [s for s, _ in test.items], [f for _, f in test.items]
        if ecfg.level == "recording":
            probs, labels, shards, subjects = by_recording(probs, labels, shards, subjects)
            frames = [-1] * len(shards)
        pred = probs.argmax(1)
        scores = classification_scores(labels, pred, len(classes))
        key, seed = tuple(entry[k] for k in KEYS), entry.get("seed", cfg.seed)
        rows.append({**{k: entry[k] for k in KEYS}, "fold": entry["fold"], "seed": seed,
                     **{m: scores[m] for m in ("precision", "recall", "f1", "accuracy")},
                     "val_f1": entry.get("val_f1", float("nan")), "n_train": entry["n_train"],
                     "n_test": len(labels), "level": ecfg.level, "n_test_subjects": len(set(subjects)),
                     "pretrain_saw_test": entry.get("pretrain_saw_test", False)})
        pc = scores["per_class"]
        per_class += [{**{k: entry[k] for k in KEYS}, "fold": entry["fold"], "seed": seed, "class": name,
                       "precision": pc["precision"][c], "recall": pc["recall"][c], "f1": pc["f1"][c],
                       "support": int(pc["support"][c])} for c, name in enumerate(classes)]
        frame = pd.DataFrame({"model": entry["tag"], "fold": entry["fold"], "seed": seed, "subject": subjects,
                              "shard": shards, "frame": frames,
                              "true": [classes[i] for i in labels], "pred": [classes[i] for i in pred],
                              "p_pred": probs[np.arange(len(pred)), pred].round(4),
                              "y": labels, "yhat": pred})
        predictions.append(frame)
        pooled.setdefault(key, []).append(frame)
        probs_of.setdefault(key, []).append(probs)
    results = pd.DataFrame(rows)
    intervals = pd.DataFrame([_estimate(key, pd.concat(frames), np.concatenate(probs_of[key]), results, ecfg,
                                        len(classes), cfg.seed) for key, frames in pooled.items()])
    estimate = intervals.set_index(KEYS)["f1"]
    plotted = {"all": list(pooled), "best": [estimate.idxmax()], "none": []}[ecfg.confusion_plots]
    for key in plotted:  # counts summed over folds and seeds
        both = pd.concat(pooled[key])
        title = (f"{_config_tag(key)} (best)" if ecfg.confusion_plots == "best" else
                 f"{_config_tag(key)} — macro F1 {100 * estimate[key]:.1f}% (pooled out-of-fold)")
        confusion_plot(confusion_matrix(both["y"], both["yhat"], len(classes)), classes,
                       out / f"confusion_{_config_tag(key)}.png", title)
    per_class = pd.DataFrame(per_class)
    results.to_csv(out / "results.csv", index=False)
    per_class.to_csv(out / "per_class.csv", index=False)
    intervals.to_csv(out / "intervals.csv", index=False)
    pd.concat(predictions).drop(columns=["y", "yhat"]).to_csv(out / "predictions.csv", index=False)
    unit = "recordings" if ecfg.level == "recording" else "frames"
    protocol = protocol_description(cfg, cache)
    protocol["transductive"] = protocol["transductive"] or bool(results["pretrain_saw_test"].any())
    report = markdown_report(results, f"{ecfg.title} ({unit})", intervals=intervals, per_class=per_class,
                             reference=ecfg.paper_reference, protocol=protocol)
    (out / "report.md").write_text(report)
    label_efficiency_plot(results, out / "label_efficiency.png", transductive=protocol["transductive"])
    for name in ("results.csv", "per_class.csv", "intervals.csv", "predictions.csv", "report.md",
                 "label_efficiency.png"):
        tracker.log_artifact(out / name, "report")
    for png in sorted(out.glob("confusion_*.png")):
        tracker.log_artifact(png, "report/confusion")
    log_layout(tracker, manifest, results, intervals)
    n_test = int(results.groupby(["seed", "fold"])["n_test"].first().groupby("fold").first().sum())
    return {"report": report, "results": str(out / "results.csv"), "n_test": n_test, "folds": len(folds),
            "seeds": int(results["seed"].nunique()), "headline": headline(intervals)}


SCORES = {"f1": "macro_f1", "precision": "macro_precision", "recall": "macro_recall", "accuracy": "accuracy"}
"""Column of results.csv / intervals.csv -> MLflow metric name (values logged in %)."""


def _percent(row: dict, names: dict[str, str]) -> dict[str, float]:
    return {name: 100 * float(row[col]) for col, name in names.items() if col in row and pd.notna(row[col])}


def headline(intervals: pd.DataFrame) -> dict[str, float]:
    """``macro_f1/<init>-<protocol>``: the estimate (in %) at the largest label fraction of each."""
    top = intervals[intervals["label_fraction"] == intervals["label_fraction"].max()]
    return {f"macro_f1/{r.init}-{r.protocol}": round(100 * float(r.f1), 2) for r in top.itertuples()}


def log_layout(tracker, manifest: list[dict], results: pd.DataFrame, intervals: pd.DataFrame) -> None:
    """Under the active (evaluate) run: one run per configuration, its fitted models' runs below it
    (the finetune stage's run of each model is moved there when this store has it, else one is made)."""
    bounds = {f"{col}_{end}": f"{name}_{end}" for col, name in SCORES.items() for end in ("lo", "hi")}
    extra = {"fold_f1_mean": "fold_macro_f1_mean", "fold_f1_std": "fold_macro_f1_std", "val_f1": "val_macro_f1",
             "auroc": "auroc"}  # fmt: skip
    for row in intervals.to_dict("records"):
        key = tuple(row[k] for k in KEYS)
        params = {**dict(zip(KEYS, key)), **{k: row[k] for k in ("n_folds", "n_seeds", "n_subjects")}}
        with tracker.child(_config_tag(key), params=params, tags={"usssl.kind": "configuration"}):
            tracker.log_metrics(_percent(row, {**SCORES, **bounds, **extra}))
            for entry, scores in zip(manifest, results.to_dict("records")):  # results.csv: one row per entry
                if tuple(entry[k] for k in KEYS) != key:
                    continue
                metrics = _percent(scores, {**SCORES, "val_f1": "val_macro_f1"}) | {"n_test": float(scores["n_test"])}
                if tracker.run_exists(entry.get("mlflow_run_id")):
                    tracker.adopt(entry["mlflow_run_id"])
                    tracker.log_metrics(metrics, run_id=entry["mlflow_run_id"])
                    continue
                with tracker.child(entry["tag"], params={**dict(zip(KEYS, key)), "fold": entry["fold"],
                                                         "seed": scores["seed"], "n_train": entry["n_train"]},
                                   tags={"usssl.model": entry["tag"]}):  # fmt: skip
                    tracker.log_metrics(metrics)


def _estimate(key, both: pd.DataFrame, probs: np.ndarray, results: pd.DataFrame, ecfg: EvaluateConfig,
              n_classes: int, seed: int) -> dict:
    """One configuration's cross-validated estimate: macro P/R/F1 of the pooled out-of-fold predictions
    of each seed, averaged over seeds; its 95% interval (a bootstrap over subjects of that same
    quantity); mean ± std over folds (seed-averaged) beside it; AUROC for recording-level tasks."""
    y, yhat, groups = both["y"].to_numpy(), both["yhat"].to_numpy(), both["seed"].to_numpy()
    row = dict(zip(KEYS, key)) | pooled_scores(y, yhat, n_classes, groups)
    if ecfg.bootstrap:
        ci = bootstrap_ci(y, yhat, both["subject"].to_numpy(), n_classes, n_boot=ecfg.bootstrap, seed=seed,
                          groups=groups)
        row.update({f"{m}_{end}": ci[m][i] for m in ci for i, end in enumerate(("lo", "hi"))})
    mine = results[(results[KEYS] == pd.Series(dict(zip(KEYS, key)))).all(axis=1)]
    by_fold = mine.groupby("fold")[["f1", "val_f1"]].mean()  # seed-averaged per fold
    row |= {"fold_f1_mean": float(by_fold["f1"].mean()),
            "fold_f1_std": float(by_fold["f1"].std(ddof=1)) if len(by_fold) > 1 else float("nan"),
            "val_f1": float(by_fold["val_f1"].mean()), "n_folds": len(by_fold),
            "n_seeds": int(mine["seed"].nunique()), "n_subjects": int(both["subject"].nunique())}
    if ecfg.level == "recording" and len(np.unique(y)) > 1:
        row["auroc"] = float(np.mean([auroc_ovr(probs[groups == g], y[groups == g], n_classes)
                                      for g in np.unique(groups)]))
        sensitivity = pooled_recall(y, yhat, groups, n_classes)
        row |= {f"sensitivity_{c}": v for c, v in enumerate(sensitivity)}
    return row


def pooled_recall(y: np.ndarray, yhat: np.ndarray, groups: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class sensitivity of each group's pooled predictions, averaged over groups: (C,)."""
    return np.nanmean([per_class_sensitivity(y[groups == g], yhat[groups == g], n_classes)
                       for g in np.unique(groups)], axis=0)

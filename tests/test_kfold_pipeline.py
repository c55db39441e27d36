"""Subject-level k-fold through pretrain + finetune + evaluate: strictly inductive by default (one
pretraining per fold), validation subjects for every choice, test read only by evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest


def _folds(cfg) -> list[list[str]]:
    return json.loads((Path(cfg.cache_dir) / "folds-k2-seed0.json").read_text())["folds"]


def test_folds_are_subject_disjoint_and_cover_every_subject(kfold_run):
    from usssl.data.cache import Cache

    cfg, _ = kfold_run
    cache = Cache(cfg.cache_dir)
    folds = _folds(cfg)
    assert sorted(s for f in folds for s in f) == sorted(set(cache.index["subject"]))
    assert not set(folds[0]) & set(folds[1])
    pred = pd.read_csv(Path(cfg.output_dir) / "evaluate" / "predictions.csv")
    for fold, part in pred.groupby("fold"):  # every fold is scored on its own subjects only
        assert set(part["subject"]) == set(folds[fold])


def test_each_fold_pretrains_on_its_own_training_subjects_only(kfold_run):
    cfg, result = kfold_run
    folds = _folds(cfg)
    assert len(result["pretrain"]["encoders"]) == 2
    for k in (0, 1):
        used = json.loads((Path(cfg.output_dir) / "pretrain" / f"fold{k}-seed0" / "pretrain_data.json").read_text())
        assert used["fold"] == k and set(used["subjects"]) == set(folds[1 - k])  # the other fold: train + val
    results = pd.read_csv(Path(cfg.output_dir) / "evaluate" / "results.csv")
    assert not results["pretrain_saw_test"].any()


def test_every_model_was_selected_on_validation_subjects(kfold_run):
    cfg, _ = kfold_run
    manifest = json.loads((Path(cfg.output_dir) / "finetune" / "manifest.json").read_text())
    assert {e["n_val_subjects"] for e in manifest} == {1}  # val_fraction 0.5 of 2 training subjects
    linear = [e for e in manifest if e["protocol"] == "linear"]
    assert all(0 <= e["val_f1"] <= 1 and e["selected_epoch"] % 10 == 0 for e in linear)


def test_kfold_report_has_every_init_fold_interval_and_the_protocol(kfold_run):
    cfg, result = kfold_run
    out = Path(cfg.output_dir) / "evaluate"
    results = pd.read_csv(out / "results.csv")
    assert set(results["init"]) == {"random", "supervised", "video_speech"}
    assert set(results["protocol"]) == {"knn", "linear"} and set(results["fold"]) == {0, 1}
    assert len(results) == 3 * 2 * 2
    intervals = pd.read_csv(out / "intervals.csv")
    assert len(intervals) == 6 and (intervals["f1_lo"] <= intervals["f1"]).all()
    assert (intervals["f1"] <= intervals["f1_hi"]).all() and (intervals["n_folds"] == 2).all()
    per_class = pd.read_csv(out / "per_class.csv")
    assert len(per_class) == len(results) * per_class["class"].nunique()
    report = result["report"]
    assert "### Protocol" in report and "one pretraining per fold and seed" in report
    assert "mean ± std over 2 subject-level folds" in report and "pooled out-of-fold" in report
    assert "TRANSDUCTIVE" not in report and "Per-class F1" in report
    assert len(list(out.glob("confusion_*.png"))) == 6


def test_a_leaking_exclude_fold_is_refused_and_shared_pretraining_is_labelled():
    from usssl.config import PipelineConfig
    from usssl.downstream.report import markdown_report

    raw = {"stages": [{"pretrain": {"exclude_fold": 0}}, {"finetune": {"cv": "kfold", "folds": 2}}]}
    with pytest.raises(ValueError, match="a leak"):
        PipelineConfig.model_validate(raw)
    raw["stages"][0]["pretrain"]["shared"] = True
    assert PipelineConfig.model_validate(raw).stage("pretrain").shared
    results = pd.DataFrame({"init": ["random", "x"], "protocol": "linear", "label_fraction": 1.0, "fold": 0,
                            "seed": 0, "precision": 0.5, "recall": 0.5, "f1": [0.4, 0.6],
                            "pretrain_saw_test": [False, True]})
    report = markdown_report(results, "T", reference=False)
    assert "## T — TRANSDUCTIVE" in report and "Paired comparison against random initialisation (ΔF1, points) — TRANSDUCTIVE" in report

"""Subject-level k-fold through finetune + evaluate, with a fold-excluding pretraining."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY


@pytest.fixture(scope="module")
def kfold_run(tiny_run, tmp_path_factory):
    from usssl.config import PipelineConfig
    from usssl.pipeline import run_pipeline

    cfg0, _ = tiny_run
    stages = copy.deepcopy(TINY["stages"])
    pretrain = {**stages[1]["pretrain"], "max_epochs": 1, "exclude_fold": 0}
    finetune = {**stages[2]["finetune"], "cv": "kfold", "folds": 2, "inits": ["random", "supervised", "pretrain"],
                "protocols": ["knn", "linear"], "label_fractions": [1.0], "knn_k": 3}
    raw = {**copy.deepcopy(TINY), "output_dir": str(tmp_path_factory.mktemp("kfold") / "run"),
           "data": {"cache_dir": str(cfg0.cache_dir)},
           "stages": [{"pretrain": pretrain}, {"finetune": finetune}, {"evaluate": {"bootstrap": 50}}]}
    cfg = PipelineConfig.model_validate(raw)
    return cfg, run_pipeline(cfg)


def test_folds_are_subject_disjoint_and_cover_every_subject(kfold_run):
    from usssl.data.cache import Cache

    cfg, _ = kfold_run
    cache = Cache(cfg.cache_dir)
    folds = json.loads((Path(cfg.cache_dir) / "folds-k2-seed0.json").read_text())["folds"]
    assert sorted(s for f in folds for s in f) == sorted(set(cache.index["subject"]))
    assert not set(folds[0]) & set(folds[1])
    pred = pd.read_csv(Path(cfg.output_dir) / "evaluate" / "predictions.csv")
    for fold, part in pred.groupby("fold"):  # every fold is scored on its own subjects only
        assert set(part["subject"]) == set(folds[fold])


def test_fold_excluding_pretraining_never_sees_that_fold(kfold_run):
    cfg, _ = kfold_run
    used = json.loads((Path(cfg.output_dir) / "pretrain" / "pretrain_data.json").read_text())
    folds = json.loads((Path(cfg.cache_dir) / "folds-k2-seed0.json").read_text())["folds"]
    assert used["exclude_fold"] == 0 and set(used["subjects"]) == set(folds[1])
    results = pd.read_csv(Path(cfg.output_dir) / "evaluate" / "results.csv")
    saw = results[results["init"] == "video_speech"].set_index("fold")["pretrain_saw_test"]
    assert not saw.loc[0].any() and saw.loc[1].all()  # fold 1's test subjects were pretrained on


def test_kfold_report_has_every_init_fold_and_interval(kfold_run):
    cfg, result = kfold_run
    out = Path(cfg.output_dir) / "evaluate"
    results = pd.read_csv(out / "results.csv")
    assert set(results["init"]) == {"random", "supervised", "video_speech"}
    assert set(results["protocol"]) == {"knn", "linear"} and set(results["fold"]) == {0, 1}
    assert len(results) == 3 * 2 * 2
    intervals = pd.read_csv(out / "intervals.csv")
    assert len(intervals) == 6 and (intervals["f1_lo"] <= intervals["f1_hi"]).all()
    per_class = pd.read_csv(out / "per_class.csv")
    assert len(per_class) == len(results) * per_class["class"].nunique()
    report = result["report"]
    assert "mean ± std over 2 subject-level folds" in report and "95% bootstrap intervals" in report
    assert "Per-class F1" in report and "exclude_fold" in report  # the transductive note
    assert len(list(out.glob("confusion_*.png"))) == 6

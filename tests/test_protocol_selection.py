"""The evaluation protocol's parts: validation subjects, selection that never reads test subjects,
the pooled out-of-fold estimate and its interval, seeds, the paired comparison."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY


def test_validation_subjects_are_a_stratified_disjoint_share():
    from usssl.stages.common import validation_subjects

    class FakeCache:
        index = pd.DataFrame({"subject": list("abcdefgh")})

    import usssl.stages.common as common

    strata = {s: ("x" if s < "e" else "y") for s in "abcdefgh"}
    original, original_keys = common.cache_strata, common.cache_order_keys
    common.cache_strata = lambda cache: strata
    common.cache_order_keys = lambda cache: {}
    try:
        train, val = validation_subjects(FakeCache(), list("abcdefgh"), 0.25, seed=3)
        assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == list("abcdefgh")
        assert {strata[s] for s in val} == {"x", "y"}  # one of each stratum
        assert validation_subjects(FakeCache(), list("abcdefgh"), 0.25, seed=3) == (train, val)  # seeded
        assert validation_subjects(FakeCache(), ["a", "b"], 0.9, seed=0)[1] in (["a"], ["b"])  # at most n - 1
        assert validation_subjects(FakeCache(), ["a", "b"], 0.0, seed=0) == (["a", "b"], [])
    finally:
        common.cache_strata, common.cache_order_keys = original, original_keys


def test_pooled_estimate_and_its_interval_measure_the_same_quantity():
    from usssl.downstream.metrics import bootstrap_ci, classification_scores, pooled_scores

    # seed 0: 4 frames of 2 subjects, 3 right; seed 1: the same frames, all right
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    yhat = np.array([0, 1, 0, 0, 0, 1, 0, 1])
    subjects = np.array(["a", "a", "b", "b"] * 2)
    seeds = np.array([0] * 4 + [1] * 4)
    f1_seed0 = classification_scores(y[:4], yhat[:4], 2)["f1"]
    assert f1_seed0 == pytest.approx((0.8 + 2 / 3) / 2)  # class 0: P 2/3, R 1 → 0.8; class 1: P 1, R 1/2 → 2/3
    est = pooled_scores(y, yhat, 2, groups=seeds)
    assert est["f1"] == pytest.approx(((0.8 + 2 / 3) / 2 + 1.0) / 2)  # the mean over seeds of pooled F1
    ci = bootstrap_ci(y, yhat, subjects, 2, n_boot=400, seed=0, groups=seeds)
    assert ci["f1"][0] <= est["f1"] <= ci["f1"][1] <= 1.0
    # resampling only subject a (perfect in both seeds) gives 1.0: the interval reaches it
    assert ci["f1"][1] == pytest.approx(1.0)
    single = bootstrap_ci(y[:4], yhat[:4], subjects[:4], 2, n_boot=400, seed=0)
    assert single == bootstrap_ci(y[:4], yhat[:4], subjects[:4], 2, n_boot=400, seed=0, groups=np.zeros(4))


def test_paired_comparison_counts_wins_over_folds_and_seeds_and_tests_over_folds():
    from usssl.downstream.report import paired_vs_random

    rows = []
    for fold, (r, x) in enumerate([(0.5, 0.6), (0.5, 0.7), (0.6, 0.6)]):
        for seed, noise in ((0, 0.0), (1, 0.02)):
            rows += [{"init": "random", "protocol": "linear", "label_fraction": 1.0, "fold": fold, "seed": seed,
                      "f1": r}, {"init": "ssl", "protocol": "linear", "label_fraction": 1.0, "fold": fold,
                                 "seed": seed, "f1": x + noise}]
    paired = paired_vs_random(pd.DataFrame(rows)).iloc[0]
    assert paired["wins"] == "5/6"  # fold 2 seed 0 is a tie
    assert paired["delta_f1"] == pytest.approx(100 * np.mean([0.1, 0.12, 0.2, 0.22, 0.0, 0.02]))
    from scipy.stats import ttest_1samp

    assert paired["p_paired_t"] == pytest.approx(ttest_1samp([11.0, 21.0, 1.0], 0.0).pvalue)  # seed-averaged Δ


@pytest.fixture(scope="module")
def finetune_cfg(tiny_run, tmp_path_factory):
    from usssl.config import PipelineConfig

    cfg0, _ = tiny_run
    finetune = {**copy.deepcopy(TINY["stages"][2]["finetune"]), "inits": ["random"], "protocols": ["linear"],
                "label_fractions": [1.0], "val_fraction": 0.5}
    raw = {**copy.deepcopy(TINY), "output_dir": str(tmp_path_factory.mktemp("sel") / "run"), "seeds": [0, 1],
           "data": {"cache_dir": str(cfg0.cache_dir)}, "tracking": {"enabled": False},
           "stages": [{"finetune": finetune}]}
    return PipelineConfig.model_validate(raw)


def test_selection_never_reads_test_subjects(finetune_cfg, monkeypatch):
    import usssl.stages.common as common
    from usssl.stages import finetune

    original = common.Fold.frames

    def guarded(self, cache, part, *args, **kwargs):
        if part == "test":
            raise AssertionError("the finetune stage read test subjects")
        return original(self, cache, part, *args, **kwargs)

    monkeypatch.setattr(common.Fold, "frames", guarded)
    summary = finetune.run(finetune_cfg, finetune_cfg.stage("finetune"), _NoTracker(), False)
    assert summary == {"models": 2, "folds": 1, "seeds": 2}


def _NoTracker():
    """A Tracker with tracking off: every call is a no-op."""
    from usssl.config import PipelineConfig
    from usssl.engine.tracking import Tracker

    return Tracker(PipelineConfig.model_validate({"tracking": {"enabled": False}}))


def test_the_same_seeds_give_identical_models_and_scores(finetune_cfg, tmp_path):
    import torch

    from usssl.stages import finetune

    out = Path(finetune_cfg.output_dir) / "finetune"
    finetune.run(finetune_cfg, finetune_cfg.stage("finetune"), _NoTracker(), False)
    first = json.loads((out / "manifest.json").read_text())
    weights = {e["tag"]: torch.load(e["path"], weights_only=False)["model"] for e in first}
    finetune.run(finetune_cfg, finetune_cfg.stage("finetune"), _NoTracker(), False)
    second = json.loads((out / "manifest.json").read_text())
    assert [e["tag"] for e in first] == ["random-linear-1-seed0", "random-linear-1-seed1"]
    assert [e["val_f1"] for e in first] == [e["val_f1"] for e in second]
    for e in second:
        again = torch.load(e["path"], weights_only=False)["model"]
        assert all(torch.equal(weights[e["tag"]][k], again[k]) for k in again)
    assert not torch.equal(weights["random-linear-1-seed0"]["head.weight"], weights["random-linear-1-seed1"]["head.weight"])

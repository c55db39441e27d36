"""``usssl compare`` (issue 18): hand-computed ranks and correlations, strict foreign loading with a
key map, schedulers that step, frame-gap pairs, heads chosen on validation, and a tiny grid."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from usssl.config import EncoderConfig, OptimizerConfig
from usssl.downstream.compare_fit import average_ranks, fit_head, gap_pairs, head_probs, spearman, state_digest
from usssl.engine.optim import build_optimizer, build_scheduler
from usssl.errors import DataError
from usssl.models.checkpoint import load_foreign_encoder, renamed_keys
from usssl.models.encoders import build_encoder


def test_ranks_and_spearman_by_hand():
    assert average_ranks(np.array([3.0, 1.0, 3.0])).tolist() == [2.5, 1.0, 2.5]
    assert spearman(np.array([1, 2, 3]), np.array([10, 20, 30])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)
    # ties: ranks (1.5, 1.5, 3, 4) vs (1, 2, 3, 4): 4.5 / sqrt(4.5 · 5)
    assert spearman(np.array([1, 1, 2, 3]), np.array([1, 2, 3, 4])) == pytest.approx(4.5 / math.sqrt(22.5))
    assert math.isnan(spearman(np.array([1, 2]), np.array([2, 1])))  # fewer than 3 encoders
    assert math.isnan(spearman(np.array([1, 1, 1]), np.array([1, 2, 3])))  # a constant column


def test_key_map_renames_the_longest_prefix_first():
    state = {"module.fc.bias": 1, "conv.weight": 2}
    assert renamed_keys(state, {"module.": "", "": "net."}) == {"fc.bias": 1, "net.conv.weight": 2}


def test_foreign_checkpoints_load_strictly(tmp_path):
    arch = EncoderConfig(width=4, dim=16)
    torch.manual_seed(3)
    source = build_encoder(arch)
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in source.state_dict().items()}}, path)
    loaded = load_foreign_encoder(path, arch, {"backbone.": ""})
    assert state_digest(loaded) == state_digest(source)  # the very same weights
    with pytest.raises(DataError, match=r"missing \(e.g. .*\), \d+ unexpected \(e.g. \['backbone\."):
        load_foreign_encoder(path, arch, {})  # never a silently random encoder
    with pytest.raises(DataError, match="needs `architecture:`"):
        load_foreign_encoder(path, None, {"backbone.": ""})


@pytest.mark.parametrize("scheduler, factor", [("step", 0.1), ("multistep", 0.1),
                                               ("cosine", (1 + math.cos(math.pi / 10)) / 2)])
def test_every_scheduler_changes_the_learning_rate(scheduler, factor):
    cfg = OptimizerConfig(lr=0.5, scheduler=scheduler, step_epochs=1, milestones=[1], gamma=0.1, cosine_epochs=10)
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    schedule = build_scheduler(opt, cfg)
    opt.step()
    schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * factor)


def test_gap_pairs_respect_the_gaps_and_the_recordings():
    pairs = gap_pairs({"a": 10, "b": 3}, [1, 4, 16], per_recording=50, seed=0)
    assert len(pairs) == 100 and pairs == gap_pairs({"a": 10, "b": 3}, [1, 4, 16], 50, seed=0)
    for shard, i, j, c in pairs:
        n = {"a": 10, "b": 3}[shard]
        assert abs(i - j) == [1, 4, 16][c] and 0 <= min(i, j) and max(i, j) < n
    assert {c for s, *_, c in pairs if s == "b"} == {0}  # 3 frames: only the 1-frame gap fits
    assert {c for s, *_, c in pairs if s == "a"} == {0, 1}
    assert any(i > j for _, i, j, _ in pairs) and any(i < j for _, i, j, _ in pairs)  # the order says nothing


def test_the_head_is_chosen_on_validation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    y = (x[:, 0] > 0).astype(int)
    xv = rng.normal(size=(30, 4))
    yv = (xv[:, 0] > 0).astype(int)
    opt = OptimizerConfig(name="adam", weight_decay=0.0, scheduler="cosine")
    head = fit_head(x, y, xv, yv, 2, [1e-4, 0.1], epochs=40, eval_every=10, optimizer=opt)
    assert head.selection["lr"] == 0.1 and head.selection["val_f1"] > 0.9
    assert set(head.selection["grid"]) == {"0.0001", "0.1"}
    assert head.selection["grid"]["0.1"] == head.selection["val_f1"]
    probs = head_probs(head, xv)
    assert probs.shape == (30, 2) and np.allclose(probs.sum(1), 1)
    with pytest.raises(ValueError, match="every choice is made on validation"):
        fit_head(x, y, xv[:0], yv[:0], 2, [0.1], 10, 10, opt)


@pytest.mark.slow
def test_a_tiny_grid_end_to_end_and_resumed(tiny_run, tmp_path):
    from usssl.config import PipelineConfig
    from usssl.pipeline import run_pipeline

    cfg, result = tiny_run
    encoder_pt = result["pretrain"]["encoder"]
    compare = {"folds": 2, "val_fraction": 0.5, "bootstrap": 20,
               "encoders": [{"name": "random", "random": {"width": 4, "dim": 16}},
                            {"name": "pretrained", "checkpoint": encoder_pt, "only_tasks": ["planes"]},
                            {"name": "ot", "recipe": {"method": "order_transform", "encoder": {"width": 4, "dim": 16},
                                                      "max_epochs": 1, "batch_size": 8, "pairs_per_epoch": 16,
                                                      "order_transform": {"clip_frames": 4, "frame_stride": 2}}}],
               "tasks": [{"name": "planes", "cache": str(cfg.cache_dir), "frame_stride": 4, "epochs": 20},
                         {"name": "gap", "cache": str(cfg.cache_dir), "kind": "frame_gap", "frame_stride": 2,
                          "gaps": [1, 8], "pairs_per_recording": 16, "epochs": 20}]}
    raw = {"name": "cmp", "output_dir": str(tmp_path / "cmp"), "trainer": {"progress": False},
           "tracking": {"enabled": False}, "stages": [{"compare": compare}]}
    out = run_pipeline(PipelineConfig.model_validate(raw))["compare"]
    assert out["cells"] == (3 + 2) * 2  # the checkpoint runs on planes only; 2 folds, 1 seed
    folder = tmp_path / "cmp" / "compare"
    import pandas as pd

    table = pd.read_csv(folder / "table.csv")
    assert sorted(zip(table["encoder"], table["task"])) == sorted(
        [("random", "planes"), ("pretrained", "planes"), ("ot", "planes"), ("random", "gap"), ("ot", "gap")])
    assert ((table["f1"] >= 0) & (table["f1"] <= 100)).all() and (table["lo"] <= table["hi"]).all()
    assert sorted(table[table["task"] == "planes"]["rank"]) [0] == 1
    report = (folder / "report.md").read_text()
    assert "| pretrained | checkpoint (not fold-aware: may have seen the task's subjects) |" in report
    assert (folder / "heatmap.png").stat().st_size > 1000
    cell = json.loads((folder / "cells" / "ot" / "planes" / "fold0-seed0.json").read_text())
    assert cell["selection"]["lr"] in (0.003, 0.01, 0.03) and set(cell["selection"]["grid"]) == {"0.003", "0.01", "0.03"}
    runs = sorted((tmp_path / "cmp" / "compare" / "encoders" / "ot").rglob("pretrain_data.json"))
    assert len(runs) == 2  # one pretraining per fold, shared by every task on this cache
    pre = json.loads(runs[0].read_text())
    from usssl.data.cache import Cache
    from usssl.stages.common import fold_plan
    from usssl.config import FinetuneConfig

    folds = fold_plan(cfg, FinetuneConfig(cv="kfold", folds=2, val_fraction=0.5), Cache(cfg.cache_dir))
    seen = set(pre["subjects"])
    assert seen and not seen & set(folds[pre["fold"]].test_subjects)  # the recipe never saw its test subjects
    again = run_pipeline(PipelineConfig.model_validate(raw), resume=True)["compare"]
    assert pd.read_csv(folder / "table.csv").equals(table) and again["cells"] == out["cells"]

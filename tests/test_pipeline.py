"""The tiny pipeline end to end: outputs, honest splits, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_raw


def test_tiny_pipeline_writes_report_and_results(tiny_run):
    cfg, result = tiny_run
    out = Path(cfg.output_dir)
    results = pd.read_csv(out / "evaluate" / "results.csv")
    assert len(results) == 2 * 2 * 2  # inits × protocols × fractions
    assert set(results["init"]) == {"random", "video_speech"}
    assert set(results["protocol"]) == {"linear", "finetune"}
    assert results[["precision", "recall", "f1"]].apply(lambda c: c.between(0, 1)).all().all()
    assert "| init | protocol | F1 @ 0.5 | F1 @ 1 |" in result["report"]
    assert (out / "evaluate" / "label_efficiency.png").stat().st_size > 1000
    preds = pd.read_csv(out / "evaluate" / "predictions.csv")
    assert len(preds) == 8 * results["n_test"].iloc[0]
    for i, kind in enumerate(["ingest", "pretrain", "finetune", "evaluate", "saliency", "export"]):
        assert (out / "stages" / f"{i}-{kind}.done.json").is_file()


def test_saliency_stage_scores_each_init_against_baselines(tiny_run):
    cfg, result = tiny_run
    out = Path(cfg.output_dir) / "saliency"
    for init in ("random", "video_speech"):
        summary = pd.read_csv(out / init / "saliency_summary.csv").set_index("model")
        assert set(summary.index) == {"trained", "centre_bias", "uniform"}
        assert summary.loc["uniform", "cc"] == 0.0 and summary.loc["uniform", "auc_judd"] == 0.5
        assert (out / init / "saliency_model.pt").is_file()
    report = (out / "report.md").read_text()
    assert "video_speech encoder + decoder" in report and "centre bias" in report
    assert "Gaze saliency" in result["report"] and "macro F1" in result["report"]


def test_export_stage_output_runs_in_usssl_predict(tiny_run, tmp_path):
    from usssl.cli import main

    cfg, result = tiny_run
    export = Path(cfg.output_dir) / "export"
    spec = json.loads((export / "preprocessing.json").read_text())
    manifest = pd.DataFrame(json.loads((Path(cfg.output_dir) / "finetune" / "manifest.json").read_text()))
    best = manifest[manifest["protocol"] != "knn"].groupby(["init", "protocol", "label_fraction"])["val_f1"].mean().idxmax()
    chosen = spec["provenance"]
    assert (chosen["init"], chosen["protocol"], chosen["label_fraction"]) == best  # chosen on validation, never test
    assert spec["provenance"]["trained_on"]["refit"] == "every subject"  # the recipe re-run on all subjects
    assert spec["provenance"]["selection"]["val_f1"] == pytest.approx(manifest.groupby(
        ["init", "protocol", "label_fraction"])["val_f1"].mean()[best], abs=1e-4)
    estimate = spec["provenance"]["cross_validated_estimate"]
    assert estimate["f1_lo"] <= estimate["f1"] <= estimate["f1_hi"]
    assert "saliency" in spec["models"] and spec["input"]["size"] == [32, 32]
    video = sorted((Path(cfg.output_dir) / "synth").rglob("*.mp4"))[0]
    assert main(["predict", str(export), str(video), "--out", str(tmp_path / "pred"), "--every", "5"]) == 0
    planes = pd.read_csv(tmp_path / "pred" / "input-001" / "planes.csv")
    probs = planes[[c for c in planes if c.startswith("p_")]].to_numpy()
    assert len(planes) > 10 and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert len(list((tmp_path / "pred" / "input-001" / "saliency").glob("*.png"))) >= 2


def test_pretraining_sees_only_training_subjects(tiny_run):
    from usssl.data.cache import Cache
    from usssl.data.datasets import AudioVisualDataset
    from usssl.errors import DataError

    cfg, _ = tiny_run
    cache = Cache(cfg.cache_dir)
    used = json.loads((Path(cfg.output_dir) / "pretrain" / "pretrain_data.json").read_text())
    train, test = set(cache.splits["train"]), set(cache.splits["test"])
    assert test and not (train & test)
    assert set(used["subjects"]) <= train and not set(used["subjects"]) & test
    assert set(used["shards"]) == set(cache.shard_ids("train"))
    # every pair the dataset serves comes from a training subject
    ds = AudioVisualDataset(cache, cache.shard_ids("train"), split="train", interval_frames=20,
                            affinity_threshold=0.25, pairs_per_epoch=40)
    served = {ds.subjects[int(ds[i]["subject"])] for i in range(len(ds))}
    assert served <= train
    # and a held-out shard is refused outright
    with pytest.raises(DataError, match="not in the 'train' split"):
        AudioVisualDataset(cache, cache.shard_ids("test"), split="train")


def test_resume_skips_finished_stages_and_continues_training(tmp_path):
    from usssl.config import PipelineConfig
    from usssl.pipeline import run_pipeline

    raw = tiny_raw(tmp_path / "run", tracking={"enabled": False})
    raw["stages"] = raw["stages"][:2]
    raw["stages"][1]["pretrain"]["max_epochs"] = 1
    first = run_pipeline(PipelineConfig.model_validate(raw))
    assert first["pretrain"]["epochs"] == 1
    ckpt = tmp_path / "run" / "checkpoints" / "pretrain" / "last.ckpt"
    assert ckpt.is_file()
    # simulate a run killed during pretraining: the stage has no done-marker, the checkpoint stays
    (tmp_path / "run" / "stages" / "1-pretrain.done.json").unlink()
    raw["stages"][1]["pretrain"]["max_epochs"] = 2
    second = run_pipeline(PipelineConfig.model_validate(raw), resume=True)
    assert second["ingest"] == first["ingest"]  # skipped: summary read back from its marker
    assert second["pretrain"]["epochs"] == 2
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["epoch"] == 1 and state["global_step"] == 2 * (48 // 16)

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


def test_resume_after_a_kill_during_pretraining_is_exact(tmp_path, monkeypatch):
    """Killed mid-epoch 1 of 2, resumed: ingest is skipped and the encoder equals, bit for bit, that of
    a pretraining never stopped (the augmentation's random state is in the checkpoint)."""
    import shutil

    import torch
    from lightning.pytorch.callbacks import Callback

    import usssl.engine.trainer as engine_trainer
    from usssl.config import PipelineConfig
    from usssl.pipeline import run_pipeline

    class Killed(Exception):
        pass

    class KillMidEpoch1(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if (trainer.current_epoch, batch_idx) == (1, 1):
                raise Killed

    out = tmp_path / "run"
    raw = tiny_raw(out, tracking={"enabled": False})
    raw["stages"] = raw["stages"][:2]  # ingest, pretrain: 2 epochs of 48 // 16 steps, augmentation on
    cfg = PipelineConfig.model_validate(raw)
    assert cfg.stage("pretrain").augment
    build = engine_trainer.build_trainer
    monkeypatch.setattr(engine_trainer, "build_trainer", lambda *a, **k: build(*a, callbacks=[KillMidEpoch1()], **k))
    with pytest.raises(Killed):
        run_pipeline(cfg)
    monkeypatch.undo()
    ckpt = out / "checkpoints" / "pretrain" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"] == 0
    assert not (out / "stages" / "1-pretrain.done.json").exists()
    ingest = json.loads((out / "stages" / "0-ingest.done.json").read_text())

    resumed = run_pipeline(cfg, resume=True)
    assert resumed["ingest"] == ingest  # skipped: summary read back from its marker
    assert resumed["pretrain"]["epochs"] == 2
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] == 2 * (48 // 16)
    got = torch.load(out / "pretrain" / "encoder.pt", map_location="cpu", weights_only=True)["encoder"]

    # the same pretraining, never stopped (ingest still skipped)
    (out / "stages" / "1-pretrain.done.json").unlink()
    (out / "pretrain" / "done.json").unlink()  # else --resume keeps the finished pretraining
    shutil.rmtree(out / "checkpoints" / "pretrain")
    whole = run_pipeline(cfg, resume=True)
    expected = torch.load(out / "pretrain" / "encoder.pt", map_location="cpu", weights_only=True)["encoder"]
    whole_state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert got.keys() == expected.keys()
    assert max(float((got[k].double() - expected[k].double()).abs().max()) for k in expected) == 0.0
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    modules = state["state_dict"], whole_state["state_dict"]  # encoder, heads and buffers (the pace)
    assert modules[0].keys() == modules[1].keys() and all(torch.equal(modules[0][k], modules[1][k]) for k in modules[1])
    final = {k: v for k, v in whole["pretrain"].items() if k != "seconds"}
    assert {k: v for k, v in resumed["pretrain"].items() if k != "seconds"} == final
    assert final["train/loss_epoch"] > 0

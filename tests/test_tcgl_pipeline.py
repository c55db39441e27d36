"""TCGL end to end at tiny settings: pretraining, clip-reading transfer, evaluation, retrieval, export."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from conftest import tiny_raw

TCGL = {"method": "tcgl", "encoder": {"name": "tiny3d", "width": 4, "dim": 16, "clip_frames": 4,
                                      "motion_emphasis": True},
        "tcgl": {"snippet_frames": 4, "gap_frames": 2, "sub_clips": 2, "tuples_per_epoch": 16, "order_hidden": 16},
        "max_epochs": 1, "batch_size": 8}


def test_tcgl_pipeline_with_retrieval(tiny_run, tmp_path):
    from usssl.config import PipelineConfig
    from usssl.models.checkpoint import load_encoder
    from usssl.pipeline import run_pipeline

    cfg0, _ = tiny_run
    raw = tiny_raw(tmp_path / "run", tracking={"enabled": False})
    raw["data"]["sources"] = [str(Path(cfg0.output_dir) / "synth")]
    ingest, _, finetune, evaluate, _, export = raw["stages"]
    finetune["finetune"] |= {"protocols": ["linear"], "label_fractions": [1.0]}
    retrieval = {"retrieval": {"clip_frames": 4, "frame_stride": 4, "ks": [1, 5], "exclude_background": False}}
    raw["stages"] = [ingest, {"pretrain": TCGL}, finetune, evaluate, retrieval, export]
    result = run_pipeline(PipelineConfig.model_validate(raw))
    out = tmp_path / "run"
    assert result["pretrain"]["epochs"] == 1
    assert 0 <= result["pretrain"]["train/order_accuracy_epoch"] <= 1
    _, enc_cfg, meta = load_encoder(out / "pretrain" / "encoder.pt")
    assert (enc_cfg.clip_frames, enc_cfg.motion_emphasis, meta["method"]) == (4, True, "tcgl")
    manifest = json.loads((out / "finetune" / "manifest.json").read_text())
    assert {e["clip_frames"] for e in manifest} == {4}  # random init shares the encoder's clip input
    results = pd.read_csv(out / "evaluate" / "results.csv")
    assert set(results["init"]) == {"random", "tcgl"} and results["f1"].between(0, 1).all()
    scores = pd.read_csv(out / "retrieval" / "results.csv")
    clip = scores[scores["level"] == "clip"]
    assert set(clip["init"]) == {"random", "tcgl"} and set(clip["k"]) <= {1, 5}
    assert clip["recall"].between(0, 1).all() and (clip["n_gallery"] >= 4 * clip["k"]).all()
    assert "R@1" in (out / "retrieval" / "report.md").read_text()
    spec = json.loads((out / "export" / "preprocessing.json").read_text())
    assert spec["models"]["planes"]["clip_frames"] == 4 and spec["input"]["clip_anchor"] == "centre"


def test_retrieval_report_table():
    from usssl.config import RetrievalConfig
    from usssl.stages.retrieval import markdown

    summary = pd.DataFrame({"level": ["clip"] * 3, "init": ["random", "random", "tcgl"], "k": [1, 5, 1],
                            "mean": [0.25, 0.5, 0.125], "std": [0.05, float("nan"), float("nan")],
                            "runs": [2, 2, 1]})
    text = markdown(summary, RetrievalConfig(), n_folds=2, n_seeds=1)
    assert "| random | 25.0 ± 5.0 | 50.0 |" in text and "| tcgl | 12.5 | – |" in text
    assert "No recording-level scores" in text

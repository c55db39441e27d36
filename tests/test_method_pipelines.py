"""Each pretraining method runs end to end as a pipeline at tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import tiny_raw

METHODS = {
    "order_transform": {"method": "order_transform", "encoder": {"width": 4, "dim": 16},
                        "order_transform": {"clip_frames": 4, "frame_stride": 2}},
    "cvrl": {"method": "cvrl", "encoder": {"name": "tiny3d", "width": 4, "dim": 16}, "projection_dim": 16,
             "cvrl": {"clip_frames": 4, "stride": 2, "pairs_per_epoch": 32}},
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_pipeline_end_to_end(method, tiny_run, tmp_path):
    from usssl.config import PipelineConfig
    from usssl.pipeline import run_pipeline

    cfg0, _ = tiny_run
    raw = tiny_raw(tmp_path / "run", tracking={"enabled": False})
    raw["data"]["sources"] = [str(Path(cfg0.output_dir) / "synth")]
    raw["stages"][1] = {"pretrain": {**METHODS[method], "max_epochs": 1, "batch_size": 8, "pairs_per_epoch": 32}}
    raw["stages"][2]["finetune"]["protocols"] = ["linear"]
    raw["stages"][2]["finetune"]["label_fractions"] = [1.0]
    result = run_pipeline(PipelineConfig.model_validate(raw))
    out = tmp_path / "run"
    assert result["pretrain"]["epochs"] == 1
    assert json.loads((out / "pretrain" / "pretrain_data.json").read_text())["method"] == method
    results = pd.read_csv(out / "evaluate" / "results.csv")
    assert set(results["init"]) == {"random", method}
    assert results["f1"].between(0, 1).all()

"""A new pretraining method is one module, one settings class and two registry lines: a toy method
registered from outside the package runs through a tiny pipeline and transfers like the others."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
import torch
from pydantic import Field

from conftest import tiny_raw


def _toy_module() -> types.ModuleType:
    """``usssl_toy_method``: predict each clip's mean brightness from the encoder (a pretext task)."""
    import lightning as L

    from usssl.data.clips import ClipDataset
    from usssl.engine.optim import configure_optimization
    from usssl.models.encoders import build_encoder

    class ToyModule(L.LightningModule):
        def __init__(self, cfg) -> None:
            super().__init__()
            self.cfg = cfg
            self.encoder = build_encoder(cfg.encoder)
            self.head = torch.nn.Linear(self.encoder.out_dim, 1)

        def training_step(self, batch, batch_idx):
            video = batch["video"]  # (B, 1, T, H, W)
            target = video.mean(dim=(1, 2, 3, 4))
            loss = torch.nn.functional.mse_loss(self.head(self.encoder(video)).squeeze(1), target)
            self.log("train/loss", loss, on_step=True, on_epoch=True)
            return loss

        def configure_optimizers(self):
            return configure_optimization(self.parameters(), self.cfg.optimizer)

    module = types.ModuleType("usssl_toy_method")
    module.make_dataset = lambda cache, shards, split, cfg, seed: (
        ClipDataset(cache, shards, split, clip_frames=cfg.toy.clip_frames, stride=1, clips_per_epoch=32, seed=seed),
        {"data/toy_clips": 32.0})
    module.make_module = lambda cfg, cache: ToyModule(cfg)
    return module


@pytest.fixture
def toy_registered():
    from usssl.config import Strict, register_method_settings
    from usssl.methods import register_method

    class ToyConfig(Strict):
        clip_frames: int = Field(2, ge=1, description="frames per clip")

    sys.modules["usssl_toy_method"] = _toy_module()
    register_method_settings("toy", ToyConfig)
    register_method("toy", "usssl_toy_method")
    yield
    register_method("toy", None)
    register_method_settings("toy", None)
    sys.modules.pop("usssl_toy_method", None)


def test_a_registered_method_validates_and_runs_through_a_tiny_pipeline(toy_registered, tiny_run, tmp_path):
    from usssl.config import PipelineConfig as Rebuilt
    from usssl.pipeline import run_pipeline

    cfg0, _ = tiny_run
    raw = tiny_raw(tmp_path / "run", tracking={"enabled": False})
    raw["data"]["sources"] = [str(Path(cfg0.output_dir) / "synth")]
    raw["stages"] = raw["stages"][:4]  # ingest, pretrain, finetune, evaluate
    raw["stages"][1] = {"pretrain": {"method": "toy", "toy": {"clip_frames": 3}, "encoder": {"width": 4, "dim": 16},
                                     "max_epochs": 1, "batch_size": 8}}
    raw["stages"][2]["finetune"].update(protocols=["linear"], label_fractions=[1.0])
    cfg = Rebuilt.model_validate(raw)
    assert cfg.stage("pretrain").toy.clip_frames == 3
    result = run_pipeline(cfg)
    out = tmp_path / "run"
    assert result["pretrain"]["epochs"] == 1
    assert json.loads((out / "pretrain" / "pretrain_data.json").read_text())["method"] == "toy"
    results = pd.read_csv(out / "evaluate" / "results.csv")
    assert set(results["init"]) == {"random", "toy"}
    assert results["f1"].between(0, 1).all()


def test_an_unregistered_method_is_a_config_error_naming_the_choices(tmp_path):
    from usssl.config import load_config
    from usssl.errors import ConfigError

    path = tmp_path / "p.yaml"
    path.write_text("stages:\n  - pretrain: {method: toy}\n")
    with pytest.raises(ConfigError, match="stages\\[0\\].pretrain.method: got 'toy'; expected 'video_speech', "
                                          "'order_transform', 'cvrl', 'frame_contrastive' or 'tcgl'"):
        load_config(path)


def test_registration_adds_the_settings_block_and_unregistration_removes_it(toy_registered):
    import usssl.config as config

    assert "toy" in config.PretrainConfig.model_fields
    assert config.StageEntry.model_fields["pretrain"].annotation.__args__[0] is config.PretrainConfig
    config.register_method_settings("toy", None)
    assert "toy" not in config.PretrainConfig.model_fields

"""The frame_contrastive method and the localise stage end to end, then the object-aware options on its maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from conftest import tiny_raw


def test_frame_contrastive_then_localise_then_object_aware_views(tiny_run, tmp_path):
    from usssl.config import PipelineConfig
    from usssl.data.cache import Cache
    from usssl.methods.frame_contrastive import FrameContrastiveModule, FrameViewDataset
    from usssl.models.checkpoint import load_encoder
    from usssl.pipeline import run_pipeline

    cfg0, _ = tiny_run
    raw = tiny_raw(tmp_path / "run", tracking={"enabled": False})
    raw["data"]["sources"] = [str(Path(cfg0.output_dir) / "synth")]
    raw["stages"] = [raw["stages"][0],
                     {"pretrain": {"method": "frame_contrastive", "encoder": {"width": 4, "dim": 16},
                                   "projection_dim": 16, "max_epochs": 1, "batch_size": 8,
                                   "frame_contrastive": {"frames_per_epoch": 32}}},
                     {"localise": {"inits": ["random", "pretrain"], "split": "all", "frame_stride": 20,
                                   "batch_size": 8, "iterations": 2, "n_overlays": 1}}]
    cfg = PipelineConfig.model_validate(raw)
    result = run_pipeline(cfg)
    out = tmp_path / "run" / "localise"
    assert result["localise"]["inits"] == ["random", "frame_contrastive"]
    _, _, meta = load_encoder(tmp_path / "run" / "pretrain" / "encoder.pt")
    assert meta["projector_dims"] == [16, 16, 16, 1]  # the projector travels with the encoder
    cache = Cache(cfg.cache_dir)
    shards = cache.shard_ids()
    for init in ("random", "frame_contrastive"):
        boxes = pd.read_csv(out / init / "boxes.csv")
        assert set(boxes["shard"]) <= set(shards) and (boxes["x1"] > boxes["x0"]).all()
        assert (out / init / "overlay-0.png").is_file()
        maps = np.load(out / init / "objects" / f"{shards[0]}.npz")
        n = len(range(0, len(cache.shard(shards[0])), 20))
        assert maps["frames"].tolist() == list(range(0, 20 * n, 20))
        assert maps["boxes"].shape == (n, 4) and maps["masks"].shape == (n, 32, 32)
        assert maps["masks"].max() == 255  # min–max normalised per frame
    # the cache holds the corpus's anatomy masks: every strided frame with anatomy is scored, both maps
    scored = {(s, f) for s in shards for f in range(0, len(cache.shard(s)), 20) if cache.shard(s).masks[f].any()}
    assert scored  # the tiny corpus has plane frames among them
    for init in ("random", "frame_contrastive"):
        scores = pd.read_csv(out / init / "scores.csv")
        assert set(scores["model"]) == {"contracam", "centre_box"} and len(scores) == 2 * len(scored)
        assert set(zip(scores["shard"], scores["frame"])) == scored
        for metric in ("mask_iou", "box_iou", "pointing"):
            assert scores[metric].between(0, 1).all() and scores[metric].notna().all()
        assert scores.loc[scores["model"] == "centre_box", "mask_iou"].mean() > 0  # the box meets the anatomy
    report = (out / "report.md").read_text()
    assert "ContraCAM (random)" in report and "ContraCAM (frame_contrastive)" in report and "centre box" in report
    assert result["localise"]["report"] == report
    # the maps feed the object-aware crop and background mixup of the frame method
    objects = out / "frame_contrastive" / "objects"
    data = FrameViewDataset(cache, shards, None, frames_per_epoch=8, objects_from=objects)
    batch = {k: torch.stack([data[i][k] for i in range(8)]) for k in ("video", "box", "mask")}
    assert batch["box"].shape == (8, 4) and batch["mask"].shape == (8, 1, 32, 32)
    pcfg = cfg.stage("pretrain").model_copy(update={"frame_contrastive": cfg.stage("pretrain").frame_contrastive
                                                    .model_copy(update={"object_crop": True, "bg_mixup": True,
                                                                        "objects_from": str(objects)})})
    module = FrameContrastiveModule(pcfg)
    module.log = lambda *a, **k: None
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss) and len(module.mixup.queue) <= 8

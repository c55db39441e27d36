"""Shared fixtures: the tiny end-to-end pipeline run once per test session, and a 2-fold run on its cache."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"synth": {"subjects": 4, "seed": 0, "duration_s": 10, "size": [96, 96]}},
    "trainer": {"progress": False, "log_every_n_steps": 1},
    "stages": [
        {"ingest": {"size": [32, 32], "fps": 10, "split": {"test": 0.25, "seed": 0}, "workers": 1}},
        {"pretrain": {"encoder": {"width": 4, "dim": 16}, "projection_dim": 16,
                      "speech": {"spec_size": [32, 32], "interval_frames": 20, "affinity_threshold": 0.25},
                      "max_epochs": 2, "batch_size": 16, "pairs_per_epoch": 48}},
        {"finetune": {"max_epochs": 1, "samples_per_epoch": 32, "batch_size": 16,
                      "label_fractions": [0.5, 1.0], "linear_epochs": 20}},
        {"evaluate": {"bootstrap": 50}},
        {"saliency": {"epochs": 1, "batch_size": 16, "n_overlays": 1, "frame_stride": 2}},
        {"export": {}},
    ],
}


def tiny_raw(output_dir: Path, **changes) -> dict:
    """The tiny pipeline as a raw mapping, writing to ``output_dir``."""
    raw = copy.deepcopy(TINY)
    raw["output_dir"] = str(output_dir)
    raw.update(changes)
    return raw


@pytest.fixture(scope="session", autouse=True)
def _subject_key(tmp_path_factory):
    """A test-only pseudonymisation key, so tests never touch ~/.config."""
    os.environ.setdefault("USSSL_SUBJECT_KEY", "usssl-test-key")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)  # experiments are named by the pipelines (tests rely on it)
    yield


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny pipeline run once, tracked in its default sqlite store."""
    from usssl.config import PipelineConfig
    from usssl.pipeline import run_pipeline

    out = tmp_path_factory.mktemp("tiny") / "run"
    cfg = PipelineConfig.model_validate(tiny_raw(out))
    result = run_pipeline(cfg)
    return cfg, result


@pytest.fixture(scope="session")
def kfold_run(tiny_run, tmp_path_factory):
    """Pretrain + finetune + evaluate with 2 subject-level folds on the tiny run's cache: one
    pretraining per fold (strictly inductive), inits random, supervised and pretrain, protocols knn
    and linear."""
    from usssl.config import PipelineConfig
    from usssl.pipeline import run_pipeline

    cfg0, _ = tiny_run
    stages = copy.deepcopy(TINY["stages"])
    pretrain = {**stages[1]["pretrain"], "max_epochs": 1}
    finetune = {**stages[2]["finetune"], "cv": "kfold", "folds": 2, "inits": ["random", "supervised", "pretrain"],
                "protocols": ["knn", "linear"], "label_fractions": [1.0], "knn_k": 3, "val_fraction": 0.5}
    raw = {**copy.deepcopy(TINY), "output_dir": str(tmp_path_factory.mktemp("kfold") / "run"),
           "data": {"cache_dir": str(cfg0.cache_dir)},
           "stages": [{"pretrain": pretrain}, {"finetune": finetune}, {"evaluate": {"bootstrap": 50}}]}
    cfg = PipelineConfig.model_validate(raw)
    return cfg, run_pipeline(cfg)

"""The MLflow layout a researcher opens in `mlflow ui` (docs/mlflow.md), read back from the store the
tiny session run wrote: experiment name and kind, standard tags, the dataset input, the parent's
description and headline, configuration runs under evaluate and fitted-model runs under those."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def store(tiny_run):
    from mlflow.tracking import MlflowClient

    cfg, result = tiny_run
    client = MlflowClient(result["tracking_uri"])
    exp = client.get_experiment_by_name("tiny")  # the pipeline's name: tracking.experiment is not set
    runs = client.search_runs([exp.experiment_id], max_results=500)
    return cfg, result, client, exp, {r.info.run_id: r for r in runs}


def _children(runs: dict, parent_id: str) -> list:
    return [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent_id]


def test_experiment_opens_on_the_runs_table(store):
    cfg, result, client, exp, runs = store
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert result["experiment"] == "tiny"
    assert result["runs_url"] == (f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"
                                  "?workflowType=machine_learning")


def test_parent_run_has_standard_tags_dataset_headline_and_description(store):
    cfg, result, client, exp, runs = store
    parents = [r for r in runs.values() if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    tags = parent.data.tags
    assert tags["mlflow.source.name"] == "usssl run tiny" and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.user"] and len(tags.get("mlflow.source.git.commit", "0" * 40)) == 40
    # headline: the estimate at the largest label fraction per init and protocol, in %
    intervals = pd.read_csv(f"{cfg.output_dir}/evaluate/intervals.csv")
    top = intervals[intervals["label_fraction"] == 1.0]
    expected = {f"macro_f1/{r.init}-{r.protocol}": round(100 * r.f1, 2) for r in top.itertuples()}
    assert {k: v for k, v in parent.data.metrics.items() if k.startswith("macro_f1/")} == pytest.approx(expected)
    assert len(expected) == 4  # random and video_speech × linear and finetune
    note = tags["mlflow.note.content"]
    assert note.startswith("**tiny**: ingest → pretrain → finetune → evaluate → saliency → export")
    assert (open(f"{cfg.output_dir}/evaluate/report.md").read()[:200]) in note
    # the cache as MLflow's dataset input: short digest, counts, the data card beside it
    inputs = client.get_run(parent.info.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert dataset.name == "tiny-cache" and tags["dataset_digest"].startswith(dataset.digest)
    assert len(dataset.digest) == 12 and json.loads(dataset.source) == {"tags": {"usssl.pipeline": "tiny"}}
    profile = json.loads(dataset.profile)
    assert profile["digest"] == tags["dataset_digest"] and profile["subjects"] == 4
    assert profile["train_subjects"] + profile["test_subjects"] + profile.get("val_subjects", 0) == 4
    assert {i.key: i.value for i in inputs[0].tags} == {"mlflow.data.context": "training"}
    card = client.download_artifacts(parent.info.run_id, "dataset/data_card.md")
    assert open(card).read().startswith("# Data card")


def test_configuration_runs_under_evaluate_with_model_runs_below(store):
    cfg, result, client, exp, runs = store
    evaluate = next(r for r in runs.values() if r.data.tags.get("usssl.stage") == "evaluate")
    configs = _children(runs, evaluate.info.run_id)
    intervals = pd.read_csv(f"{cfg.output_dir}/evaluate/intervals.csv")
    assert len(configs) == len(intervals) == 8  # 2 inits × 2 protocols × 2 label fractions
    assert not [k for k in evaluate.data.metrics if "/" in k]  # no per-model metric names on the stage run
    results = pd.read_csv(f"{cfg.output_dir}/evaluate/results.csv")
    for row in intervals.itertuples():
        run = next(r for r in configs if r.info.run_name == f"{row.init}-{row.protocol}-{row.label_fraction:g}")
        assert run.data.params["init"] == row.init and run.data.params["protocol"] == row.protocol
        assert float(run.data.params["label_fraction"]) == row.label_fraction
        m = run.data.metrics
        assert m["macro_f1"] == pytest.approx(100 * row.f1)  # in %, as the report
        assert m["macro_f1_lo"] == pytest.approx(100 * row.f1_lo) and m["macro_f1_hi"] == pytest.approx(100 * row.f1_hi)
        assert m["macro_f1_lo"] <= m["macro_f1"] + 1e-9 <= m["macro_f1_hi"] + 2e-9
        models = _children(runs, run.info.run_id)
        assert len(models) == 1  # one fold, one seed
        model = models[0]
        assert model.data.params["fold"] == "0" and model.data.params["seed"] == "0"
        scored = results[(results["init"] == row.init) & (results["protocol"] == row.protocol)
                         & (results["label_fraction"] == row.label_fraction)].iloc[0]
        assert model.data.metrics["macro_f1"] == pytest.approx(100 * scored.f1)
        # the finetune stage's run of the model was moved here: its curves are in it
        train = client.get_metric_history(model.info.run_id, "train/ce")
        val = client.get_metric_history(model.info.run_id, "val/macro_f1")
        if row.protocol == "linear":
            assert [p.step for p in train] == list(range(1, 21))  # linear_epochs: 20
            assert [p.step for p in val] == [10, 20]
        else:
            assert len(train) > 1 and [p.step for p in val] == [1]  # max_epochs: 1
        assert all(0 <= p.value <= 100 for p in val)


def test_finetune_stage_keeps_no_per_model_metric_names(store):
    cfg, result, client, exp, runs = store
    finetune = next(r for r in runs.values() if r.data.tags.get("usssl.stage") == "finetune")
    assert not [k for k in finetune.data.metrics if "-" in k.split("/")[0]]
    assert _children(runs, finetune.info.run_id) == []  # every fitted model's run moved under evaluate


def test_experiment_name_from_environment_then_yaml_then_pipeline_name(monkeypatch, tmp_path):
    from usssl.config import PipelineConfig, load_config
    from usssl.engine.tracking import experiment_name

    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    assert experiment_name(PipelineConfig.model_validate({"name": "demo"})) == "demo"
    assert experiment_name(PipelineConfig.model_validate({"name": "demo", "tracking": {"experiment": "usssl"}})) == "usssl"
    path = tmp_path / "p.yaml"
    path.write_text("name: demo\nstages: [ingest]\n")
    assert experiment_name(load_config(path, ["tracking.experiment=study"])) == "study"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    assert experiment_name(load_config(path, ["tracking.experiment=study"])) == "from-env"


def test_an_existing_experiment_without_a_kind_is_tagged_for_the_runs_view(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from usssl.config import PipelineConfig
    from usssl.engine.tracking import Tracker

    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    cfg = PipelineConfig.model_validate({"name": "old", "output_dir": str(tmp_path)})
    client = MlflowClient(cfg.tracking_uri)
    made = client.create_experiment("old", (tmp_path / "art").as_uri())
    other = client.create_experiment("genai", (tmp_path / "art2").as_uri(), tags={"mlflow.experimentKind": "genai_development"})
    assert Tracker(cfg).experiment_id == made
    assert client.get_experiment(made).tags["mlflow.experimentKind"] == "custom_model_development"
    Tracker(cfg.model_copy(update={"name": "genai"}))
    assert client.get_experiment(other).tags["mlflow.experimentKind"] == "genai_development"  # a kind it has stays


def test_one_pretraining_logs_into_the_pretrain_stage_run(store):
    cfg, result, client, exp, runs = store
    pretrain = next(r for r in runs.values() if r.data.tags.get("usssl.stage") == "pretrain")
    assert _children(runs, pretrain.info.run_id) == []  # one seed, no folds: the stage run is the pretraining's
    steps = client.get_metric_history(pretrain.info.run_id, "train/contrastive")
    assert sorted(p.step for p in steps) == list(range(1, 7))  # 2 epochs × 48 pairs // batch 16
    last = client.get_metric_history(pretrain.info.run_id, "train/contrastive_epoch")[-1].value
    assert pretrain.data.metrics["final/train/contrastive_epoch"] == pytest.approx(last)


def test_each_pretraining_of_a_kfold_run_has_its_own_run_under_the_stage(kfold_run):
    from mlflow.tracking import MlflowClient

    cfg, result = kfold_run
    client = MlflowClient(result["tracking_uri"])
    exp = client.get_experiment_by_name("tiny")
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id], max_results=500)}
    pretrain = next(r for r in runs.values() if r.data.tags.get("usssl.stage") == "pretrain")
    children = sorted(_children(runs, pretrain.info.run_id), key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in children] == ["pretrain-fold0-seed0", "pretrain-fold1-seed0"]
    assert not [k for k in pretrain.data.metrics if k.startswith(("train/", "data/", "fold", "final/"))]
    assert pretrain.data.params["n_pretrainings"] == "2"
    for fold, run in enumerate(children):
        seen = json.loads((Path(cfg.output_dir) / "pretrain" / f"fold{fold}-seed0" / "pretrain_data.json").read_text())
        assert run.data.tags["usssl.kind"] == "pretraining" and run.info.status == "FINISHED"
        assert {k: run.data.params[k] for k in ("method", "fold", "seed", "n_shards")} == {
            "method": "video_speech", "fold": str(fold), "seed": "0", "n_shards": str(len(seen["shards"]))}
        assert int(run.data.params["n_subjects"]) == len(seen["subjects"])
        # its own curves under the same names as the other fold's: 1 epoch × 48 pairs // batch 16 = 3 steps
        steps = client.get_metric_history(run.info.run_id, "train/contrastive")
        assert sorted(p.step for p in steps) == [1, 2, 3]
        assert [p.step for p in client.get_metric_history(run.info.run_id, "train/contrastive_epoch")] == [0]
        m = run.data.metrics
        assert "data/n_speech_frames" in m and "train/contrastive_epoch" in m
        assert not [k for k in m if k.startswith(("pretrain-", "final/"))]  # no per-fold prefixes, no copies
        ckpts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
        assert ckpts == {"checkpoints/encoder.pt"}

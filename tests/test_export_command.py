"""`usssl export RUN_DIR`: the tiny session run's models exported again without training, and the
export stage's networks as MLflow models (pt2, input example, preprocessing.json attached)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from usssl.cli import main


def _logits(export: Path, video: torch.Tensor) -> torch.Tensor:
    from usssl.downstream.export import load_exported

    return load_exported(export).planes(video)


def test_reexport_gives_the_runs_own_model_again_and_a_fitted_one_by_tag(tiny_run, tmp_path, capsys):
    from usssl.downstream.checkpoint import load_classifier

    cfg, _ = tiny_run
    run = Path(cfg.output_dir)
    video = torch.rand(3, 1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert main(["export", str(run), "--out", str(tmp_path / "again")]) == 0
    assert "exported refit on every subject" in capsys.readouterr().out
    assert torch.allclose(_logits(tmp_path / "again", video), _logits(run / "export", video), atol=1e-6)
    again = json.loads((tmp_path / "again" / "preprocessing.json").read_text())["provenance"]
    assert again["trained_on"]["refit"] == "every subject" and "saliency" in json.loads(
        (tmp_path / "again" / "preprocessing.json").read_text())["models"]

    tag = "random-linear-1"
    assert main(["export", str(run), "--model", tag, "--monai-bundle", str(tmp_path / "bundle")]) == 0
    out = capsys.readouterr().out
    assert f"to {run / f'export-{tag}'}" in out and "MONAI bundle written to" in out
    fitted = load_classifier(run / "finetune" / f"{tag}.pt")
    with torch.no_grad():
        expected = torch.softmax(fitted(video), dim=1)
    assert torch.allclose(_logits(run / f"export-{tag}", video), expected, atol=1e-5)
    assert (tmp_path / "bundle" / "configs" / "metadata.json").is_file()

    assert main(["export", str(run), "--model", "nope"]) == 2
    assert "export.model: no fitted model 'nope'" in capsys.readouterr().err
    assert main(["export", str(tmp_path)]) == 2
    assert "has no config.yaml and finetune/manifest.json" in capsys.readouterr().err


def test_export_stage_logs_both_networks_as_mlflow_models(tiny_run):
    from mlflow.tracking import MlflowClient

    cfg, result = tiny_run
    client = MlflowClient(result["tracking_uri"])
    exp = client.get_experiment_by_name("tiny")
    export_run = next(r for r in client.search_runs([exp.experiment_id])
                      if r.data.tags.get("usssl.stage") == "export")
    models = {m.name: m for m in client.search_logged_models([exp.experiment_id])}
    assert set(models) == {"plane_classifier", "saliency_model"}
    for model in models.values():
        assert model.source_run_id == export_run.info.run_id
        root = Path(model.artifact_location.removeprefix("file://"))
        assert root.is_relative_to(Path(cfg.output_dir).resolve() / "mlartifacts")
        assert (root / "data" / "model.pt2").is_file()  # serialization_format="pt2": torch.export, no pickle
        assert "loader_module: mlflow.pytorch" in (root / "MLmodel").read_text()
        assert json.loads((root / "extra_files" / "preprocessing.json").read_text())["format"] == "usssl-export"
        example = json.loads((root / "input_example.json").read_text())
        assert torch.tensor(example).shape == (2, 1, 1, 32, 32)
    assert models["plane_classifier"].params["init"] == json.loads(
        (Path(cfg.output_dir) / "export" / "preprocessing.json").read_text())["provenance"]["init"]

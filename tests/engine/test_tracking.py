"""MLflow tracking: sqlite default store and a real `mlflow server`; privacy of what is logged."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import tiny_raw  # noqa: E402


def _runs(uri: str, experiment: str = "tiny"):  # the pipeline's name
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=100)


def _check_tracked(uri: str) -> None:
    client, runs = _runs(uri)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    children = {r.data.tags["usssl.stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"ingest", "pretrain", "finetune", "evaluate", "saliency", "export"}
    assert all(r.info.status == "FINISHED" for r in runs)
    # resolved config, versions, git commit (when present), dataset digest
    assert parent.data.params["stages.1.pretrain.max_epochs"] == "2"
    assert parent.data.tags["version.torch"].startswith("2.14.1")
    assert len(parent.data.tags["dataset_digest"]) == 64
    assert children["ingest"].data.params["dataset_digest"] == parent.data.tags["dataset_digest"]
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "versions.json"} <= names
    # every loss term per step, metrics per epoch, final metrics
    pre = children["pretrain"].info.run_id
    steps = client.get_metric_history(pre, "train/contrastive")
    assert len(steps) == 2 * 3 and sorted(m.step for m in steps) == list(range(1, 7))
    assert len(client.get_metric_history(pre, "train/contrastive_epoch")) == 2
    assert "train/embedding_std" in children["pretrain"].data.metrics
    assert "train/affinity_high" in children["pretrain"].data.metrics
    # plots and checkpoints as artifacts
    report = {a.path for a in client.list_artifacts(children["evaluate"].info.run_id, "report")}
    assert "report/label_efficiency.png" in report and "report/results.csv" in report
    ckpts = {a.path for a in client.list_artifacts(pre, "checkpoints")}
    assert "checkpoints/encoder.pt" in ckpts


def test_sqlite_store_holds_parent_and_nested_runs(tiny_run):
    cfg, result = tiny_run
    assert result["tracking_uri"].startswith("sqlite:///") and result["tracking_uri"].endswith("mlflow.db")
    _check_tracked(result["tracking_uri"])


def test_no_patient_identifier_in_mlflow_or_cache(tiny_run):
    import pandas as pd

    cfg, _ = tiny_run
    out = Path(cfg.output_dir)
    subjects = pd.read_csv(out / "synth" / "subjects.csv")
    secrets = [s.encode() for s in subjects["patient_id"]] + [
        part.encode() for name in subjects["patient_name"] for part in name.split("^") if len(part) > 2
    ]
    places = [out / "mlflow.db", out / "mlartifacts", cfg.cache_dir, out / "pretrain", out / "finetune",
              out / "evaluate", out / "checkpoints"]
    checked = 0
    for place in places:
        files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()]
        for path in files:
            if path.name == "ingest_report.csv":
                continue  # names inputs by path for the data manager; never leaves the cache folder
            data = path.read_bytes()
            for secret in secrets:
                assert secret not in data, f"{secret!r} found in {path}"
                assert secret.decode() not in str(path)
            checked += 1
    assert checked > 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 in its own process group, stopped by group id."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_real_mlflow_server(mlflow_server, tmp_path, monkeypatch, tiny_run):
    from usssl.config import PipelineConfig
    from usssl.pipeline import run_pipeline

    cfg0, _ = tiny_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    # reuse the session's synthetic corpus (sources) so only the training stages rerun
    raw = tiny_raw(tmp_path / "run")
    raw["data"]["sources"] = [str(Path(cfg0.output_dir) / "synth")]
    result = run_pipeline(PipelineConfig.model_validate(raw))
    assert result["tracking_uri"] == mlflow_server
    assert not (tmp_path / "run" / "mlflow.db").exists()
    _check_tracked(mlflow_server)


def test_data_paths_are_redacted_from_params():
    from usssl.config import PipelineConfig
    from usssl.engine.tracking import redacted_params

    cfg = PipelineConfig.model_validate({"data": {"sources": ["/data/Smith^John/scan1", "/data/Doe^Jane"],
                                                  "labels_csv": "/data/Smith^John/labels.csv"}})
    params = redacted_params(cfg)
    assert params["data.sources"] == "<2 path(s), redacted>"
    assert params["data.labels_csv"] == "<1 path(s), redacted>"
    assert not any("Smith" in v or "Doe" in v for v in params.values())
    assert params["data.gaze_csv"] == "None"


def test_rank_from_launcher_environment(monkeypatch):
    from usssl.config import PipelineConfig
    from usssl.engine.tracking import Tracker
    from usssl.engine.distributed import launcher_rank, rank

    monkeypatch.setenv("RANK", "3")
    assert launcher_rank() == 3 and rank() == 0  # the loss offset never trusts the environment
    assert not Tracker(PipelineConfig()).enabled  # only rank 0 logs
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert launcher_rank() == 1


def test_tracker_leaves_the_environment_alone_and_logged_config_loads_back(tmp_path, monkeypatch):
    from usssl.config import PipelineConfig, load_config, to_yaml
    from usssl.engine.tracking import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = PipelineConfig.model_validate(tiny_raw(tmp_path / "a"))
    Tracker(cfg)
    assert "MLFLOW_TRACKING_URI" not in os.environ  # a second pipeline in this process keeps its own store
    other = PipelineConfig.model_validate(tiny_raw(tmp_path / "b"))
    assert other.tracking_uri.endswith(str(tmp_path / "b" / "mlflow.db"))
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


def test_every_path_is_redacted_from_the_logged_config_yaml(tmp_path):
    import yaml

    from usssl.config import PipelineConfig, to_yaml

    secret = "Smith^John"
    cfg = PipelineConfig.model_validate({
        "output_dir": f"/runs/{secret}", "tracking": {"uri": f"sqlite:////data/{secret}/mlflow.db"},
        "data": {"sources": [f"/data/{secret}/a", "/data/b"], "labels_csv": f"/data/{secret}/labels.csv",
                 "gaze_csv": f"/data/{secret}/gaze.csv", "subjects_csv": f"/data/{secret}/subjects.csv",
                 "cache_dir": f"/cache/{secret}"},
        "stages": [{"pretrain": {"speech": {"encoder": "wav2vec2", "pretrained_path": f"/models/{secret}"}}}]})
    text = to_yaml(cfg, redact=True)
    assert secret not in text and "/data" not in text
    raw = yaml.safe_load(text)
    assert raw["data"]["sources"] == ["<redacted path>", "<redacted path>"]  # the count stays visible
    assert raw["data"]["gaze_csv"] == raw["output_dir"] == "<redacted path>"
    assert raw["stages"][0]["pretrain"]["speech"]["pretrained_path"] == "<redacted path>"
    assert raw["data"]["synth"]["subjects"] == 12  # everything else is kept
    assert PipelineConfig.model_validate(raw).data.sources == ["<redacted path>", "<redacted path>"]  # loads back
    assert secret in to_yaml(cfg)  # unredacted only when asked (the run's own files)

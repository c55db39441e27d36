"""The notebooks in notebooks/ run top to bottom at tiny settings, without Jupyter.

Each notebook's code cells are executed in order in one namespace with ``exec``; right after the
cell tagged ``parameters`` (the papermill convention) the test's overrides are put into that
namespace, as papermill would inject them. The notebooks expose what they produce as variables,
and the tests assert on those.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = ["01_quickstart.ipynb", "02_your_own_dicoms.ipynb", "03_embeddings.ipynb"]


def _load(name: str) -> dict:
    return json.loads((NOTEBOOKS / name).read_text())


def _is_parameters(cell: dict) -> bool:
    return cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", [])


def run_notebook(name: str, overrides: dict, monkeypatch, cwd: Path = REPO) -> dict:
    """Execute ``name``'s code cells in one namespace from ``cwd``; ``overrides`` follow the
    parameters cell. Returns the namespace."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(cwd)
    monkeypatch.setenv("USSSL_SUBJECT_KEY", os.environ.get("USSSL_SUBJECT_KEY", "usssl-test-key"))
    # mlflow.set_tracking_uri (called by every pipeline run) exports MLFLOW_TRACKING_URI, which would
    # send this notebook's runs into an earlier run's store: start clean and restore afterwards.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    usssl_log = logging.getLogger("usssl")
    level = usssl_log.level
    namespace: dict = {"__name__": "__main__"}
    try:
        for i, cell in enumerate(_load(name)["cells"]):
            if cell["cell_type"] != "code":
                continue
            exec(compile("".join(cell["source"]), f"{name}, cell {i}", "exec"), namespace)  # noqa: S102
            if _is_parameters(cell):
                namespace.update(overrides)
    finally:
        plt.close("all")
        usssl_log.setLevel(level)
    return namespace


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_clean_and_parametrised(name):
    nb = _load(name)
    assert nb["nbformat"] == 4
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown" and "How long" in "".join(cells[0]["source"])
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), "clear the outputs"
    assert [_is_parameters(c) for c in code].count(True) == 1 and _is_parameters(code[0])
    knobs = "".join(code[0]["source"])
    assert "TINY = False" in knobs
    markdown = [c for c in cells if c["cell_type"] == "markdown"]
    assert len(markdown) >= len(code) // 2, "narrative between the steps"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*non-interactive:UserWarning")
def test_quickstart(tmp_path, monkeypatch):
    out = tmp_path / "quickstart"
    ns = run_notebook("01_quickstart.ipynb", {"TINY": True, "OUTPUT_DIR": str(out)}, monkeypatch)
    assert ns["cfg"].output_dir == str(out) and ns["cfg"].stage("pretrain").max_epochs == 1
    assert "macro F1" in ns["report"] and "video_speech" in ns["report"]
    assert "Gaze saliency" in ns["report"] and len(ns["overlays"]) == 2
    assert ns["efficiency_png"].is_file() and ns["confusion_png"].is_file()
    results = ns["results"]
    assert set(results["init"]) == {"random", "video_speech"} and set(results["protocol"]) == {"linear", "finetune"}
    assert sorted(set(results["label_fraction"])) == [0.5, 1.0] and results["f1"].between(0, 1).all()
    assert ns["mlflow_command"] == f"mlflow ui --backend-store-uri sqlite:///{out / 'mlflow.db'} --workers 1"
    runs = ns["runs_table"]
    assert (runs["status"] == "FINISHED").all()
    assert sorted(runs["run"]) == sorted([ns["cfg"].name, *(s.kind for s in ns["cfg"].stages)])
    assert all(path.exists() for path in ns["outputs"].values()), ns["outputs"]


@pytest.mark.filterwarnings("ignore:.*non-interactive:UserWarning")
def test_your_own_dicoms_from_the_notebooks_folder(tmp_path, monkeypatch):
    import pydicom

    out = tmp_path / "dicoms"
    ns = run_notebook("02_your_own_dicoms.ipynb", {"TINY": True, "OUTPUT_DIR": str(out)}, monkeypatch,
                      cwd=NOTEBOOKS)
    assert ns["USING_EXAMPLES"] and len(ns["recordings"]) == 3
    assert (ns["summary"].n_ok, ns["summary"].n_skipped) == (3, 0)
    assert list(ns["ingest_report"]["status"]) == ["ok"] * 3
    assert "## De-identification applied" in ns["data_card"] and "cine_ybr" not in ns["data_card"]
    assert ns["n_frames_shown"] == 3 and ns["cache"].settings["size"] == [32, 32]
    # de-identified copies: the patient names are gone from the headers and the files
    assert ns["deid_report"].count("ok") == 3 and set(ns["patient_names_after"].values()) == {""}
    names = ns["deid_check"].query("field == 'PatientName'")
    assert set(names["before"]) == {"PLA", "OB^^^^", "CompressedSamples^US1"} and set(names["after"]) == {"(empty)"}
    for copy in (out / "deidentified").rglob("*.dcm"):
        data = copy.read_bytes()
        assert b"CompressedSamples" not in data and b"OB^^^^" not in data
        assert str(pydicom.dcmread(copy).PatientName) == ""
    # the tables: two files declared one patient, the cine loop labelled
    assert ns["cache"].index["subject"].nunique() == 3 and ns["n_subjects_with_tables"] == 2
    labelled = ns["labelled_cache"]
    assert labelled.classes == ["background", "3vt", "4ch"] and labelled.index["n_labelled"].sum() == 15
    my_cfg = ns["my_cfg"]
    assert my_cfg.data.sources == [str(out / "example_dicoms")]
    assert my_cfg.data.labels_csv == str(out / "tables" / "labels.csv")
    assert my_cfg.data.subjects_csv == str(out / "tables" / "subjects.csv")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*non-interactive:UserWarning")
def test_embeddings_of_the_tiny_run(tiny_run, tmp_path, monkeypatch):
    cfg, result = tiny_run
    ns = run_notebook("03_embeddings.ipynb", {"TINY": True, "RUN_DIR": cfg.output_dir,
                                              "FALLBACK_DIR": str(tmp_path / "unused")}, monkeypatch)
    assert not ns["ran_own_pipeline"] and not (tmp_path / "unused").exists()
    assert ns["cfg"].cache_dir == cfg.cache_dir
    if result["tracking_uri"] == f"sqlite:///{Path(cfg.output_dir).resolve() / 'mlflow.db'}":
        assert Path(cfg.output_dir) in ns["config_source"].parents and ns["cfg"].name == cfg.name
    n = len(ns["test_labels"])
    assert n > 0 and set(ns["projections"]) == set(ns["encoders"]) and len(ns["encoders"]) == 2
    for label, xy in ns["projections"].items():
        assert xy.shape == (n, 2)
        assert 0 < ns["shown_variance"][label] <= 1
    assert all(0 <= score <= 1 for score in ns["scores"].values())
    dim = ns["encoder_cfg"].dim
    assert all(f["test"].shape == (n, dim) for f in ns["features"].values())


@pytest.mark.filterwarnings("ignore:.*non-interactive:UserWarning")
def test_embeddings_without_a_run_falls_back_to_a_tiny_pipeline(tiny_run, tmp_path, monkeypatch):
    """RUN_DIR missing: the notebook says so and runs its own pipeline in FALLBACK_DIR (resumed here
    from a copy of the session's tiny run, so no training happens in this test)."""
    cfg, _ = tiny_run
    fallback = tmp_path / "fallback"
    shutil.copytree(cfg.output_dir, fallback, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    ns = run_notebook("03_embeddings.ipynb", {"TINY": True, "RUN_DIR": str(tmp_path / "missing"),
                                              "FALLBACK_DIR": str(fallback)}, monkeypatch)
    assert ns["ran_own_pipeline"] and ns["run_dir"] == fallback
    assert ns["cfg"].cache_dir == fallback / "cache" and fallback in ns["config_source"].parents
    assert [s.kind for s in ns["cfg"].stages] == ["ingest", "pretrain"] and ns["projections"]

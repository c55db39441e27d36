"""No planted identifier leaves usssl: PHI-laden inputs (file and folder names, side tables, DICOM
headers, burned-in text outside the fan) through ingest, a pipeline with MLflow tracking, export and
predict; every output file is searched for every planted string.

By design two files name the sources and never leave the cache folder / the data manager: the
ingest report (``ingest_report.csv``, mode 0600) and predict's ``--report``; they are the only files
allowed to hold a planted path, and are checked for their mode instead.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
import fixtures_dicom as fxd  # noqa: E402
import fixtures_video as fx  # noqa: E402

NAMES = ["Quixote^Zebulon", "Marchbanks^Philippa", "Ottoline^Barnaby"]
IDS = ["MRN90817263", "MRN55443322", "MRN11223344"]
PLANTED = ["Quixote", "Zebulon", "Marchbanks", "Philippa", "Ottoline", "Barnaby", "90817263", "55443322",
           "11223344", "St Wilfrida", "Dr Hollyhock"]


def _phi_inputs(root: Path) -> dict:
    """The fixture corpus, renamed after its patients, in a folder named after one, plus a DICOM."""
    corpus = fx.make_corpus(root, n_subjects=3)
    stems = {f"scan_{i:03d}": f"{NAMES[i].replace('^', '_')}_{IDS[i]}" for i in range(3)}
    for old, new in stems.items():
        (root / "videos" / f"{old}.mp4").rename(root / "videos" / f"{new}.mp4")
    for name in ("labels", "gaze", "subjects"):
        table = pd.read_csv(root / f"{name}.csv")
        table["video"] = table["video"].map(stems)
        if name == "subjects":
            table["patient_id"], table["patient_name"] = IDS, NAMES
        table.to_csv(root / f"{name}.csv", index=False)
    frames = fx.render(20, seed=7, text="QUIXOTE ZEBULON")  # burned-in name below the fan
    fxd.write_dicom(root / "dicom" / f"{NAMES[0].replace('^', '_')}.dcm", frames, PatientName=NAMES[0],
                    PatientID=IDS[0], InstitutionName="St Wilfrida Infirmary", ReferringPhysicianName="Dr Hollyhock",
                    regions=[fxd.region(fx.fan_box())])
    return corpus


def _leaks(folder: Path, allowed: set[str] = frozenset()) -> list[str]:
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if any(s.lower() in rel.lower() for s in PLANTED):
            found.append(f"file name {rel}")
        if path.name in allowed:
            continue
        data = path.read_bytes().lower()
        found += [f"{rel}: {s}" for s in PLANTED if s.lower().encode() in data]
    return found


@pytest.mark.slow
def test_no_planted_identifier_reaches_any_output(tmp_path, monkeypatch, caplog):
    from usssl.config import PipelineConfig
    from usssl.downstream.predict import predict_files
    from usssl.pipeline import run_pipeline

    monkeypatch.setenv("USSSL_SUBJECT_KEY", "privacy-suite-key")
    src = tmp_path / "Quixote_Zebulon_MRN90817263" / "export"
    _phi_inputs(src)
    out = tmp_path / "out"
    raw = {"name": "privacy", "output_dir": str(out), "seed": 0, "trainer": {"progress": False},
           "data": {"sources": [str(src)], "labels_csv": str(src / "labels.csv"), "gaze_csv": str(src / "gaze.csv"),
                    "subjects_csv": str(src / "subjects.csv"), "subject_per_recording": True},  # the DICOM: its header
           "stages": [{"ingest": {"size": [32, 32], "fps": 15, "workers": 1, "split": {"test": 0.34}}},
                      {"pretrain": {"method": "order_transform", "encoder": {"width": 4, "dim": 16}, "max_epochs": 1,
                                    "batch_size": 8, "pairs_per_epoch": 16,
                                    "order_transform": {"clip_frames": 4, "frame_stride": 2}}},
                      {"finetune": {"protocols": ["linear"], "label_fractions": [1.0], "linear_epochs": 10,
                                    "val_fraction": 0.5}},
                      {"evaluate": {"bootstrap": 20, "paper_reference": False}},
                      {"export": {"refit": False, "saliency": False}}]}
    with caplog.at_level(logging.DEBUG):
        run_pipeline(PipelineConfig.model_validate(raw))
        pred = tmp_path / "pred"
        summary = predict_files(out / "export", [src], pred, every=0, report=tmp_path / "predict-map.csv")
    assert summary.n_ok == 4  # three videos and the DICOM
    assert (out / "mlflow.db").is_file() and any((out / "mlartifacts").rglob("config.yaml"))
    assert _leaks(out, allowed={"ingest_report.csv"}) == []
    assert _leaks(pred) == []
    assert [s for s in PLANTED if s.lower() in caplog.text.lower()] == []  # nothing in the logs either
    report = out / "cache" / "ingest_report.csv"
    assert os.stat(report).st_mode & 0o777 == 0o600 and "Quixote_Zebulon" in report.read_text()
    assert os.stat(tmp_path / "predict-map.csv").st_mode & 0o777 == 0o600
    shard_frames = [np.load(p) for p in (out / "cache" / "shards").rglob("frames.npy")]
    assert len(shard_frames) == 4 and all(f.shape[1:] == (32, 32) for f in shard_frames)

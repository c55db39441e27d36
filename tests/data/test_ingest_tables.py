"""The subject and label tables must match the recordings (issue 13): a recording without a
subjects row, a label row naming no recording, a class in too few subjects, and one label per
recording (``recording, label``)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_video as fx  # noqa: E402

from usssl.config import IngestConfig  # noqa: E402
from usssl.data.cache import UNMATCHED_FILE, Cache  # noqa: E402
from usssl.data.ingest import ingest  # noqa: E402
from usssl.data.splits import class_subject_counts, thin_classes  # noqa: E402
from usssl.errors import DataError  # noqa: E402
from usssl.io.tables import load_tables  # noqa: E402

CFG = IngestConfig(size=(32, 32), fps=10, workers=1, audio=False, split={"test": 0.34, "val": 0.0})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables") / "SRC"
    fx.make_corpus(root, n_subjects=3, seconds=1.0)
    return root


def _copy(corpus: Path, tmp_path: Path) -> Path:
    src = tmp_path / "SRC"
    shutil.copytree(corpus, src)
    return src


def test_a_recording_without_a_subjects_row_is_an_error_unless_asked(corpus, tmp_path):
    src = _copy(corpus, tmp_path)
    shutil.copy(src / "videos" / "scan_000.mp4", src / "videos" / "extra_scan.mp4")
    frames = fx.render(10, seed=11)
    fx.write_video(src / "videos" / "extra_scan.mp4", frames)  # other frames: not a copy of a listed scan
    with pytest.raises(DataError, match=r"1 ingested recording\(s\) have no row in the subjects table, e.g. "
                                        r"'extra_scan'.*data.subject_per_recording: true"):
        ingest([src], tmp_path / "cache", CFG, progress=False)
    assert not (tmp_path / "cache" / "index.parquet").exists()  # no cache with a patient in two folds
    summary = ingest([src], tmp_path / "cache", CFG, progress=False, subject_per_recording=True)
    assert summary.n_ok == 4
    report = pd.read_csv(summary.report_path).set_index("source")
    assert report.loc["videos/scan_000.mp4", "reason"] == "already cached"  # the first attempt's work was kept
    card = (tmp_path / "cache" / "DATA_CARD.md").read_text()
    assert "- Subjects from (recordings): one per recording: 1, subjects table: 3" in card
    assert Cache(tmp_path / "cache").index["subject"].nunique() == 4


def test_a_copy_of_a_listed_recording_needs_no_row(corpus, tmp_path):
    src = _copy(corpus, tmp_path)
    shutil.copy(src / "videos" / "scan_001.mp4", src / "copy_of_scan.mp4")  # the same frames: cached once
    summary = ingest([src], tmp_path / "cache", CFG, progress=False)
    assert (summary.n_ok, summary.n_duplicates) == (3, 1)


def test_label_rows_naming_no_recording_are_an_error_or_a_report(corpus, tmp_path, caplog):
    src = _copy(corpus, tmp_path)
    labels = pd.read_csv(src / "labels.csv")
    extra = labels[labels["video"] == "scan_002"].assign(video="scan_0O2")  # a typo: letter O for zero
    pd.concat([labels, extra]).to_csv(src / "labels.csv", index=False)
    with pytest.raises(DataError, match=r"1 labels-table row group\(s\) name no recording .*'scan_0O2'.*"
                                        r"allow_unmatched_labels"):
        ingest([src], tmp_path / "cache", CFG, progress=False)
    assert not (tmp_path / "cache").exists()  # refused before anything was written
    with caplog.at_level(logging.WARNING, logger="usssl"):
        ingest([src], tmp_path / "cache", CFG, progress=False, allow_unmatched_labels=True)
    assert any("'scan_0O2'" in r.getMessage() and "left out" in r.getMessage() for r in caplog.records)
    listed = tmp_path / "cache" / UNMATCHED_FILE
    assert pd.read_csv(listed).to_dict("records") == [{"table": "labels", "video": "scan_0O2"}]
    assert os.stat(listed).st_mode & 0o777 == 0o600  # it names files: for the data manager only
    assert "- 1 label/gaze table row group(s) named no recording and were left out" in (
        tmp_path / "cache" / "DATA_CARD.md").read_text()


def test_class_subject_counts_and_thin_classes_by_hand():
    classes = ["background", "head", "heart", "femur"]
    labels = [("s1", [0, 1, 1, -1]), ("s2", [1, 2]), ("s1", [2, 2]), ("s3", [-1, -1])]
    counts = class_subject_counts(labels, classes)
    assert counts == {"head": 2, "heart": 2, "femur": 0}
    assert thin_classes(counts, 3) == {"head": 2, "heart": 2}  # femur is never labelled: not "thin"
    assert thin_classes(counts, 2) == {}


def test_a_class_in_fewer_subjects_than_folds_is_named_at_ingest(corpus, tmp_path, caplog):
    src = _copy(corpus, tmp_path)
    labels = pd.read_csv(src / "labels.csv")
    labels.loc[(labels["video"] != "scan_000") & (labels["plane"] == fx.PLANES[2]), "plane"] = fx.PLANES[1]
    labels.to_csv(src / "labels.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="usssl"):
        ingest([src], tmp_path / "cache", CFG, progress=False, min_subjects_per_class=3)
    said = [r.getMessage() for r in caplog.records if "fewer than 3 subjects" in r.getMessage()]
    assert len(said) == 1 and f"'{fx.PLANES[2]}' (1 subject)" in said[0] and "at ingest" in said[0]

    from usssl.config import PipelineConfig
    from usssl.stages.ingest import check_cache_classes

    cfg = PipelineConfig.model_validate({"name": "t", "output_dir": str(tmp_path / "run"),
                                         "data": {"cache_dir": str(tmp_path / "cache")},
                                         "stages": [{"finetune": {"cv": "kfold", "folds": 3}}]})  # fmt: skip
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="usssl"):
        checked = check_cache_classes(cfg)  # what `usssl validate` adds to its checks
    assert checked == f"classes: {fx.PLANES[2]} labelled in fewer than 3 subjects (see the warning)"
    assert any("validate: class(es)" in r.getMessage() for r in caplog.records)


def test_one_label_per_recording(corpus, tmp_path):
    src = _copy(corpus, tmp_path)
    (src / "labels.csv").unlink()
    (src / "gaze.csv").unlink()
    pd.DataFrame({"recording": ["scan_000.mp4", "scan_001", "scan_002"],
                  "label": ["covid", "regular", "covid"]}).to_csv(tmp_path / "diagnoses.csv", index=False)
    tables = load_tables([src], labels_csv=tmp_path / "diagnoses.csv", extensions=frozenset({".mp4"}))
    assert tables.label_level == "recording" and tables.classes == ["background", "covid", "regular"]
    ingest([src], tmp_path / "cache", CFG, progress=False, labels_csv=tmp_path / "diagnoses.csv")
    cache = Cache(tmp_path / "cache")
    assert json.loads((tmp_path / "cache" / "cache.json").read_text())["label_level"] == "recording"
    by_subject = {}
    for shard in cache.shard_ids():
        sh = cache.shard(shard)
        assert (sh.labels == sh.labels[0]).all() and sh.labels[0] >= 0  # every frame carries the diagnosis
        by_subject[sh.subject] = int(sh.labels[0])
    assert sorted(by_subject.values()) == [1, 1, 2]
    assert "- Labels: one per recording" in (tmp_path / "cache" / "DATA_CARD.md").read_text()


def test_a_recording_label_table_rejects_two_labels_for_one_recording(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"recording": ["a", "a"], "label": ["covid", "regular"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"recording\(s\) \['a'\] have more than one row"):
        load_tables([], labels_csv=path)


def test_a_negative_frame_number_is_an_error(tmp_path):
    path = tmp_path / "labels.csv"
    pd.DataFrame({"video": ["a"], "frame": [-1], "plane": ["head"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="column 'frame' must hold frame numbers"):
        load_tables([], labels_csv=path)

"""DATA_CARD.md written by every ingest: counts, settings, labels, de-identification, no names."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_video as fx  # noqa: E402

from usssl.config import IngestConfig  # noqa: E402
from usssl.data.cache import Cache  # noqa: E402
from usssl.data.datacard import data_card  # noqa: E402
from usssl.data.ingest import ingest  # noqa: E402

TEMPLATE = Path(__file__).resolve().parents[2] / "data_cards" / "TEMPLATE.md"


@pytest.fixture()
def carded(tmp_path, monkeypatch):
    monkeypatch.setenv("USSSL_SUBJECT_KEY", "card-key")
    corpus = fx.make_corpus(tmp_path / "SRC", n_subjects=3)
    (tmp_path / "SRC" / "videos" / "broken.mp4").write_bytes(b"\x00" * 100)
    cfg = IngestConfig(size=(32, 32), fps=15, workers=1)
    summary = ingest([tmp_path / "SRC"], tmp_path / "cache", cfg, progress=False)
    return corpus, summary, (tmp_path / "cache" / "DATA_CARD.md").read_text()


def test_card_counts_settings_and_labels(carded):
    corpus, summary, card = carded
    cache = Cache(summary.cache_dir)
    assert card == data_card(summary.cache_dir)  # reproducible from the cache folder alone
    assert ("- Recordings: 3 ingested, 1 input file(s) not ingested: 1 failed (unreadable, unsupported or "
            "refused; 0 refused for burned-in annotation without an imaging region), 0 skipped") in card
    assert "- Subjects: 3 in total" in card
    for split in ("train", "val", "test"):
        part = cache.index[cache.index["split"] == split]
        assert f"  - {split}: {part['subject'].nunique()} subjects, {len(part)} recordings, " \
               f"{int(part['n_frames'].sum())} frames" in card  # fmt: skip
    assert f"- Frames: 90 cached ({90 / 15 / 3600:.3f} hours at the cached rate)" in card
    assert "- Sources by format: mp4: 3" in card
    assert "- Cached frame rate: 15.0 fps; source fps (min / median / max): 30 / 30 / 30" in card
    assert "- Cached frame size (height, width): [32, 32]" in card and "source width: 96 / 96 / 96" in card
    assert "- Audio kept: yes (16000 Hz mono; 3 recording(s) with narration" in card
    assert "- Pixel spacing known for 0 recording(s)" in card
    n_speech = int(cache.index["has_speech"].sum())
    assert f"- Speech coverage: {n_speech} of 3 recording(s) with speech" in card and "3 with an audio track" in card
    assert "- Source frame rates (fps: recordings): 30: 3" in card
    assert "- Source frame sizes (height x width: recordings): 96 x 96: 3" in card
    assert "- DICOM headers (0 recording(s))" in card and "- Narration: kept" in card
    labels = np.concatenate([cache.shard(s).labels for s in cache.shard_ids()])
    rows = re.findall(r"^\| (\S+) \| (\d+) \| (\d*) \|$", card, flags=re.M)
    table = {name: frames for name, frames, _ in rows}
    subjects = {name: int(n) for name, _, n in rows if n}  # subjects with a frame of the class
    assert subjects == {name: len({cache.shard(s).subject for s in cache.shard_ids() if (cache.shard(s).labels == i).any()})
                        for i, name in enumerate(fx.PLANES) if name != "background"}  # fmt: skip
    assert "- Subjects from (recordings): subjects table: 3" in card and "- Labels: per frame" in card
    assert {k: int(v) for k, v in table.items()} == {
        name: int((labels == i).sum()) for i, name in enumerate(fx.PLANES)} | {"(unlabelled)": 0}  # fmt: skip
    assert sum(int(v) for v in table.values()) == 90
    assert "## De-identification applied" in card and "## To fill in by the data manager" in card
    assert "- DICOMs with BurnedInAnnotation YES and no imaging region refused: 0." in card


def test_card_names_no_file_and_no_patient(carded):
    corpus, summary, card = carded
    secrets = [*corpus["subjects"]["patient_id"], *corpus["subjects"]["patient_name"], "scan_0", "broken",
               str(summary.cache_dir.parent)]  # fmt: skip
    for secret in secrets:
        assert secret not in card
    report = pd.read_csv(summary.report_path)
    assert "videos/broken.mp4" in set(report["source"])  # the report (only) names the file


def test_template_has_the_sections_a_group_fills_in():
    text = TEMPLATE.read_text()
    for heading in ("## Summary", "## Collection", "## Subjects and recordings", "## Labels",
                    "## De-identification", "## Splits", "## Licence and access", "## Known issues"):
        assert heading in text, heading
    assert "usssl ingest" in text and "DATA_CARD.md" in text

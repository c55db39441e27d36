"""HC18 stills through ingest (skipped when ../shared/realdata is absent): one frame per image, the head
annotation cached as the anatomy mask, annotation files never ingested as recordings."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from usssl.config import IngestConfig
from usssl.data.cache import Cache
from usssl.data.ingest import ingest

HC18 = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "hc18_fetal_head" / "training_set"
STEMS = ("000_HC", "082_2HC", "643_HC")  # smallest head, a "_2HC" name, largest head

pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not HC18.is_dir(), reason=f"{HC18} absent (../shared/realdata is not on this machine)")]


def test_hc18_images_and_head_masks(tmp_path, monkeypatch):
    monkeypatch.setenv("USSSL_SUBJECT_KEY", "hc18-key")
    src = tmp_path / "hc18"
    src.mkdir()
    for stem in STEMS:  # a copy: realdata is read-only, and three images are enough
        for name in (f"{stem}.png", f"{stem}_Annotation.png"):
            shutil.copy(HC18 / name, src / name)
    ingest([src], tmp_path / "cache", IngestConfig(size=(54, 80), fps=10, workers=1), progress=False,
           subject_per_recording=True, min_subjects_per_class=0)
    cache = Cache(tmp_path / "cache")
    report = pd.read_csv(cache.root / "ingest_report.csv").set_index("source")
    assert sorted(report.index) == [f"{s}.png" for s in STEMS] and (report["status"] == "ok").all()
    assert (report["cached_frames"] == 1).all()
    for stem in STEMS:
        shard = cache.shard(report.loc[f"{stem}.png", "shard"])
        assert shard.frames.shape == shard.masks.shape == (1, 54, 80)
        truth = cv2.imread(str(HC18 / f"{stem}_Annotation.png"), cv2.IMREAD_GRAYSCALE) > 0  # (540, 800), filled
        assert shard.masks.mean() == pytest.approx(truth.mean(), abs=0.01)  # the head's share, after the resize
        assert shard.masks[0, 27, 40] == int(truth[270, 400])  # the centre pixel agrees
        assert np.array_equal(shard.region_mask, np.ones((54, 80), np.uint8))  # a still: the whole image

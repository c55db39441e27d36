"""Stills through ingest: one cached frame per PNG/JPEG and per 1-frame DICOM, the mask image beside
each cropped and resized like the frame, mask images never ingested as recordings."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
import fixtures_dicom as fd  # noqa: E402

from usssl.config import IngestConfig  # noqa: E402
from usssl.data.cache import Cache  # noqa: E402
from usssl.data.frames import kept_frames  # noqa: E402
from usssl.data.ingest import ingest  # noqa: E402

CFG = IngestConfig(size=(24, 32), fps=10, workers=1, crop="none")


def _image(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth picture (no edges that look like text) with a bright block."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = (40 + xx + yy // 2 + 7 * seed).astype(np.uint8)
    image[8:24, 16:48] += 100
    return image


def test_one_frame_recording_keeps_one_frame_whatever_the_rate():
    assert kept_frames(np.zeros(1), 10.0, 1.0).tolist() == [0]  # was 10 copies of the frame
    assert kept_frames(np.arange(3) / 1.0, 2.0, 1.0).tolist() == [0, 0, 1, 1, 2, 2]  # cines unchanged


def test_stills_with_masks_and_a_one_frame_dicom(tmp_path, monkeypatch):
    monkeypatch.setenv("USSSL_SUBJECT_KEY", "stills-key")
    src = tmp_path / "src"
    src.mkdir()
    outline = np.zeros((48, 64), np.uint8)
    cv2.rectangle(outline, (16, 8), (47, 23), 255, 1)  # the block's outline, filled when read
    for k in range(3):
        cv2.imwrite(str(src / f"img{k}.png"), _image(k))
    cv2.imwrite(str(src / "img0_mask.png"), outline)
    cv2.imwrite(str(src / "img1_Annotation.png"), np.stack([outline] * 3, -1))
    fd.write_dicom(src / "one.dcm", _image(5)[None], FrameTime=1000.0)  # 1 frame at a stated 1 fps
    ingest([src], tmp_path / "cache", CFG, progress=False, subject_per_recording=True, min_subjects_per_class=0)
    cache = Cache(tmp_path / "cache")
    report = pd.read_csv(cache.root / "ingest_report.csv").set_index("source")
    assert sorted(report.index) == ["img0.png", "img1.png", "img2.png", "one.dcm"]  # no mask as a recording
    assert (report["status"] == "ok").all() and (report["cached_frames"] == 1).all()
    expected = np.zeros((24, 32), np.uint8)
    expected[4:12, 8:24] = 1  # rows 8-23, columns 16-47 halved (nearest)
    for name in ("img0.png", "img1.png"):
        shard = cache.shard(report.loc[name, "shard"])
        assert shard.masks.shape == (1, 24, 32) and np.array_equal(shard.masks[0], expected)
        assert shard.region_mask.tolist() == np.ones((24, 32), np.uint8).tolist()  # crop none: the whole image
    k = 0
    assert np.array_equal(cache.shard(report.loc["img0.png", "shard"]).frames[0],
                          cv2.resize(_image(k), (32, 24), interpolation=cv2.INTER_AREA))  # frames as before
    assert cache.shard(report.loc["img2.png", "shard"]).masks is None
    assert len(cache.shard(report.loc["one.dcm", "shard"])) == 1

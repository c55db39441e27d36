"""``usssl predict``: a synthetic MP4 and a real DICOM through a tiny export; bad input; privacy; CLI."""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from usssl.config import EncoderConfig
from usssl.downstream.export import PreprocessingSpec, export_model
from usssl.downstream.plane_detection import PlaneClassifier
from usssl.errors import ConfigError
from usssl.models.encoders import build_encoder
from usssl.cli import add_predict_parser as add_parser
from usssl.cli import cmd_predict
from usssl.data.clips import anchored_clip_indices as clip_indices
from usssl.downstream.predict import predict_files, prepare_frames
from usssl.downstream.predict_outputs import map_to_source
from usssl.privacy.region import map_points

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
REAL_DICOM = REALDATA / "dicom_us" / "orthanc-tests" / "Issue16.dcm"  # 34 frames, 430 x 480, US region
CLASSES = ["background", "4ch", "abdomen"]
FPS, SECONDS = 10.0, 2.0  # export rate; synthetic scan length


class TinySaliency(nn.Module):
    """Stand-in saliency model: video (B, 1, T, H, W) -> (B, H, W) softmax map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.conv(video.mean(dim=2))[:, 0]
        b, h, w = x.shape
        return torch.softmax(x.reshape(b, h * w), dim=1).reshape(b, h, w)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    classifier = PlaneClassifier(build_encoder(EncoderConfig(name="tiny2d", width=4, dim=8)), len(CLASSES))
    spec = PreprocessingSpec(class_names=CLASSES, size=(32, 32), fps=FPS, clip_frames=2, pipeline="tiny")
    return export_model(classifier, tmp_path_factory.mktemp("export") / "model", spec, saliency=TinySaliency())


@pytest.fixture(scope="module")
def mp4(tmp_path_factory) -> Path:
    from usssl.data.synth import generate

    root = generate(tmp_path_factory.mktemp("synth"), subjects=2, duration_s=SECONDS, fps=30, size=(96, 96),
                    write_dicom=False, workers=1)  # fmt: skip  (two subjects: ingest's split needs them)
    return sorted((root / "videos").glob("*.mp4"))[0]


@pytest.fixture(scope="module")
def mp4_run(model_dir, mp4, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred") / "out"
    return predict_files(model_dir, [mp4], out, every=4, batch_size=7), out / "input-001"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_clip_indices_repeat_the_edges():
    assert clip_indices(4, 3, "end").tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]]
    assert clip_indices(4, 3, "centre").tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert clip_indices(3, 1).tolist() == [[0], [1], [2]]


def test_map_to_source_inverts_map_points():
    box, size = (10, 20, 110, 70), (25, 50)  # 100 x 50 crop shown as a 50 x 25 map
    src = np.array([[10.0, 20.0], [59.5, 44.5], [109.0, 69.0]])
    np.testing.assert_allclose(map_to_source(map_points(src, box, size), size, box), src, atol=1e-4)
    np.testing.assert_allclose(map_to_source(np.array([0.0, 0.0]), size, box), [10.5, 20.5])


def test_frames_equal_the_ingested_cache(model_dir, mp4, tmp_path):
    """The preparation is ingest's: same crop, resampling, resize and grey levels, frame for frame."""
    from usssl.config import IngestConfig
    from usssl.data.cache import Cache
    from usssl.data.ingest import ingest

    spec = json.loads((model_dir / "preprocessing.json").read_text())
    prep = prepare_frames(mp4, spec["input"])
    cfg = IngestConfig(size=(32, 32), fps=FPS, audio=False, workers=1)
    ingest(sorted(mp4.parent.glob("*.mp4")), tmp_path / "cache", cfg, progress=False)
    cache = Cache(tmp_path / "cache")
    report = {Path(r["source"]).name: r["shard"] for r in _rows(cache.root / "ingest_report.csv")}
    shard = cache.shard(report[mp4.name])
    assert prep.frames.shape == (round(SECONDS * FPS), 32, 32)
    np.testing.assert_array_equal(prep.frames, np.asarray(shard.frames))
    info = json.loads((cache.root / "shards" / shard.id / "shard.json").read_text())
    assert prep.crop_method == "motion" and list(prep.box) == info["crop_box"]


def test_synthetic_mp4_outputs(mp4_run):
    summary, folder = mp4_run
    assert summary.n_ok == 1 and summary.rows[0]["status"] == "ok"
    n = round(SECONDS * FPS)  # 30 fps source resampled to 10 fps
    planes = _rows(folder / "planes.csv")
    assert len(planes) == n
    assert list(planes[0]) == ["frame", "time_s", "source_frame", "p_background", "p_4ch", "p_abdomen",
                               "predicted", "probability"]  # fmt: skip
    for k, row in enumerate(planes):
        p = np.array([float(row[f"p_{c}"]) for c in CLASSES])
        assert p.sum() == pytest.approx(1.0, abs=1e-5)
        assert row["predicted"] == CLASSES[int(p.argmax())] and float(row["probability"]) == pytest.approx(p.max())
        assert float(row["time_s"]) == pytest.approx(k / FPS) and int(row["source_frame"]) == 3 * k
    sal = _rows(folder / "saliency.csv")
    assert len(sal) == n
    pngs = sorted((folder / "saliency").glob("*.png"))
    assert [p.name for p in pngs] == [f"frame-{k:06d}.png" for k in range(0, n, 4)]
    assert [r["png"] for r in sal if r["png"]] == [f"saliency/{p.name}" for p in pngs]
    image = cv2.imread(str(pngs[0]))
    assert image.ndim == 3 and image.shape[2] == 3 and image.std() > 0
    for row in sal:  # peaks in source pixels of the 96 x 96 scan, entropy at most log2(32·32)
        assert 0 <= float(row["peak_x"]) < 96 and 0 <= float(row["peak_y"]) < 96
        assert 0 < float(row["entropy_bits"]) <= 10.0 + 1e-6
    info = json.loads((folder / "summary.json").read_text())
    assert info["n_frames"] == n and info["fps"] == FPS and info["source"]["n_frames"] == 60
    assert sum(info["predicted_frames"].values()) == n and info["saliency"]["n_png"] == len(pngs)
    assert "research use only" in info["disclaimer"].lower()


def test_peak_is_mapped_to_source_pixels(model_dir, mp4, tmp_path, monkeypatch):
    """A saliency model that always peaks at map pixel (x=24, y=8) gives that pixel's source centre."""
    import usssl.downstream.predict as predict

    real = predict.run_models

    def fixed_peak(model, frames, *args, **kwargs):
        out = real(model, frames, *args, **kwargs)
        out["peak"][:] = [24, 8]
        return out

    monkeypatch.setattr(predict, "run_models", fixed_peak)
    predict_files(model_dir, [mp4], tmp_path, every=0)
    info = json.loads((tmp_path / "input-001" / "summary.json").read_text())
    x0, y0, x1, y1 = info["crop_box"]
    row = _rows(tmp_path / "input-001" / "saliency.csv")[0]
    assert float(row["peak_x"]) == pytest.approx(x0 + 24.5 * (x1 - x0) / 32 - 0.5, abs=0.06)
    assert float(row["peak_y"]) == pytest.approx(y0 + 8.5 * (y1 - y0) / 32 - 0.5, abs=0.06)
    assert list((tmp_path / "input-001" / "saliency").glob("*.png")) == []  # every=0: no PNG


def test_bad_input_is_reported_and_skipped(model_dir, mp4, tmp_path, capsys):
    bad = tmp_path / "Doe^Jane.mp4"
    bad.write_bytes(b"")
    out = tmp_path / "out"
    parser = argparse.ArgumentParser(prog="usssl")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["predict", str(model_dir), str(bad), str(mp4), "--out", str(out), "--every", "0"])
    assert args.func(args) == 0  # one input succeeded
    printed = capsys.readouterr().out
    assert "Research use only, not for clinical decisions" in printed
    assert "input-001: failed" in printed and "input-002: ok" in printed
    run = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in run["inputs"]] == ["failed", "ok"] and run["n_ok"] == 1
    assert "research use only" in run["disclaimer"].lower()
    assert not (out / "input-001").exists() and (out / "input-002" / "planes.csv").is_file()
    assert "Doe" not in (out / "summary.json").read_text()  # the reason names input-001, not the file
    missing, text = tmp_path / "Roe^Richard.dcm", tmp_path / "notes.txt"
    text.write_text("not a scan")
    args = parser.parse_args(["predict", str(model_dir), str(bad), str(missing), str(text), "--out",
                              str(tmp_path / "none")])  # fmt: skip
    assert cmd_predict(args) == 1  # nothing succeeded
    printed = capsys.readouterr().out
    assert "Research use only" in printed and "input-002: failed (input-002: no such file)" in printed
    assert "input-003: failed" in printed and "Roe" not in printed


def test_keep_names_and_report(model_dir, mp4, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="outside --out"):
        predict_files(model_dir, [mp4], out, report=out / "map.csv")
    summary = predict_files(model_dir, [mp4, mp4], out, every=0, keep_names=True, report=tmp_path / "map.csv")
    assert [r["name"] for r in summary.rows] == [mp4.stem, f"{mp4.stem}-2"]
    assert (out / mp4.stem / "planes.csv").is_file() and (out / f"{mp4.stem}-2" / "planes.csv").is_file()
    assert [r["input"] for r in _rows(tmp_path / "map.csv")] == [str(mp4), str(mp4)]
    assert (tmp_path / "map.csv").stat().st_mode & 0o777 == 0o600  # it names the inputs


def test_parser_help_and_validation():
    parser = argparse.ArgumentParser(prog="usssl")
    sub = add_parser(parser.add_subparsers(dest="command"))
    text = sub.format_help()
    assert "MODEL_DIR" in text and "--every" in text and "--batch-size" in text and "example:" in text
    assert "usssl predict runs/demo/export" in text
    args = parser.parse_args(["predict", "m", "a.dcm", "b.mp4"])
    assert (args.out, args.every, args.batch_size, args.keep_names) == ("predictions", 10, 32, False)
    assert args.cam is False and parser.parse_args(["predict", "m", "a.dcm", "--cam"]).cam is True
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "m", "a.dcm", "--batch-size", "0"])


def test_import_stays_light():
    heavy = ("torch", "lightning", "mlflow", "cv2")
    code = f"import sys, usssl.cli, usssl.downstream.predict; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.realdata
def test_real_dicom_named_after_the_patient(model_dir, tmp_path):
    if not REAL_DICOM.is_file():
        pytest.skip(f"real DICOM data not available ({REAL_DICOM} absent)")
    import pydicom

    from usssl.io.dicom import read_dicom

    header = pydicom.dcmread(REAL_DICOM, stop_before_pixels=True)
    name_parts = [p for p in str(header.PatientName).split("^") if len(p) >= 3]
    assert name_parts, "the test needs a file with a patient name"
    src = tmp_path / "in" / f"{'_'.join(name_parts)}.dcm"  # DICOM files are often named after the patient
    src.parent.mkdir()
    shutil.copy(REAL_DICOM, src)
    out = tmp_path / "out"
    summary = predict_files(model_dir, [src.parent], out, every=5)
    assert summary.n_ok == 1, summary.rows
    folder = out / "input-001"
    frame_time_s = float(header.FrameTime) / 1000.0
    n = math.ceil(int(header.NumberOfFrames) * frame_time_s * FPS - 1e-6)
    planes = _rows(folder / "planes.csv")
    assert len(planes) == n
    for row in planes:
        assert sum(float(row[f"p_{c}"]) for c in CLASSES) == pytest.approx(1.0, abs=1e-5)
    info = json.loads((folder / "summary.json").read_text())
    assert info["crop_method"] == "ultrasound_region"
    assert info["crop_box"] == list(read_dicom(REAL_DICOM).meta["region_box"])
    x0, y0, x1, y1 = info["crop_box"]
    for row in _rows(folder / "saliency.csv"):
        assert x0 - 0.5 <= float(row["peak_x"]) < x1 and y0 - 0.5 <= float(row["peak_y"]) < y1
    assert len(list((folder / "saliency").glob("*.png"))) == len(range(0, n, 5))
    secrets = [p.lower() for p in name_parts] + [str(header.get("PatientID", "")).lower()]
    secrets = [s for s in secrets if len(s) >= 3]
    for path in out.rglob("*"):
        rel = str(path.relative_to(out)).lower()
        assert not any(s in rel for s in secrets), rel
        if path.is_file():
            content = path.read_bytes().lower()
            assert not any(s.encode() in content for s in secrets), path
    header_values = {str(header.get(k, "")) for k in ("Manufacturer", "StudyDate", "InstitutionName")} - {""}
    text = "".join(p.read_text() for p in out.rglob("*") if p.suffix in (".json", ".csv"))
    assert not any(v in text for v in header_values)  # nothing copied from the header


def test_predict_cam_writes_the_classifiers_gradcam(model_dir, mp4, tmp_path):
    out = tmp_path / "out"
    summary = predict_files(model_dir, [mp4], out, every=5, batch_size=4, cam=True)
    assert summary.n_ok == 1
    folder = out / "input-001"
    rows, planes = _rows(folder / "cam.csv"), _rows(folder / "planes.csv")
    assert [int(r["frame"]) for r in rows] == list(range(0, len(planes), 5))
    box = json.loads((folder / "summary.json").read_text())["crop_box"]
    for row in rows:
        assert (folder / row["png"]).is_file() and row["class"] in CLASSES
        assert box[0] - 0.5 <= float(row["peak_x"]) <= box[2] and box[1] - 0.5 <= float(row["peak_y"]) <= box[3]
        image = cv2.imread(str(folder / row["png"]))
        assert image.shape == (32, 2 * 32 + 2, 3)  # the frame | the frame with its map
    cam = json.loads((folder / "summary.json").read_text())["cam"]
    assert cam["n_png"] == len(rows) and cam["layer"]
    assert len(list((folder / "cam").glob("*.png"))) == len(rows)

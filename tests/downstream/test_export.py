"""torch.export of a tiny plane classifier and saliency stand-in: reload, dynamic batch, the spec."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest
import torch
from torch import nn

from usssl.config import EncoderConfig
from usssl.downstream.export import (DISCLAIMER, MODEL_FILE, SALIENCY_FILE, SPEC_FILE, PreprocessingSpec,
                                     export_model, load_exported)  # fmt: skip
from usssl.downstream.plane_detection import PlaneClassifier
from usssl.errors import DataError
from usssl.models.encoders import build_encoder

CLASSES = ["background", "4ch", "abdomen"]
SIZE = (32, 32)


class TinySaliency(nn.Module):
    """Stand-in for the saliency model: video (B, 1, T, H, W) -> (B, H, W) softmax map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.conv(video.mean(dim=2))[:, 0]  # (B, H, W)
        b, h, w = x.shape
        return torch.softmax(x.reshape(b, h * w), dim=1).reshape(b, h, w)


def tiny_classifier(n_classes: int = len(CLASSES)) -> PlaneClassifier:
    torch.manual_seed(0)
    model = PlaneClassifier(build_encoder(EncoderConfig(name="tiny2d", width=4, dim=8)), n_classes)
    for m in model.modules():  # non-trivial running statistics: eval-mode batch norm must be exported
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model


def tiny_spec(**changes) -> PreprocessingSpec:
    fields = dict(class_names=CLASSES, size=SIZE, fps=10.0, clip_frames=2, pipeline="tiny", init="video_speech",
                  protocol="finetune", label_fraction=0.1, provenance={"n_train": 12})
    return PreprocessingSpec(**(fields | changes))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    classifier, saliency = tiny_classifier(), TinySaliency()
    classifier.train()  # export must trace eval mode and give the caller's mode back
    out = export_model(classifier, tmp_path_factory.mktemp("export") / "model", tiny_spec(), saliency=saliency)
    return classifier, saliency, out


def test_reload_matches_eager_with_dynamic_batch(exported):
    classifier, saliency, out = exported
    assert classifier.training, "the caller's train/eval mode is restored"
    classifier.eval()
    loaded = load_exported(out)
    assert loaded.class_names == CLASSES and loaded.has_saliency and loaded.size == SIZE
    g = torch.Generator().manual_seed(1)
    for batch in (1, 3, 5):  # the example had 2: the batch dimension is symbolic
        video = torch.rand(batch, 1, 2, *SIZE, generator=g)
        with torch.no_grad():
            expected = torch.softmax(classifier(video), dim=1)
            expected_map = saliency(video)
        probs = loaded.planes(video)
        assert probs.shape == (batch, len(CLASSES))
        torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)
        maps = loaded.saliency(video)
        assert maps.shape == (batch, *SIZE)
        torch.testing.assert_close(maps, expected_map, atol=1e-6, rtol=0)
        assert maps.sum(dim=(1, 2)).tolist() == pytest.approx([1.0] * batch, abs=1e-5)


def test_preprocessing_json(exported):
    _, _, out = exported
    spec = json.loads((out / SPEC_FILE).read_text())
    assert spec["format"] == "usssl-export" and spec["format_version"] == 1
    assert spec["class_names"] == CLASSES
    assert "research use only" in spec["disclaimer"].lower() and "not for clinical" in spec["disclaimer"].lower()
    inp = spec["input"]
    assert inp["size"] == list(SIZE) and inp["fps"] == 10.0 and inp["channels"] == 1
    assert inp["clip_frames"] == 2 and inp["clip_anchor"] == "end" and inp["crop"] == "auto"
    assert "/ 255" in inp["intensity"] and "Ultrasound Regions" in inp["crop_method"]
    assert spec["models"]["planes"] == {**spec["models"]["planes"], "file": MODEL_FILE,
                                        "input": ["B", 1, 2, 32, 32], "output": ["B", 3]}
    assert spec["models"]["saliency"]["file"] == SALIENCY_FILE
    assert spec["models"]["saliency"]["output"] == ["B", 32, 32]
    assert spec["provenance"] == {"pipeline": "tiny", "init": "video_speech", "protocol": "finetune",
                                  "label_fraction": 0.1, "n_train": 12}
    assert spec["usssl_version"] == version("usssl") and spec["torch_version"] == torch.__version__


def test_export_without_saliency_replaces_a_stale_one(exported, tmp_path):
    _, _, first = exported
    out = tmp_path / "export"
    out.mkdir()
    (out / SALIENCY_FILE).write_bytes((first / SALIENCY_FILE).read_bytes())
    export_model(tiny_classifier(), out, tiny_spec(clip_frames=1, crop=(1, 2, 30, 31), fps=None))
    assert not (out / SALIENCY_FILE).exists()
    loaded = load_exported(out)
    assert not loaded.has_saliency and "saliency" not in loaded.spec["models"]
    assert loaded.spec["input"]["crop"] == [1, 2, 30, 31] and loaded.spec["input"]["fps"] is None
    assert loaded.planes(torch.rand(4, 1, 1, *SIZE)).sum(dim=1).tolist() == pytest.approx([1.0] * 4, abs=1e-5)
    with pytest.raises(DataError, match="no saliency"):
        loaded.saliency(torch.rand(1, 1, 1, *SIZE))


def test_class_count_must_match_the_spec(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(2, 4\) \(B, n_classes\) but the spec names 3"):
        export_model(tiny_classifier(n_classes=4), tmp_path, tiny_spec(clip_frames=1))


def test_saliency_must_return_maps(tmp_path):
    class Wrong(nn.Module):
        def forward(self, video):
            return video.mean(dim=(1, 2))[:, None]  # (B, 1, H, W): one axis too many

    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        export_model(tiny_classifier(), tmp_path, tiny_spec(clip_frames=1), saliency=Wrong())


@pytest.mark.parametrize("changes, message", [
    ({"class_names": []}, "class_names"),
    ({"size": (0, 32)}, "size"),
    ({"fps": 0.0}, "fps"),
    ({"clip_frames": 0}, "clip_frames"),
    ({"clip_anchor": "start"}, "clip_anchor"),
    ({"crop": "fan"}, "crop"),
])  # fmt: skip
def test_spec_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny_spec(**changes)


def test_spec_from_training():
    settings = {"size": [48, 40], "fps": 15.0, "crop": [0, 0, 90, 80], "classes": ["bg", "head"], "audio": True}
    entry = {"tag": "video_speech-linear-0.1", "init": "video_speech", "protocol": "linear",
             "label_fraction": 0.1, "n_train": 7, "source": "pretrain"}
    spec = PreprocessingSpec.from_training(settings, entry, pipeline="demo")
    assert (spec.size, spec.fps, spec.crop, spec.class_names) == ((48, 40), 15.0, (0, 0, 90, 80), ["bg", "head"])
    assert (spec.pipeline, spec.init, spec.protocol, spec.label_fraction) == ("demo", "video_speech", "linear", 0.1)
    assert spec.provenance == {"tag": "video_speech-linear-0.1", "n_train": 7, "source": "pretrain"}


def test_load_errors_name_the_problem(exported, tmp_path):
    with pytest.raises(DataError, match="no preprocessing.json"):
        load_exported(tmp_path)
    (tmp_path / SPEC_FILE).write_text(json.dumps({"format": "something-else", "format_version": 1}))
    with pytest.raises(DataError, match="is not 'usssl-export'"):
        load_exported(tmp_path)
    _, _, out = exported
    spec = json.loads((out / SPEC_FILE).read_text())
    (tmp_path / SPEC_FILE).write_text(json.dumps(spec))
    with pytest.raises(DataError, match="model.pt2 is missing"):
        load_exported(tmp_path)
    (tmp_path / MODEL_FILE).write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a loadable torch.export program"):
        load_exported(tmp_path)


def test_disclaimer_says_research_use():
    assert DISCLAIMER.lower().startswith("research use only, not for clinical decisions")

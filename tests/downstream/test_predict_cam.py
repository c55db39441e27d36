"""Grad-CAM of an exported classifier (``usssl predict --cam``): the graph's feature map and gradient
match the eager model's, a hand-built model lights exactly its hot region, and predict writes the maps."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from usssl.config import EncoderConfig
from usssl.downstream.export import PreprocessingSpec, export_model
from usssl.downstream.plane_detection import PlaneClassifier
from usssl.downstream.predict_cam import feature_node, gradcam_program, load_program
from usssl.models.encoders import build_encoder


class HotSpot(nn.Module):
    """video (B, 1, T, H, W) -> logits (B, 2): a 1x1 conv (weight 1) and ReLU are the feature map, its
    spatial mean the score of class 0 and minus it class 1's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(self.conv.weight)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        acti = F.relu(self.conv(video[:, :, 0]))  # (B, 1, H, W)
        pooled = acti.mean(dim=(2, 3))  # (B, 1)
        return torch.cat([pooled, -pooled], dim=1)


def test_hand_built_model_lights_exactly_its_hot_region(tmp_path):
    export_model(HotSpot(), tmp_path, PreprocessingSpec(class_names=["a", "b"], size=(8, 8), fps=None))
    program = load_program(tmp_path)
    video = torch.zeros(2, 1, 1, 8, 8)
    video[0, 0, 0, 2:4, 5:7] = 1.0  # a hot 2x2 patch
    video[1, 0, 0, 6:, :3] = 0.5
    maps, classes = gradcam_program(program, video)
    assert maps.shape == (2, 8, 8) and classes.tolist() == [0, 0]
    # w = 1 / 64 > 0, so the map is the (normalised) feature map: the input itself here
    assert torch.equal(maps[0] > 0.5, video[0, 0, 0] > 0) and torch.equal(maps[1] > 0.5, video[1, 0, 0] > 0)
    assert float(maps[0].max()) == pytest.approx(1.0) and float(maps[0].min()) == 0.0


def test_exported_gradcam_matches_the_eager_model(tmp_path):
    torch.manual_seed(0)
    classifier = PlaneClassifier(build_encoder(EncoderConfig(name="tiny2d", width=4, dim=8)), 3).eval()
    export_model(classifier, tmp_path, PreprocessingSpec(class_names=["x", "y", "z"], size=(32, 32), fps=10.0,
                                                         clip_frames=2))
    program = load_program(tmp_path)
    video = torch.rand(3, 1, 2, 32, 32, generator=torch.Generator().manual_seed(1))
    maps, classes = gradcam_program(program, video)
    seen = {}
    handle = classifier.encoder.image_encoder.features.register_forward_hook(lambda m, i, o: seen.setdefault("a", o))
    logits = classifier(video)
    handle.remove()
    acti = seen["a"]  # (B·T, C, h, w): the 2-D encoder sees each clip's frames
    assert acti.shape[0] == 6 and feature_node(program)
    grad = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), acti)[0]
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * acti).sum(1, keepdim=True)).reshape(3, 2, 1, *acti.shape[2:])
    cam = F.interpolate(cam.mean(1), size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    lo, hi = cam.amin(dim=(1, 2), keepdim=True), cam.amax(dim=(1, 2), keepdim=True)
    expected = ((cam - lo) / (hi - lo).clamp_min(1e-12)).detach()
    assert torch.equal(classes, logits.argmax(1))
    assert torch.allclose(maps, expected, atol=1e-4)

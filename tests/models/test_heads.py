"""The one MLP builder: the layer order every head relies on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from usssl.models.heads import mlp


def _kinds(m: nn.Sequential) -> list[str]:
    return [type(layer).__name__ for layer in m]


def test_layer_orders_of_the_heads_that_use_it():
    assert _kinds(mlp(8, 16, 4, layers=3)) == ["Linear", "BatchNorm1d", "ReLU"] * 3 + ["Linear"]  # CVRL head
    assert _kinds(mlp(8, 8, 4, batch_norm=False)) == ["Linear", "ReLU", "Linear"]  # projection head
    assert _kinds(mlp(8, 16)) == ["Linear", "BatchNorm1d", "ReLU"]  # a pretext branch
    assert _kinds(mlp(8, 16, 4, layers=0)) == ["Linear"]
    head = mlp(8, 16, 4, layers=2)
    assert [tuple(p.shape) for n, p in head.named_parameters() if n.endswith("weight") and p.dim() == 2] == \
        [(16, 8), (16, 16), (4, 16)]
    assert head(torch.zeros(5, 8)).shape == (5, 4)


def test_an_mlp_without_layers_or_output_is_refused():
    with pytest.raises(ValueError, match="layers"):
        mlp(8, 16, None, layers=0)

"""Clip retrieval: Recall@k on a hand-made gallery, the k cap and recording-level clips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from usssl.downstream.retrieval import recall_at_k, valid_ks


def unit(deg: float, scale: float = 1.0) -> list[float]:
    return [scale * math.cos(math.radians(deg)), scale * math.sin(math.radians(deg))]


def test_recall_at_k_on_a_hand_made_gallery():
    # 8 gallery clips on the circle every 45°, labels A A B B C C D D (lengths vary: cosine ignores them)
    gallery = torch.tensor([unit(a, 1 + i) for i, a in enumerate(range(0, 360, 45))])
    g_labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    queries = torch.tensor([unit(10), unit(50), unit(80), unit(150)])
    q_labels = np.array([0, 0, 2, 2])
    # q 10°: 0° (A) hit; q 50°: 45° (A) hit; q 80° (C): 90° B, 45° A: miss at 1 and 2;
    # q 150° (C): 135° B, then 180° C: miss at 1, hit at 2
    scores = recall_at_k(queries, q_labels, gallery, g_labels, ks=[1, 2, 5])
    assert scores == {1: pytest.approx(0.5), 2: pytest.approx(0.75)}  # k 5 > 8 / 4 is left out


def test_k_is_never_above_a_quarter_of_the_gallery():
    assert valid_ks([1, 5, 10], 40) == [1, 5, 10]
    assert valid_ks([10, 1, 5], 39) == [1, 5]
    assert valid_ks([1, 5, 10], 3) == []
    assert recall_at_k(torch.ones(2, 3), np.zeros(2), torch.ones(3, 3), np.zeros(3), [1]) == {}

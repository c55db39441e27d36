"""Label fractions and the linear probe's folded standardisation."""

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from usssl.config import EncoderConfig
from usssl.downstream.plane_detection import (balanced_weights, extract_features, fit_linear_probe,
                                              label_fraction_indices)
from usssl.models.encoders import build_encoder


def test_label_fractions_nested_and_every_class_kept():
    labels = np.array([0] * 50 + [1] * 20 + [2] * 3)
    small = label_fraction_indices(labels, 0.1, seed=1)
    mid = label_fraction_indices(labels, 0.5, seed=1)
    full = label_fraction_indices(labels, 1.0, seed=1)
    assert set(small) <= set(mid) <= set(full)
    assert np.bincount(labels[small]).tolist() == [5, 2, 1]  # ceil(0.1 n), at least 1
    assert np.bincount(labels[mid]).tolist() == [25, 10, 2]
    assert full.tolist() == list(range(len(labels)))
    assert not np.array_equal(small, label_fraction_indices(labels, 0.1, seed=2))
    with pytest.raises(ValueError):
        label_fraction_indices(labels, 0.0)


def test_balanced_weights():
    w = balanced_weights(np.array([0, 0, 0, 1]), 3)
    assert w.tolist() == pytest.approx([0.5, 1.5, 0.0])


class Blobs(Dataset):
    """Frames whose class sets the brightness of one quadrant."""

    def __init__(self, n=60):
        g = torch.Generator().manual_seed(0)
        self.labels = np.arange(n) % 3
        self.x = torch.rand(n, 1, 1, 32, 32, generator=g) * 0.2
        for i, c in enumerate(self.labels):
            self.x[i, :, :, (c // 2) * 16:(c // 2 + 1) * 16, (c % 2) * 16:(c % 2 + 1) * 16] += 0.7

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"video": self.x[i], "label": torch.tensor(int(self.labels[i]))}


def test_linear_probe_folds_standardisation_and_learns():
    torch.manual_seed(0)
    data = Blobs()
    encoder = build_encoder(EncoderConfig(width=4, dim=16))
    model = fit_linear_probe(encoder, data, data.labels, 3, epochs=200, lr=0.05)
    feats = extract_features(encoder, data)
    logits = model.head(feats)
    with torch.no_grad():
        direct = model(data.x)
    assert torch.allclose(logits, direct, atol=1e-4)
    assert (direct.argmax(1).numpy() == data.labels).mean() > 0.9
    assert not any(p.requires_grad for p in model.encoder.parameters())

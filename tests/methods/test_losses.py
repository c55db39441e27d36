"""InfoNCE against a value computed by hand."""

import math

import pytest
import torch

from usssl.methods.losses import info_nce


def test_info_nce_hand_computed():
    # unit vectors: a = [e1, e2], b = [e1, (e1+e2)/√2]; τ = 0.5
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]]) / torch.tensor([[1.0], [math.sqrt(2)]])
    s = 1 / math.sqrt(2)
    tau = 0.5
    # a→b rows: [1, s], [0, s]; b→a rows: [1, 0], [s, s]
    ce = lambda logits, i: -logits[i] / tau + math.log(sum(math.exp(v / tau) for v in logits))
    expected = 0.5 * ((ce([1, s], 0) + ce([0, s], 1)) / 2 + (ce([1, 0], 0) + ce([s, s], 1)) / 2)
    assert info_nce(a, b, tau).item() == pytest.approx(expected, abs=1e-6)


def test_info_nce_is_scale_invariant_and_weighted():
    torch.manual_seed(0)
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    base = info_nce(a, b, 0.2)
    assert info_nce(3 * a, 0.5 * b, 0.2).item() == pytest.approx(base.item(), abs=1e-5)
    # weights: a gate of ones equals the plain mean; a one-hot gate picks one pair's loss
    assert info_nce(a, b, 0.2, weight=torch.ones(6)).item() == pytest.approx(base.item(), abs=1e-6)
    w = torch.zeros(6)
    w[2] = 1
    only = info_nce(a, b, 0.2, weight=w).item()
    full = torch.stack([info_nce(a, b, 0.2, weight=torch.eye(6)[i]) for i in range(6)])
    assert only == pytest.approx(full[2].item(), abs=1e-6)
    assert full.mean().item() == pytest.approx(base.item(), abs=1e-5)


def test_info_nce_perfect_alignment_is_low_and_temperature_checked():
    x = torch.eye(4) * 5
    assert info_nce(x, x, 0.05).item() < 1e-6
    with pytest.raises(ValueError, match="temperature"):
        info_nce(x, x, 0.0)

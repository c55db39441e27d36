"""Paper Eq. 2 (safe forms) by hand, including a numerator ≤ 0, and self-paced weights."""

import math

import pytest
import torch

from usssl.methods.self_paced import SelfPacedWeights, video_speech_contrastive


def setup_pair():
    # B = 2, D = 2; no normalisation, τ = 1: similarities are raw dot products
    y_v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y_s = torch.tensor([[2.0, 0.0], [0.0, 0.5]])
    y_neg = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    return y_v, y_s, y_neg


def test_infonce_hard_hand_computed():
    y_v, y_s, y_neg = setup_pair()
    loss = video_speech_contrastive(y_v, y_s, y_neg, "infonce_hard")
    # row 0: a = 2, Σ_k = e^2 + e^0, b = 1 → log(e^2 + 1 + e^1) − 2
    # row 1: a = .5, Σ_k = e^0 + e^.5, b = 3 → log(1 + e^.5 + e^3) − .5
    expected = [math.log(math.e**2 + 1 + math.e) - 2, math.log(1 + math.exp(0.5) + math.exp(3)) - 0.5]
    assert loss.tolist() == pytest.approx(expected, abs=1e-6)


def test_eq2_clamped_hand_computed_with_a_nonpositive_numerator():
    y_v, y_s, y_neg = setup_pair()
    eps = 1e-6
    loss = video_speech_contrastive(y_v, y_s, y_neg, "eq2_clamped", eps=eps)
    # row 0: −log[(e^2 − e^1) / (e^2 + e^0)] — the paper's Eq. 2 as written
    row0 = -math.log((math.e**2 - math.e) / (math.e**2 + 1))
    # row 1: e^.5 − e^3 < 0, undefined in the paper; clamped: −log(eps · e^.5 / (1 + e^.5))
    row1 = -math.log(eps * math.exp(0.5) / (1 + math.exp(0.5)))
    assert loss.tolist() == pytest.approx([row0, row1], rel=1e-6)
    y_v.requires_grad_(True)
    video_speech_contrastive(y_v, y_s, y_neg, "eq2_clamped").sum().backward()
    assert torch.isfinite(y_v.grad).all()


def test_temperature_normalisation_and_bad_form():
    y_v, y_s, y_neg = setup_pair()
    scaled = video_speech_contrastive(y_v, y_s, y_neg, "infonce_hard", temperature=0.5, normalize=True)
    unit = [torch.nn.functional.normalize(t, dim=-1) for t in (y_v, y_s, y_neg)]
    ref = video_speech_contrastive(unit[0] / 0.5, unit[1], unit[2], "infonce_hard")
    assert torch.allclose(scaled, ref, atol=1e-6)
    with pytest.raises(ValueError, match="form"):
        video_speech_contrastive(y_v, y_s, y_neg, "eq3")


def test_self_paced_admits_more_pairs_as_the_pace_grows():
    losses = torch.tensor([0.2, 0.9, 1.5, 2.4, 3.5])
    pacer = SelfPacedWeights(pace_start=1.0, pace_growth=2.0)
    admitted = []
    for _ in range(3):
        admitted.append(int(pacer(losses).sum()))
        pacer.step_epoch()
    assert admitted == [2, 3, 5]  # λ = 1, 2, 4
    assert pacer.pace.item() == 8.0 and "pace" in dict(pacer.named_buffers())
    linear = SelfPacedWeights(pace_start=2.0, mode="linear")
    assert linear(torch.tensor([0.0, 1.0, 3.0])).tolist() == pytest.approx([1.0, 0.5, 0.0])

"""Paper Eq. 2 (safe forms) by hand, including a numerator ≤ 0, the hard positive, a missing hard
negative, the gate's kept negatives, and self-paced weights relative to the batch."""

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
    # row 1: e^.5 − e^3 < 0, undefined in the paper; continued linearly in d = a − b = −2.5 below
    # d0 = −log(1 − eps): log Σ − a − log(eps) + (d0 − d)
    d0 = -math.log1p(-eps)
    row1 = math.log(1 + math.exp(0.5)) - 0.5 - math.log(eps) + (d0 + 2.5)
    assert loss.tolist() == pytest.approx([row0, row1], rel=1e-6)
    y_neg.requires_grad_(True)
    video_speech_contrastive(y_v, y_s, y_neg, "eq2_clamped").sum().backward()
    assert torch.isfinite(y_neg.grad).all()
    # the hard negative of row 1 (more similar than the positive) is pushed away: ∂ℓ/∂y_neg = +y_v
    assert y_neg.grad[1].tolist() == pytest.approx([0.0, 1.0], abs=1e-6)  # a plain clamp gave [0, 0]


def test_the_hard_positive_is_a_second_positive_hand_computed():
    y_v, y_s, y_neg = setup_pair()
    y_pos = torch.tensor([[1.5, 0.0], [0.0, 1.0]])
    loss = video_speech_contrastive(y_v, y_s, y_neg, "infonce_hard", y_pos=y_pos)
    # row 0: a = 2, p = 1.5, b = 1, Σ_k = e^2 + e^0: log(e^2 + 1 + e^1.5 + e^1) − log(e^2 + e^1.5)
    # row 1: a = .5, p = 1, b = 3, Σ_k = e^0 + e^.5: log(1 + e^.5 + e^1 + e^3) − log(e^.5 + e^1)
    e = math.exp
    expected = [math.log(e(2) + 1 + e(1.5) + e(1)) - math.log(e(2) + e(1.5)),
                math.log(1 + e(0.5) + e(1) + e(3)) - math.log(e(0.5) + e(1))]
    assert loss.tolist() == pytest.approx(expected, abs=1e-6)
    without = video_speech_contrastive(y_v, y_s, y_neg, "infonce_hard")
    assert (loss - without).abs().min() > 0.05
    # Eq. 2 with the hard positive: log(Σ + e^p) − log(e^a + e^p − e^b), row 0 (numerator > 0)
    eq2 = video_speech_contrastive(y_v, y_s, y_neg, "eq2_clamped", y_pos=y_pos)
    assert eq2[0].item() == pytest.approx(math.log(e(2) + 1 + e(1.5)) - math.log(e(2) + e(1.5) - e(1)), abs=1e-6)


def test_a_missing_hard_negative_drops_its_term_and_kept_negatives_mask_the_batch():
    y_v, y_s, y_neg = setup_pair()
    loss = video_speech_contrastive(y_v, y_s, y_neg, "infonce_hard", neg_valid=torch.tensor([1.0, 0.0]))
    # row 1 without b: plain InfoNCE log(1 + e^.5) − .5
    assert loss[1].item() == pytest.approx(math.log(1 + math.exp(0.5)) - 0.5, abs=1e-6)
    assert loss[0].item() == pytest.approx(math.log(math.e**2 + 1 + math.e) - 2, abs=1e-6)
    eq2 = video_speech_contrastive(y_v, y_s, y_neg, "eq2_clamped", neg_valid=torch.tensor([0.0, 0.0]))
    assert eq2.tolist() == pytest.approx([math.log(math.e**2 + 1) - 2, math.log(1 + math.exp(0.5)) - 0.5], abs=1e-6)
    # keep = [True, False]: row 0 loses the negative y_s[1] (e^0); row 1 keeps its own positive
    kept = video_speech_contrastive(y_v, y_s, y_neg, "infonce_hard", keep=torch.tensor([True, False]))
    assert kept.tolist() == pytest.approx([math.log(math.e**2 + math.e) - 2,
                                           math.log(1 + math.exp(0.5) + math.exp(3)) - 0.5], abs=1e-6)


def test_temperature_normalisation_and_bad_form():
    y_v, y_s, y_neg = setup_pair()
    scaled = video_speech_contrastive(y_v, y_s, y_neg, "infonce_hard", temperature=0.5, normalize=True)
    unit = [torch.nn.functional.normalize(t, dim=-1) for t in (y_v, y_s, y_neg)]
    ref = video_speech_contrastive(unit[0] / 0.5, unit[1], unit[2], "infonce_hard")
    assert torch.allclose(scaled, ref, atol=1e-6)
    with pytest.raises(ValueError, match="form"):
        video_speech_contrastive(y_v, y_s, y_neg, "eq3")


def test_self_paced_admits_a_growing_fraction_of_the_batch_by_affinity_times_easiness():
    losses = torch.tensor([0.2, 0.9, 1.5, 2.4, 3.5, 5.0, 6.0, 9.0])
    pacer = SelfPacedWeights(start_fraction=0.25, growth=2.0)
    admitted = []
    for _ in range(4):
        admitted.append(pacer(losses).tolist())
        pacer.step_epoch()
    assert [sum(a) for a in admitted] == [2, 4, 8, 8]  # λ = 0.25, 0.5, 1, 1 (capped)
    assert admitted[0] == [1, 1, 0, 0, 0, 0, 0, 0]  # the easiest first, whatever the loss scale
    assert pacer(losses * 100).tolist() == admitted[2] and pacer.pace.item() == 1.0
    assert "pace" in dict(pacer.named_buffers())
    # affinity × e^{−loss}: a silent pair (affinity 0) comes last however easy it is
    half = SelfPacedWeights(start_fraction=0.5)
    affinity = torch.tensor([0.0, 1.0, 1.0, 0.5, 1.0, 1.0, 0.0, 1.0])
    # scores 0, e^-.9, e^-1.5, .5·e^-2.4 = .045, e^-3.5 = .030, e^-5, 0, e^-9: the top 4 are pairs 1–4
    assert half(losses, affinity).tolist() == [0, 1, 1, 1, 1, 0, 0, 0]
    linear = SelfPacedWeights(start_fraction=0.5, mode="linear")
    assert linear(torch.tensor([0.0, 1.0, 3.0, 4.0])).tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="start_fraction"):
        SelfPacedWeights(start_fraction=2.0)

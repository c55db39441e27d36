"""The order label map: 24 permutations of 4 frames → 12 classes, each a permutation and its reverse."""

from collections import Counter
from itertools import permutations

import numpy as np
import pytest
import torch

from usssl.methods.order import order_classes, order_label, permutation_for, sample_orders, shuffle_frames


def test_24_permutations_make_12_classes_of_a_permutation_and_its_reverse():
    perms = list(permutations(range(4)))
    labels = [order_label(p) for p in perms]
    assert len(perms) == 24 and sorted(set(labels)) == list(range(12))
    assert set(Counter(labels).values()) == {2}  # 12 classes of 2
    for p in perms:
        assert order_label(p[::-1]) == order_label(p)
        members = [q for q in perms if order_label(q) == order_label(p)]
        assert set(members) == {p, p[::-1]}
    assert order_label((0, 1, 2, 3)) == order_label((3, 2, 1, 0)) == 0
    assert len(order_classes(3)) == 3 and len(order_classes(5)) == 60  # n!/2


@pytest.mark.parametrize("rng", [np.random.default_rng(0), torch.Generator().manual_seed(0)])
def test_permutation_for_returns_either_member_of_its_class(rng):
    for label in range(12):
        drawn = {permutation_for(label, rng) for _ in range(40)}
        assert all(order_label(p) == label for p in drawn)
        assert drawn == {order_classes(4)[label], order_classes(4)[label][::-1]}


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError, match="not a permutation"):
        order_label((0, 1, 1, 2))
    with pytest.raises(ValueError, match="order label"):
        permutation_for(12, np.random.default_rng(0))


def test_sample_orders_labels_and_shuffle_frames_agree():
    g = torch.Generator().manual_seed(0)
    perms, labels = sample_orders(500, 4, generator=g)
    assert perms.shape == (500, 4) and labels.shape == (500,)
    assert all(order_label(p.tolist()) == int(k) for p, k in zip(perms, labels))
    counts = torch.bincount(labels, minlength=12)
    assert counts.min() > 20  # every class is drawn
    assert (perms == perms[:, [0]]).sum() == 500  # each row a permutation: its first entry once
    video = torch.arange(4.0).view(1, 1, 4, 1, 1).expand(3, 2, 4, 5, 6)  # frame t has value t
    out = shuffle_frames(video, perms[:3])
    assert torch.equal(out[:, 0, :, 0, 0], perms[:3].float())
    assert torch.equal(out[:, 1], out[:, 0])  # channels move together

"""The downstream protocol's pieces: k-fold, stratification, balanced epochs, k-NN, bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from usssl.config import SplitConfig
from usssl.data.splits import kfold_subjects, split_subjects, stratified_order
from usssl.downstream.metrics import bootstrap_ci, classification_scores
from usssl.downstream.plane_detection import KNNClassifier, epoch_weights
from usssl.errors import DataError


@settings(max_examples=60, deadline=None)
@given(n=st.integers(3, 40), k=st.integers(2, 5), seed=st.integers(0, 999), n_strata=st.integers(1, 4))
def test_kfold_never_puts_a_subject_in_two_folds(n, k, seed, n_strata):
    subjects = [f"s{i:02d}" for i in range(n)] * 3  # three recordings each
    strata = {f"s{i:02d}": f"c{i % n_strata}" for i in range(n)}
    if n < k:
        with pytest.raises(DataError, match="at least k subjects"):
            kfold_subjects(subjects, k, seed, strata)
        return
    folds = kfold_subjects(subjects, k, seed, strata)
    flat = [s for f in folds for s in f]
    assert len(flat) == len(set(flat)) == n  # disjoint and complete
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert kfold_subjects(list(reversed(subjects)), k, seed, strata) == folds  # deterministic


def test_stratified_folds_and_split_keep_label_proportions():
    subjects = [f"s{i:02d}" for i in range(30)]
    strata = {s: ("covid" if i < 6 else "regular" if i < 18 else "pneumonia") for i, s in enumerate(subjects)}
    for f in kfold_subjects(subjects, 3, seed=4, strata=strata):
        counts = sorted(sum(strata[s] == c for s in f) for c in ("covid", "regular", "pneumonia"))
        assert counts == [2, 4, 4]  # 6 / 12 / 12 split three ways exactly
    test = split_subjects(subjects, SplitConfig(test=0.5, seed=1), strata)["test"]
    assert sorted(sum(strata[s] == c for s in test) for c in ("covid", "regular", "pneumonia")) == [3, 6, 6]
    assert stratified_order(subjects, 1, strata) != stratified_order(subjects, 2, strata)


def test_balanced_epoch_is_half_background_and_planes_equal():
    labels = np.array([0] * 10 + [1] * 30 + [2] * 60)  # class 2 is background
    w = epoch_weights(labels, background=2)
    mass = np.bincount(labels, weights=w)
    assert mass.tolist() == pytest.approx([0.25, 0.25, 0.5])
    assert np.bincount(labels, weights=epoch_weights(labels)).tolist() == pytest.approx([1 / 3] * 3)




def test_knn_vote_matches_hand_computed_weights():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])

    class Enc(torch.nn.Module):
        out_dim = 2

        def forward(self, x):
            return x.flatten(1) * 0.25 + 0.5  # inverts the classifier's (x − 0.5) / 0.25

    model = KNNClassifier(Enc(), bank, labels, n_classes=2, k=2, temperature=0.5)
    query = torch.tensor([[1.0, 0.2]]).view(1, 1, 1, 1, 2)
    q = np.array([1.0, 0.2]) / np.hypot(1.0, 0.2)
    s0, s2 = q @ [1, 0], q @ (np.array([1, 1]) / np.sqrt(2))  # the two nearest: bank 0 and bank 2
    w0, w1 = np.exp(s0 / 0.5), np.exp(s2 / 0.5)
    probs = torch.softmax(model(query), dim=1)[0].numpy()
    assert probs == pytest.approx([w0 / (w0 + w1), w1 / (w0 + w1)], abs=1e-5)


def test_bootstrap_interval_over_subjects():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    subjects = np.repeat(np.arange(10), 30)
    perfect = bootstrap_ci(y, y, subjects, 3, n_boot=200)
    assert perfect["f1"] == pytest.approx((1.0, 1.0))
    noisy = np.where(rng.random(300) < 0.3, rng.integers(0, 3, 300), y)
    ci = bootstrap_ci(y, noisy, subjects, 3, n_boot=500, seed=1)
    point = classification_scores(y, noisy, 3)["f1"]
    assert ci["f1"][0] < point < ci["f1"][1] and ci["f1"][1] - ci["f1"][0] < 0.3
    # one subject all wrong, the rest right: the interval must reach below the pooled score
    bad = y.copy()
    bad[:30] = (y[:30] + 1) % 3
    ci = bootstrap_ci(y, bad, subjects, 3, n_boot=500, seed=2)
    assert ci["f1"][0] < classification_scores(y, bad, 3)["f1"] <= ci["f1"][1] <= 1.0


def test_recording_level_pools_frame_probabilities():
    from usssl.stages.evaluate import by_recording

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 1, 1, 1])
    pooled, truth, shards, subjects = by_recording(probs, labels, ["b", "a", "b", "a", "b"],
                                                   np.array(["s2", "s1", "s2", "s1", "s2"]))
    assert shards.tolist() == ["b", "a"] and subjects.tolist() == ["s2", "s1"]
    assert pooled == pytest.approx(np.array([[0.6, 0.4], [0.4, 0.6]]))
    assert truth.tolist() == [1, 1]  # shard b: labels 0, 1, 1 → most frequent 1

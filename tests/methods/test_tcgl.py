"""TCGL: its graphs, GRACE loss, order labels, snippet sampling and the order head's isolation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from usssl.config import PipelineConfig
from usssl.data.cache import INDEX_COLUMNS, Cache, ShardWriter, write_index
from usssl.data.snippets import PERMUTATIONS, SnippetTupleDataset, tuple_indices, tuple_span, tuple_stride
from usssl.engine.files import write_json_atomic
from usssl.errors import DataError
from usssl.methods.tcgl import TCGLModule, order_targets
from usssl.methods.tcgl_graph import (DenseGCN, chain_adjacency, drop_edges, grace_loss, normalized_adjacency,
                                      order_adjacency)
from usssl.models.encoders import MotionEmphasis, build_encoder, motion_emphasis


def pretrain_cfg(**tcgl):
    raw = {"stages": [{"pretrain": {"method": "tcgl", "encoder": {"name": "tiny3d", "width": 4, "dim": 16},
                                    "tcgl": {"snippet_frames": 8, "gap_frames": 2, "sub_clips": 4,
                                             "order_hidden": 16, **tcgl}}}]}
    return PipelineConfig.model_validate(raw).stage("pretrain")


def test_normalised_adjacency_of_a_4_chain_with_self_loops():
    a = chain_adjacency(4)
    assert a.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]]
    r6 = 1 / math.sqrt(6)  # degrees 2, 3, 3, 2: entry 1/sqrt(d_i d_j)
    expected = torch.tensor([[1 / 2, r6, 0, 0], [r6, 1 / 3, 1 / 3, 0], [0, 1 / 3, 1 / 3, r6], [0, 0, r6, 1 / 2]])
    assert torch.allclose(normalized_adjacency(a), expected, atol=1e-6)


def test_dense_gcn_is_normalised_adjacency_times_hw_plus_bias():
    gcn = DenseGCN(2, 1)
    with torch.no_grad():
        gcn.linear.weight.copy_(torch.tensor([[1.0, 0.0]]))
        gcn.linear.bias.fill_(0.5)
    h = torch.tensor([[[2.0, 9.0], [4.0, 9.0]]])  # 2 nodes joined: Â_norm = all 1/2
    out = gcn(h, torch.ones(2, 2))
    assert out.squeeze().tolist() == pytest.approx([3.0 + 0.5, 3.0 + 0.5])


def test_grace_loss_on_three_orthonormal_nodes():
    z = torch.eye(3)[None]  # (1 graph, 3 nodes, D 3): both views identical, nodes orthogonal
    # node i: positive e^{1/τ}; negatives 2 × e^0 (other view) + 2 × e^0 (same view):
    # −log(e²/(e² + 4)) at τ = 0.5
    expected = math.log(1 + 4 * math.exp(-2))
    assert grace_loss(z, z, temperature=0.5).item() == pytest.approx(expected, abs=1e-6)
    # the second view's node 0 flipped: its positive cosine is −1, every other pair 0 (node 0 loss both ways)
    z2 = z.clone()
    z2[0, 0] = -z2[0, 0]
    l0 = -math.log(math.exp(-2) / (math.exp(-2) + 4))
    assert grace_loss(z, z2, 0.5).item() == pytest.approx((l0 + 2 * expected) / 3, abs=1e-6)


def test_grace_in_batch_negatives_add_the_other_graphs_nodes():
    z = torch.eye(4).view(2, 2, 4)  # 2 graphs of 2 nodes, all 4 nodes orthogonal
    per_graph = math.log(1 + 2 * math.exp(-2))  # 1 + 1 negatives of cosine 0
    in_batch = math.log(1 + 6 * math.exp(-2))  # 3 + 3 negatives
    assert grace_loss(z, z, 0.5).item() == pytest.approx(per_graph, abs=1e-6)
    assert grace_loss(z, z, 0.5, in_batch=True).item() == pytest.approx(in_batch, abs=1e-6)


def test_order_label_of_each_permutation_and_the_reverse_equivalent_classes():
    orders = torch.tensor(PERMUTATIONS)
    assert PERMUTATIONS == ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
    assert order_targets(orders).tolist() == [0, 1, 2, 3, 4, 5]
    # a permutation and its reverse share a class: 012~210, 021~120, 102~201
    assert order_targets(orders, reverse_equivalent=True).tolist() == [0, 1, 2, 1, 2, 0]


def test_inter_snippet_graph_joins_temporally_adjacent_positions():
    a = order_adjacency(torch.tensor([[2, 0, 1]]))[0]  # positions hold times 2, 0, 1
    assert a.tolist() == [[1, 0, 1], [0, 1, 1], [1, 1, 1]]  # 2–1 and 0–1 are adjacent in time; 2–0 are not


def test_edge_dropping_never_removes_self_loops_and_stays_symmetric():
    a = torch.ones(200, 4, 4)
    dropped = drop_edges(a, 1.0)
    assert torch.equal(dropped, torch.eye(4).expand(200, 4, 4))  # p 1: only the self-loops remain
    torch.manual_seed(0)
    some = drop_edges(a, 0.2)
    assert torch.equal(some, some.transpose(1, 2))
    assert torch.equal(torch.diagonal(some, dim1=1, dim2=2), torch.ones(200, 4))
    off = some[:, ~torch.eye(4, dtype=torch.bool)]
    assert off.mean().item() == pytest.approx(0.8, abs=0.04)  # each edge kept with 1 − p


def test_motion_emphasis_gives_zero_temporal_mean():
    x = torch.rand(2, 1, 8, 5, 5) + torch.arange(8.0).view(1, 1, 8, 1, 1)
    y = motion_emphasis(x)
    assert torch.allclose(y.mean(dim=2), torch.zeros(2, 1, 5, 5), atol=1e-6)
    assert torch.allclose(y[:, :, 1] - y[:, :, 0], x[:, :, 1] - x[:, :, 0], atol=1e-6)  # motion kept
    enc_cfg = pretrain_cfg().encoder.model_copy(update={"clip_frames": 8, "motion_emphasis": True})
    encoder = build_encoder(enc_cfg).eval()
    assert isinstance(encoder, MotionEmphasis)
    static = torch.rand(1, 1, 1, 16, 16).expand(1, 1, 8, 16, 16)  # a still clip: nothing moves
    with torch.no_grad():
        assert torch.allclose(encoder(static), encoder(torch.zeros(1, 1, 8, 16, 16)), atol=1e-6)


def test_motion_emphasis_needs_a_clip():
    with pytest.raises(ValueError, match="clip_frames"):
        pretrain_cfg().encoder.model_validate({"name": "tiny3d", "motion_emphasis": True})


def test_order_head_cannot_beat_chance_through_the_graph():
    """Random weights, a tuple whose three snippets are the same noise (so nothing but the graph built
    from the true order could tell the orders apart): over the 6 orders the head's logits stay the same
    while the inter-snippet graph (and its loss) changes, so exactly one order in six is right."""
    torch.manual_seed(0)
    module = TCGLModule(pretrain_cfg()).eval()  # eval: no dropout, no augmentation
    module.log = lambda *a, **k: None
    logits, inter = [], []
    module.order_head.register_forward_hook(lambda m, i, o: logits.append(o.detach()))
    module.inter_gcn.register_forward_hook(lambda m, i, o: inter.append(o.detach()))
    noise = torch.rand(2, 1, 1, 8, 16, 16).expand(2, 3, 1, 8, 16, 16)  # 2 tuples, 3 identical snippets each
    for perm in PERMUTATIONS:
        with torch.no_grad():
            module.training_step({"snippets": noise, "order": torch.tensor([perm, perm])}, 0)
    assert all(torch.equal(out, logits[0]) for out in logits)  # the head never sees the graph
    assert not torch.allclose(inter[0], inter[2])  # while the graph (0 1 2 vs 1 0 2) did change
    predicted = logits[0].argmax(1)  # the same prediction for all 6 orders of each tuple
    correct = sum(int((predicted == order_targets(torch.tensor([p, p]))).sum()) for p in PERMUTATIONS)
    assert correct / (6 * 2) == pytest.approx(1 / 6)


def test_training_step_logs_every_term_and_reaches_the_encoder():
    torch.manual_seed(0)
    module = TCGLModule(pretrain_cfg(reverse_equivalent=True))
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(torch.as_tensor(value).detach()))
    loss = module.training_step({"snippets": torch.rand(4, 3, 1, 8, 16, 16),
                                 "order": torch.tensor([[0, 1, 2], [2, 1, 0], [1, 0, 2], [0, 2, 1]])}, 0)
    loss.backward()
    assert set(logged) == {f"train/{n}" for n in ("loss", "intra", "inter", "order", "order_accuracy",
                                                    "embedding_std")}
    assert module.order_head[-1].out_features == 3
    assert logged["train/loss"] == pytest.approx(logged["train/intra"] + logged["train/inter"] + logged["train/order"],
                                                 rel=1e-5)
    assert all(p.grad is not None for p in module.encoder.parameters() if p.requires_grad)


# ------------------------------------------------------------------ snippet sampling on short recordings
SHARDS = {"long": ("subj_a", 130), "mid": ("subj_b", 80), "short": ("subj_c", 63)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Cache:
    """Hand-written cache: frame i of every shard is filled with the value i."""
    root = tmp_path_factory.mktemp("cache")
    rows = []
    for shard_id, (subject, n) in SHARDS.items():
        writer = ShardWriter(root, shard_id, capacity=n, size=(4, 4))
        writer.append(np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None], (n, 4, 4)))
        labels = np.full(n, 1 if shard_id == "mid" else -1)  # "mid": one label on every frame
        writer.finish(audio=None, labels=labels, gaze=np.full((n, 2), np.nan), flags=np.zeros(n), info={})
        rows.append({"shard": shard_id, "subject": subject, "split": "train", "fps": 10.0, "n_frames": n,
                     "height": 4, "width": 4, "has_audio": False, "has_speech": False,
                     "n_labelled": int((labels >= 0).sum()), "digest": ""})
    write_json_atomic(root / "cache.json", {"classes": [], "audio_rate": 16000})
    (root / "splits.json").write_text(json.dumps({"train": ["subj_a", "subj_b", "subj_c"], "test": []}))
    write_index(root, pd.DataFrame(rows, columns=INDEX_COLUMNS))
    return Cache(root)


def test_tuple_span_and_stride_for_short_recordings():
    assert tuple_span(16, 8, 1) == 64 and tuple_span(16, 8, 2) == 127  # (3·16 + 2·8 − 1)·s + 1
    assert tuple_stride(130, 16, 8, 2) == 2  # fits at the configured stride
    assert tuple_stride(80, 16, 8, 2) == 1  # too short for stride 2 (127 frames): stride 1 (64)
    assert tuple_stride(64, 16, 8, 3) == 1
    assert tuple_stride(63, 16, 8, 2) == 0  # shorter than 64 frames: skipped
    assert tuple_indices(5, 2, 1, 2).tolist() == [[5, 7], [11, 13], [17, 19]]  # gaps of 1 sampled frame


def test_dataset_reduces_the_stride_skips_and_counts(cache):
    ds = SnippetTupleDataset(cache, list(SHARDS), "train", snippet_frames=16, gap_frames=8, stride=2,
                             tuples_per_epoch=40, seed=0)
    assert ds.shard_ids == ["long", "mid"] and ds.strides.tolist() == [2, 1]
    assert (ds.n_reduced, ds.n_skipped) == (1, 1)
    for i in range(40):
        item = ds[i]
        frames = item["snippets"][:, 0, :, 0, 0] * 255  # (3, 16) cached frame numbers, shuffled order
        s = int(item["stride"])
        order = item["order"].tolist()
        in_time = frames[np.argsort(order)]  # back to time order
        assert torch.allclose(in_time[:, 1] - in_time[:, 0], torch.full((3,), float(s)))
        assert torch.allclose(in_time[1:, 0] - in_time[:-1, 0], torch.full((2,), 24.0 * s))  # 16 + 8 sampled
        assert PERMUTATIONS[int(item["label"])] == tuple(order)
    with pytest.raises(DataError, match="shorter than the 64 frames"):
        SnippetTupleDataset(cache, ["short"], "train")


def test_clip_encoders_read_a_clip_centred_on_the_labelled_frame(cache):
    from usssl.data.datasets import FrameDataset
    from usssl.downstream.retrieval import RecordingClips

    ds = FrameDataset(cache, ["mid"], stride=40, clip_frames=4)  # labelled frames 0 and 40 of 80
    first, second = (ds[i]["video"][0, :, 0, 0] * 255 for i in range(2))  # (T,) cached frame numbers
    assert ds[0]["video"].shape == (1, 4, 4, 4)
    assert first.round().tolist() == [0, 0, 0, 1]  # frames −2 … 1, the start repeated
    assert second.round().tolist() == [38, 39, 40, 41]
    clips = RecordingClips(cache, ["long", "mid"], clip_frames=3, n_clips=3)
    assert clips.shard_ids == ["mid"] and clips.labels.tolist() == [1]  # "long" has no label
    centres = [float(clips[j]["video"][0, 1, 0, 0]) * 255 for j in range(3)]
    assert np.round(centres).tolist() == [0, 40, 79]  # uniformly spaced over the 80 frames

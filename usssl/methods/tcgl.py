"""TCGL: temporal contrastive graph learning with adaptive snippet order prediction.

Liu, Wang, Liu, Lan, Lin. *TCGL: Temporal Contrastive Graph Learning for Self-supervised Video
Representation Learning.* IEEE TIP 2022 (arXiv 2112.03587); METHODS.md §5. One training step:

1. A tuple of 3 snippets (16 frames, 8-frame gaps; ``data/snippets.py``) arrives shuffled, with its
   permutation. One augmentation draw covers the whole tuple, so the snippets differ only in time.
2. The shared encoder (with the motion emphasis of ``EncoderConfig.motion_emphasis``, applied to
   each clip it reads, as the official code does) encodes every snippet → 3 snippet features, and
   every sub-clip (4 × 4 frames per snippet) → 4 node features per snippet.
3. **Intra-snippet graphs**: the 4 sub-clip nodes chained 0-1-2-3 with self-loops, one dense GCN
   layer (``tcgl_graph.DenseGCN``), in two views — original, and feature-masked (p 0.1) with edges
   dropped (p 0.2). **Inter-snippet graph**: the 3 snippet nodes, an edge between temporally
   adjacent snippets (from the true order), its own GCN layer and the same two views.
4. GRACE loss (``tcgl_graph.grace_loss``, τ 0.5) on the projections (fc–ELU–fc, shared) of both
   views of every graph: L_intra (averaged over the snippets) and L_inter.
5. **Adaptive snippet order prediction**: an SE gate over the concatenated snippet features, then
   fc 512 → ReLU → dropout 0.5 → 6-way (or, with ``reverse_equivalent``, 3-way) classifier;
   L_order is its cross-entropy. Loss = mean(L_intra) + L_inter + L_order.

One departure that matters: in the official code the order classifier reads the inter-snippet GCN's
output, and that graph's edges are built from the true order, so the label leaks into the input
(the classifier can read which positions are joined). Here the order head reads only the encoder's
snippet features; the inter-snippet graph feeds the contrastive term alone (a test checks that the
order logits do not change with the graph). Also ours: one intra-snippet GCN shared by the three
snippet positions (the official code has one per position, which carries no meaning once the
positions are shuffled), and one SE squeeze for all snippets (the official: one per snippet).

    >>> module = TCGLModule(cfg.stage("pretrain"))
    >>> loss = module.training_step({"snippets": x, "order": perm}, 0)   # x: (B, 3, 1, 16, H, W)
"""

from __future__ import annotations

import logging

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from usssl.data.augment import ClipAugment
from usssl.data.snippets import N_SNIPPETS, PERMUTATIONS
from usssl.engine.optim import configure_optimization
from usssl.methods.order import order_label
from usssl.methods.tcgl_graph import (DenseGCN, chain_adjacency, drop_edges, grace_loss, mask_features,
                                      order_adjacency)
from usssl.models.encoders import build_encoder

log = logging.getLogger(__name__)


def order_targets(orders: torch.Tensor, reverse_equivalent: bool = False) -> torch.Tensor:
    """orders: (B, 3) permutations → (B,) class: the index in ``PERMUTATIONS`` (6 classes), or with
    ``reverse_equivalent`` the class of ``methods.order.order_label`` (3 classes: p and its reverse)."""
    rows = [tuple(int(i) for i in row) for row in orders.tolist()]
    labels = [order_label(r) if reverse_equivalent else PERMUTATIONS.index(r) for r in rows]
    return torch.tensor(labels, dtype=torch.long, device=orders.device)


class SnippetGate(nn.Module):
    """Squeeze-and-excitation over the concatenated snippet features (TCGL's adaptive fusion):
    g = σ(W₂ ReLU(W₁ f)), output f ⊙ g, with f = [f_1, f_2, f_3] (B, 3D) and W₁ of width 3D / r."""

    def __init__(self, dim: int, reduction: int = 6) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(dim, max(1, dim // reduction)), nn.ReLU(inplace=True),
                                  nn.Linear(max(1, dim // reduction), dim), nn.Sigmoid())

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """f: (B, dim) → (B, dim)."""
        return f * self.gate(f)


class TCGLModule(L.LightningModule):
    """Encoder + intra/inter-snippet GCNs + projection + order head, trained with TCGL's three losses.

    Args:
        cfg: the pretrain stage's config (``.encoder``, ``.optimizer``, ``.augment``, ``.tcgl``).
        encoder: optional encoder ``(B, C, T, H, W) -> (B, D)`` instead of ``build_encoder(cfg.encoder)``.

    Attributes:
        encoder: the encoder that transfers downstream; everything else is discarded after pretraining.
    """

    def __init__(self, cfg, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.save_hyperparameters({"cfg": cfg.model_dump(mode="json")})
        self.cfg, self.tc = cfg, cfg.tcgl
        self.encoder = encoder if encoder is not None else build_encoder(cfg.encoder)
        d = self.encoder.out_dim
        g = self.tc.graph_dim or d
        self.intra_gcn, self.inter_gcn = DenseGCN(d, g), DenseGCN(d, g)
        self.projection = nn.Sequential(nn.Linear(g, g), nn.ELU(), nn.Linear(g, g))  # fc–ELU–fc (GRACE)
        self.n_classes = 3 if self.tc.reverse_equivalent else len(PERMUTATIONS)
        self.gate = SnippetGate(N_SNIPPETS * d, self.tc.se_reduction)
        self.order_head = nn.Sequential(nn.Linear(N_SNIPPETS * d, self.tc.order_hidden), nn.ReLU(inplace=True),
                                        nn.Dropout(self.tc.order_dropout),
                                        nn.Linear(self.tc.order_hidden, self.n_classes))
        self.augment = ClipAugment() if cfg.augment else None
        self.register_buffer("chain", chain_adjacency(self.tc.sub_clips), persistent=False)

    def encode(self, snippets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """snippets: (B, 3, C, L, H, W) in [0, 1] → (snippet features (B, 3, D), sub-clip node features
        (B·3, K, D)), K = ``sub_clips``."""
        b, s, c, t, h, w = snippets.shape
        if self.training and self.augment is not None:  # one draw for the whole tuple
            tuple_clip = snippets.permute(0, 2, 1, 3, 4, 5).reshape(b, c, s * t, h, w)
            snippets = self.augment(tuple_clip).view(b, c, s, t, h, w).permute(0, 2, 1, 3, 4, 5)
        x = (snippets - 0.5) / 0.25
        k = self.tc.sub_clips
        clips = x.reshape(b * s, c, t, h, w)  # (B·3, C, L, H, W)
        subs = clips.view(b * s, c, k, t // k, h, w).permute(0, 2, 1, 3, 4, 5).reshape(b * s * k, c, t // k, h, w)
        feats = self.encoder(clips)  # (B·3, D); two passes: the clip lengths differ
        nodes = self.encoder(subs)  # (B·3·K, D)
        return feats.view(b, s, -1), nodes.view(b * s, k, -1)

    def order_logits(self, snippet_feats: torch.Tensor) -> torch.Tensor:
        """(B, 3, D) snippet features, in the shuffled order → (B, n_classes). Reads nothing built from
        the true order."""
        return self.order_head(self.gate(snippet_feats.flatten(1)))

    def graph_loss(self, gcn: DenseGCN, nodes: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """GRACE between the original view and a masked, edge-dropped view: nodes (G, N, D), adj (G, N, N)
        or (N, N) → ()."""
        tc = self.tc
        adj = adj.expand(nodes.shape[0], -1, -1) if adj.dim() == 2 else adj
        h1 = gcn(nodes, adj)
        h2 = gcn(mask_features(nodes, tc.feature_mask_p), drop_edges(adj, tc.edge_drop_p))
        return grace_loss(self.projection(h1), self.projection(h2), tc.temperature, tc.in_batch_negatives)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        tc = self.tc
        order = batch["order"]  # (B, 3): the true time index of each position
        snippet_feats, nodes = self.encode(batch["snippets"])
        l_intra = self.graph_loss(self.intra_gcn, nodes, self.chain)  # mean over the B·3 snippet graphs
        l_inter = self.graph_loss(self.inter_gcn, snippet_feats, order_adjacency(order).to(snippet_feats.dtype))
        logits = self.order_logits(snippet_feats)
        target = order_targets(order, tc.reverse_equivalent)
        l_order = F.cross_entropy(logits, target)
        loss = tc.intra_weight * l_intra + tc.inter_weight * l_inter + tc.order_weight * l_order
        with torch.no_grad():
            acc = (logits.argmax(1) == target).float().mean()
            emb_std = F.normalize(snippet_feats.flatten(0, 1), dim=-1).std(dim=0).mean()
        size = order.shape[0]
        for name, value in (("loss", loss), ("intra", l_intra), ("inter", l_inter), ("order", l_order),
                            ("order_accuracy", acc), ("embedding_std", emb_std)):
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, prog_bar=name == "loss", batch_size=size)
        return loss

    def configure_optimizers(self) -> dict:
        return configure_optimization(self.parameters(), self.cfg.optimizer)


def make_dataset(cache, shards: list[str], split: str | None, cfg, seed: int):
    """(SnippetTupleDataset of ``shards``, the short-recording counts): the registry's dataset."""
    from usssl.data.snippets import SnippetTupleDataset

    tc = cfg.tcgl
    ds = SnippetTupleDataset(cache, shards, split, snippet_frames=tc.snippet_frames, gap_frames=tc.gap_frames,
                             stride=tc.stride, tuples_per_epoch=tc.tuples_per_epoch, seed=seed)
    return ds, {"data/tcgl_recordings": len(ds.shard_ids), "data/tcgl_reduced_stride": ds.n_reduced,
                "data/tcgl_skipped_short": ds.n_skipped}


def make_module(cfg, cache) -> TCGLModule:
    """The registry's LightningModule for this method."""
    if cfg.encoder.clip_frames == 1:
        log.warning("tcgl: pretrain.encoder.clip_frames is 1, so downstream tasks will read this clip encoder "
                    "single frames; set it to %d (the snippet length) to read clips", cfg.tcgl.snippet_frames)
    return TCGLModule(cfg)

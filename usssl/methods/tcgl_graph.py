"""TCGL's graph parts: dense adjacency matrices, a one-layer dense GCN, the graph views and GRACE.

Liu, Wang, Liu, Lan, Lin. *TCGL: Temporal Contrastive Graph Learning for Self-supervised Video
Representation Learning.* IEEE TIP 2022 (arXiv 2112.03587). A graph here has 3–4 nodes, so every
adjacency is a dense (G, N, N) tensor **with its self-loops on the diagonal** (Â = A + I) and no
graph library is needed:

- ``chain_adjacency(n)``: the intra-snippet graph, sub-clips 0-1-…-(n−1) in time order;
- ``order_adjacency(perms)``: the inter-snippet graph of shuffled snippets, an edge between the
  positions of temporally adjacent snippets (built from the *true* order: only the contrastive term
  may read it, never the order head);
- ``normalized_adjacency(Â)`` = D^-½ Â D^-½ and ``DenseGCN``: H' = D^-½ Â D^-½ H W + b (Kipf and
  Welling, ICLR 2017, Eq. 2; the official code's ``GCNConv``, which adds the self-loops itself);
- the second view: ``mask_features`` (feature columns zeroed with p 0.1, one mask per graph) and
  ``drop_edges`` (each undirected edge removed with p 0.2, self-loops always kept; the official
  code's ``dropout_adj`` drops each direction independently, which makes the graph asymmetric —
  ours drops both directions together);
- ``grace_loss``: GRACE (Zhu et al., 2020, Eq. 1) with cosine similarity and τ 0.5, symmetric.

    >>> a = normalized_adjacency(chain_adjacency(4))                  # (4, 4)
    >>> loss = grace_loss(z1, z2, temperature=0.5)                    # z: (G, N, D)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def chain_adjacency(n_nodes: int) -> torch.Tensor:
    """(n, n) Â of the chain 0-1-…-(n−1) plus self-loops (1 on the diagonal and next to it)."""
    if n_nodes < 1:
        raise ValueError(f"a graph needs at least 1 node, got {n_nodes}")
    idx = torch.arange(n_nodes)
    return ((idx[:, None] - idx[None, :]).abs() <= 1).float()


def order_adjacency(perms: torch.Tensor) -> torch.Tensor:
    """perms: (B, S) long, ``perms[b, p]`` = the true time index of the snippet shown at position p
    → (B, S, S) Â with an edge between positions whose snippets are adjacent in time, plus self-loops."""
    gap = (perms[:, :, None] - perms[:, None, :]).abs()  # (B, S, S)
    return (gap <= 1).float()


def normalized_adjacency(adj: torch.Tensor) -> torch.Tensor:
    """D^-½ Â D^-½ of ``adj`` (…, N, N) with its self-loops already in; D = diag(row sums of Â)."""
    inv_sqrt = adj.sum(-1).clamp_min(1e-12).rsqrt()  # (…, N)
    return inv_sqrt[..., :, None] * adj * inv_sqrt[..., None, :]


class DenseGCN(nn.Module):
    """One graph convolution on dense adjacencies: H' = D^-½ Â D^-½ H W + b (no activation, as the
    official code's single ``GCNConv``).

    Args:
        in_dim, out_dim: node feature sizes.

    ``forward(h (G, N, in_dim), adj (G, N, N) or (N, N)) -> (G, N, out_dim)``.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        a = normalized_adjacency(adj)
        if a.dim() == 2:
            a = a.expand(h.shape[0], -1, -1)  # (G, N, N)
        hw = F.linear(h, self.linear.weight)  # (G, N, out): H·W, the bias added after aggregation
        return torch.bmm(a, hw) + self.linear.bias  # (G, N, out)


def mask_features(h: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """h: (G, N, D) → a copy with each feature column zeroed with probability ``p``, one mask per graph."""
    if p <= 0:
        return h
    keep = torch.rand(h.shape[0], 1, h.shape[2], generator=generator).to(h.device) >= p  # (G, 1, D)
    return h * keep.to(h.dtype)


def drop_edges(adj: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """adj: (G, N, N) or (N, N) symmetric Â → a copy where each undirected edge i–j (i ≠ j) is removed
    with probability ``p`` (both directions together); the self-loops on the diagonal always stay."""
    if p <= 0:
        return adj
    shape = adj.shape
    a = adj.reshape(-1, shape[-2], shape[-1])
    n = shape[-1]
    draw = torch.rand(a.shape[0], n, n, generator=generator).to(adj.device) >= p  # (G, N, N)
    upper = torch.triu(draw, diagonal=1)
    keep = upper | upper.transpose(1, 2) | torch.eye(n, dtype=torch.bool, device=adj.device)
    return (a * keep.to(a.dtype)).reshape(shape)


def grace_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5,
               in_batch: bool = False) -> torch.Tensor:
    """GRACE's symmetric node-level contrastive loss (Zhu et al., *Deep Graph Contrastive
    Representation Learning*, 2020, Eq. 1), the mean over nodes of ½(ℓ(u_i, v_i) + ℓ(v_i, u_i)) with

        ℓ(u_i, v_i) = −log e^{θ(u_i,v_i)/τ} / (e^{θ(u_i,v_i)/τ} + Σ_{k≠i} e^{θ(u_i,v_k)/τ}
                                                + Σ_{k≠i} e^{θ(u_i,u_k)/τ})

    θ the cosine similarity: the positive is the same node in the other view, the negatives every
    other node of both views.

    Args:
        z1, z2: (G, N, D) projected node embeddings of the two views of G graphs of N nodes.
        temperature: τ (paper: 0.5).
        in_batch: negatives from every node of all G graphs (ours: a TCGL graph has only 3–4 nodes);
            False: only the other nodes of the same graph (the paper).

    Returns:
        () the loss.
    """
    if in_batch:
        z1, z2 = z1.reshape(1, -1, z1.shape[-1]), z2.reshape(1, -1, z2.shape[-1])  # one graph of G·N nodes
    u, v = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)

    def one_way(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        between = torch.bmm(a, b.transpose(1, 2)) / temperature  # (G, N, N): θ(a_i, b_k)/τ
        within = torch.bmm(a, a.transpose(1, 2)) / temperature  # (G, N, N): θ(a_i, a_k)/τ
        eye = torch.eye(a.shape[1], dtype=torch.bool, device=a.device)
        logits = torch.cat([between, within.masked_fill(eye, float("-inf"))], dim=-1)  # (G, N, 2N), no self-pair
        return -(between.diagonal(dim1=1, dim2=2) - torch.logsumexp(logits, dim=-1))  # (G, N)

    return 0.5 * (one_way(u, v) + one_way(v, u)).mean()

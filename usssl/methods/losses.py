"""Contrastive losses shared by the self-supervised methods.

``info_nce`` is the symmetric two-tower InfoNCE of CLIP (Radford et al., ICML 2021, and van den
Oord et al., 2018): logits = a·bᵀ / τ on L2-normalised embeddings, cross-entropy from a to b and
from b to a, each row's positive on the diagonal, averaged. Negatives come from the global batch
(``gather_with_grad``).

    >>> loss = info_nce(video_emb, speech_emb, temperature=0.1)   # (B, D), (B, D) -> scalar
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from usssl.engine.distributed import gather_with_grad, rank


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: float = 0.1,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Symmetric InfoNCE between paired embeddings.

    Args:
        a: (B, D) embeddings of one modality (row i pairs with ``b[i]``).
        b: (B, D) embeddings of the other modality.
        temperature: τ > 0 dividing the cosine similarities.
        weight: optional (B,) per-pair weights (e.g. an affinity gate); the loss is their
            weighted mean over the local pairs. All pairs still act as negatives.
        reduction: ``mean`` (weighted mean) or ``none`` ((B,) per-pair losses, unweighted).

    Returns:
        scalar loss, or (B,) with ``reduction="none"``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    all_a, all_b = gather_with_grad(a), gather_with_grad(b)  # (R·B, D)
    offset = rank() * a.shape[0]
    target = torch.arange(a.shape[0], device=a.device) + offset  # positives in the global batch
    logits_ab = a @ all_b.T / temperature  # (B, R·B)
    logits_ba = b @ all_a.T / temperature  # (B, R·B)
    per_pair = 0.5 * (
        F.cross_entropy(logits_ab, target, reduction="none")
        + F.cross_entropy(logits_ba, target, reduction="none")
    )  # (B,)
    if reduction == "none":
        return per_pair
    if weight is None:
        return per_pair.mean()
    weight = weight.to(per_pair.dtype)
    return (per_pair * weight).sum() / weight.sum().clamp_min(1e-8)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent, the normalised-temperature cross-entropy of SimCLR, over the global batch.

    Chen, Kornblith, Norouzi, Hinton, ICML 2020, Eq. 1 (used by CVRL, Qian et al., CVPR 2021):
    for the 2N views of N items, ℓ(i, j) = −log[exp(s_ij/τ) / Σ_{k≠i} exp(s_ik/τ)] with s the
    cosine similarity, averaged over all 2N anchors. Each anchor's negatives are the other 2N − 2
    views of the global batch (``gather_with_grad``), both views of every other item.

    Args:
        z1: (B, D) embeddings of the first view (row i pairs with ``z2[i]``).
        z2: (B, D) embeddings of the second view.
        temperature: τ > 0.

    Returns:
        scalar: the mean over this rank's 2B anchors (the mean over ranks is the global loss).

        >>> loss = nt_xent(head(encoder(clip_a)), head(encoder(clip_b)), temperature=0.1)
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b = z1.shape[0]
    z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    everyone = torch.cat([gather_with_grad(z1), gather_with_grad(z2)], dim=0)  # (2·R·B, D)
    n_global = everyone.shape[0] // 2  # R·B items
    logits = torch.cat([z1, z2], dim=0) @ everyone.T / temperature  # (2B, 2·R·B)
    local = torch.arange(b, device=z1.device) + rank() * b  # this rank's items in the global batch
    self_index = torch.cat([local, local + n_global])  # each anchor's own column
    target = torch.cat([local + n_global, local])  # the other view of the same item
    logits = logits.masked_fill(
        torch.arange(2 * n_global, device=z1.device)[None] == self_index[:, None], float("-inf")
    )
    return F.cross_entropy(logits, target)

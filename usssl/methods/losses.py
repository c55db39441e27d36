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

from usssl.methods.distributed import gather_with_grad, rank


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: float = 0.1,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE between paired embeddings.

    Args:
        a: (B, D) embeddings of one modality (row i pairs with ``b[i]``).
        b: (B, D) embeddings of the other modality.
        temperature: τ > 0 dividing the cosine similarities.
        weight: optional (B,) per-pair weights (e.g. an affinity gate); the loss is their
            weighted mean over the local pairs. All pairs still act as negatives.

    Returns:
        scalar loss.
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
    if weight is None:
        return per_pair.mean()
    weight = weight.to(per_pair.dtype)
    return (per_pair * weight).sum() / weight.sum().clamp_min(1e-8)

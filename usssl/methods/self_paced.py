"""The video–speech paper's hard-negative contrastive loss (Eq. 2) and self-paced pair weighting.

Jiao et al., MICCAI 2020, Eq. 2, for a frame embedding y_v, its speech y_s and the hard negative
speech y_s' from a nearby interval of the same scan:

    L_cont = −log[(e^{y_v·y_s} − e^{y_v·y_s'}) / Σ_k e^{y_v·y_k}]

with dot-product similarity and no temperature. The paper also names a hard positive y_s⁺ (speech
of the same interval at another time); we count it as a second positive (multi-positive InfoNCE,
ours: the paper names it but does not write it into Eq. 2): the numerator holds e^{y_v·y_s} +
e^{y_v·y_s⁺} and the denominator gains e^{y_v·y_s⁺}. Write a = y_v·y_s, p = y_v·y_s⁺,
b = y_v·y_s', P = log(e^a + e^p) and S = Σ_k e^{y_v·y_k} + e^p (each divided by the temperature).
The numerator P − e^b is ≤ 0 whenever the hard negative is at least as similar as the positives,
where the log is undefined. Two numerically safe forms:

- ``infonce_hard`` (default): the standard InfoNCE with the hard negative added to the
  denominator, ℓ = log(S + e^b) − P; it keeps the paper's intent (push the hard negative below the
  positives) and is defined everywhere.
- ``eq2_clamped``: the paper's form in log space, ℓ = log S − P − log(1 − e^{b−P}). Where
  1 − e^{b−P} would fall below ``eps`` (d = P − b below d₀ = −log(1 − eps)) the last term is
  continued linearly, −log(eps) + (d₀ − d), so the hard negative is still pushed away with a unit
  gradient exactly where it should be (a plain clamp would give it none there).

The sum Σ_k runs over the speech windows of the (global) batch, the positive included; the paper
writes k ≠ v, which we read as "every speech window", the video itself not being one. ``keep``
drops windows from the negatives (the affinity gate: a low-affinity window is noise, neither a
positive nor a negative of the cross-modal terms); a row whose hard negative is missing
(``neg_valid`` 0: a one-interval scan) loses the e^b term.

Self-paced learning (after Kumar et al., NeurIPS 2010) is our extension. The pace λ is the
fraction of each (per-device) batch admitted: pairs are ranked by affinity × easiness, easiness
e^{−ℓ} (the probability the loss gives the positive), and the top ⌈λ·B⌉ count fully (``hard``),
or with weight 1 − rank/(λ·B) (``linear``). λ starts at ``pace_start_fraction`` and is multiplied
by ``pace_growth`` each epoch, up to 1. A pace in loss units would depend on the batch size
(chance-level InfoNCE is ln B) and admit nothing at initialisation; a fraction of the batch does not.

    >>> per_pair = video_speech_contrastive(y_v, y_s, y_neg, form="infonce_hard", y_pos=y_hp)   # (B,)
    >>> pacer = SelfPacedWeights(start_fraction=0.5, growth=1.3); w = pacer(per_pair.detach(), affinity)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from usssl.engine.distributed import gather_with_grad, rank


def video_speech_contrastive(
    y_v: torch.Tensor,
    y_s: torch.Tensor,
    y_neg: torch.Tensor,
    form: str = "infonce_hard",
    temperature: float = 1.0,
    normalize: bool = False,
    eps: float = 1e-6,
    y_pos: torch.Tensor | None = None,
    neg_valid: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pair video→speech contrastive loss with hard negative and hard positive (paper Eq. 2, safe).

    Args:
        y_v: (B, D) frame embeddings.
        y_s: (B, D) positive speech embeddings (row i pairs with ``y_v[i]``).
        y_neg: (B, D) hard-negative speech embeddings (same scan, nearby interval).
        form: ``infonce_hard`` or ``eq2_clamped`` (see the module docstring).
        temperature: similarities are divided by this (the paper: 1, no temperature).
        normalize: L2-normalise the embeddings first (the paper: no).
        eps: where ``eq2_clamped`` switches to its linear continuation.
        y_pos: optional (B, D) hard-positive speech embeddings (same interval, another time).
        neg_valid: optional (B,) 1 where the row has a hard negative, 0 where it has none.
        keep: optional (B,) bool, the speech windows that act as negatives of the other rows (every
            row keeps its own positive); gathered over ranks like the embeddings.

    Returns:
        (B,) losses.
    """
    if form not in ("infonce_hard", "eq2_clamped"):
        raise ValueError(f"form must be 'infonce_hard' or 'eq2_clamped', got {form!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if normalize:
        y_v, y_s, y_neg = (F.normalize(t, dim=-1) for t in (y_v, y_s, y_neg))
        y_pos = None if y_pos is None else F.normalize(y_pos, dim=-1)
    all_s = gather_with_grad(y_s)  # (R·B, D)
    target = torch.arange(y_v.shape[0], device=y_v.device) + rank() * y_v.shape[0]
    logits = y_v @ all_s.T / temperature  # (B, R·B)
    if keep is not None:
        kept = gather_with_grad(keep.to(y_v.dtype)) > 0.5  # (R·B,)
        own = torch.arange(logits.shape[1], device=y_v.device)[None] == target[:, None]  # (B, R·B)
        logits = logits.masked_fill(~(kept[None] | own), float("-inf"))
    pos = logits.gather(1, target[:, None]).squeeze(1)  # (B,) a = y_v·y_s
    log_num, log_den = pos, torch.logsumexp(logits, dim=1)  # (B,) P, log S
    if y_pos is not None:
        hard_pos = (y_v * y_pos).sum(-1) / temperature  # (B,) p = y_v·y_s⁺
        log_num, log_den = torch.logaddexp(pos, hard_pos), torch.logaddexp(log_den, hard_pos)
    neg = (y_v * y_neg).sum(-1) / temperature  # (B,) b = y_v·y_s'
    if neg_valid is not None:
        neg = neg.masked_fill(neg_valid <= 0, float("-inf"))  # no hard negative: e^b = 0
    if form == "infonce_hard":
        return torch.logaddexp(log_den, neg) - log_num
    d = log_num - neg  # (B,) P − b
    d0 = -math.log1p(-eps)
    gap = -torch.log((1.0 - torch.exp(-d)).clamp_min(eps))  # −log(1 − e^{b−P})
    linear = -math.log(eps) + (d0 - d)  # its continuation below d₀: the hard negative keeps a gradient
    return log_den - log_num + torch.where(d > d0, gap, linear)


class SelfPacedWeights(nn.Module):
    """Per-pair weights from the pairs' rank in the batch and a growing pace λ (a registered buffer).

    Args:
        start_fraction: λ at epoch 0, the fraction of each batch admitted, in (0, 1].
        growth: λ is multiplied by this at every ``step_epoch``, up to 1.
        mode: ``hard`` (v = [rank < λ·B]) or ``linear`` (v = clip(1 − rank/(λ·B), 0, 1)).
    """

    def __init__(self, start_fraction: float = 0.5, growth: float = 1.3, mode: str = "hard") -> None:
        super().__init__()
        if not 0 < start_fraction <= 1 or growth < 1:
            raise ValueError(f"need 0 < start_fraction <= 1 and growth >= 1, got {start_fraction}, {growth}")
        if mode not in ("hard", "linear"):
            raise ValueError(f"mode must be 'hard' or 'linear', got {mode!r}")
        self.mode = mode
        self.growth = growth
        self.register_buffer("pace", torch.tensor(float(start_fraction)))

    @torch.no_grad()
    def forward(self, losses: torch.Tensor, affinity: torch.Tensor | None = None) -> torch.Tensor:
        """losses: (B,) detached per-pair losses, affinity: optional (B,) in [0, 1] → (B,) weights in [0, 1].

        Pairs are ranked by affinity × e^{−loss}, ties (e.g. several zero affinities) by e^{−loss}.
        """
        easiness = torch.exp(-losses)  # (B,) in (0, 1]
        score = easiness if affinity is None else easiness * affinity.to(losses.dtype)
        order = torch.argsort(easiness, descending=True, stable=True)
        order = order[torch.argsort(score[order], descending=True, stable=True)]  # best first
        ranks = torch.empty_like(order)
        ranks[order] = torch.arange(order.numel(), device=order.device)
        u = ranks.to(losses.dtype) / max(losses.numel(), 1)  # (B,) rank fraction, 0 = easiest
        if self.mode == "hard":
            return (u < self.pace).to(losses.dtype)
        return (1.0 - u / self.pace).clamp(0.0, 1.0)

    @torch.no_grad()
    def step_epoch(self) -> None:
        """Admit harder pairs: λ ← min(1, λ · growth)."""
        self.pace.copy_((self.pace * self.growth).clamp(max=1.0))

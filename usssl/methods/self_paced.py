"""The video–speech paper's hard-negative contrastive loss (Eq. 2) and self-paced pair weighting.

Jiao et al., MICCAI 2020, Eq. 2, for a frame embedding y_v, its speech y_s and the hard negative
speech y_s' from a nearby interval of the same scan:

    L_cont = −log[(e^{y_v·y_s} − e^{y_v·y_s'}) / Σ_k e^{y_v·y_k}]

with dot-product similarity and no temperature. The numerator is ≤ 0 whenever the hard negative is
at least as similar as the positive, where the log is undefined. Two numerically safe forms:

- ``infonce_hard`` (default): the standard InfoNCE with the hard negative added to the
  denominator, −log[e^{a} / (Σ_k e^{y_v·y_k} + e^{b})]; it keeps the paper's intent (push the hard
  negative below the positive) and is defined everywhere.
- ``eq2_clamped``: the paper's form computed in log space, log(e^{a} − e^{b}) = a + log(1 − e^{b−a}),
  with 1 − e^{b−a} clamped to at least ``eps``; where the numerator would be ≤ 0 the loss is
  −log(eps · e^{a} / Σ) and its gradient still lowers b − a through the denominator.

The sum Σ_k runs over the speech windows of the (global) batch, the positive included; the paper
writes k ≠ v, which we read as "every speech window", the video itself not being one.

Self-paced learning (Kumar et al., NeurIPS 2010) is our extension: a pair's weight is 1 when its
loss is below the pace λ and 0 otherwise (``hard``), or 1 − loss/λ clipped to [0, 1] (``linear``);
λ starts at ``pace_start`` and is multiplied by ``pace_growth`` each epoch, admitting harder pairs
as training advances. The affinity gate stays the default.

    >>> per_pair = video_speech_contrastive(y_v, y_s, y_neg, form="infonce_hard")   # (B,)
    >>> pacer = SelfPacedWeights(pace_start=2.0, pace_growth=1.3); w = pacer(per_pair.detach())
"""

from __future__ import annotations

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
) -> torch.Tensor:
    """Per-pair video→speech contrastive loss with a hard negative (paper Eq. 2, safe forms).

    Args:
        y_v: (B, D) frame embeddings.
        y_s: (B, D) positive speech embeddings (row i pairs with ``y_v[i]``).
        y_neg: (B, D) hard-negative speech embeddings (same scan, nearby interval).
        form: ``infonce_hard`` or ``eq2_clamped`` (see the module docstring).
        temperature: similarities are divided by this (the paper: 1, no temperature).
        normalize: L2-normalise the embeddings first (the paper: no).
        eps: the clamp of ``eq2_clamped``.

    Returns:
        (B,) losses.
    """
    if form not in ("infonce_hard", "eq2_clamped"):
        raise ValueError(f"form must be 'infonce_hard' or 'eq2_clamped', got {form!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if normalize:
        y_v, y_s, y_neg = (F.normalize(t, dim=-1) for t in (y_v, y_s, y_neg))
    all_s = gather_with_grad(y_s)  # (R·B, D)
    target = torch.arange(y_v.shape[0], device=y_v.device) + rank() * y_v.shape[0]
    logits = y_v @ all_s.T / temperature  # (B, R·B)
    pos = logits.gather(1, target[:, None]).squeeze(1)  # (B,) a = y_v·y_s
    neg = (y_v * y_neg).sum(-1) / temperature  # (B,)   b = y_v·y_s'
    log_denominator = torch.logsumexp(logits, dim=1)  # (B,) log Σ_k e^{y_v·y_k}
    if form == "infonce_hard":
        return torch.logsumexp(torch.stack([log_denominator, neg], dim=1), dim=1) - pos
    gap = (1.0 - torch.exp(neg - pos)).clamp_min(eps)  # 1 − e^{b−a}, clamped
    return log_denominator - pos - torch.log(gap)


class SelfPacedWeights(nn.Module):
    """Per-pair weights from the current loss and a growing pace λ (a registered buffer).

    Args:
        pace_start: λ at epoch 0 (pairs with loss below it count fully in ``hard`` mode).
        pace_growth: λ is multiplied by this at every ``step_epoch``.
        mode: ``hard`` (v = [loss < λ]) or ``linear`` (v = clip(1 − loss/λ, 0, 1)).
    """

    def __init__(self, pace_start: float = 2.0, pace_growth: float = 1.3, mode: str = "hard") -> None:
        super().__init__()
        if pace_start <= 0 or pace_growth < 1:
            raise ValueError(f"need pace_start > 0 and pace_growth >= 1, got {pace_start}, {pace_growth}")
        if mode not in ("hard", "linear"):
            raise ValueError(f"mode must be 'hard' or 'linear', got {mode!r}")
        self.mode = mode
        self.growth = pace_growth
        self.register_buffer("pace", torch.tensor(float(pace_start)))

    @torch.no_grad()
    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        """losses: (B,) detached per-pair losses → (B,) weights in [0, 1]."""
        if self.mode == "hard":
            return (losses < self.pace).to(losses.dtype)
        return (1.0 - losses / self.pace).clamp(0.0, 1.0)

    @torch.no_grad()
    def step_epoch(self) -> None:
        """Admit harder pairs: λ ← λ · growth."""
        self.pace.mul_(self.growth)

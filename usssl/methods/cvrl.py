"""CVRL: contrastive video representation learning with temporally distant positives.

Qian, Meng, Gong, Yang, Wang, Belongie, Cui. *Spatiotemporal Contrastive Video Representation
Learning.* CVPR 2021. Two clips of the same video, drawn with the interval sampler
P(Δ) ∝ T − Δ (``data/clips.py: ClipPairDataset``), each augmented with its own temporally
consistent draw (``data/augment.py``), are encoded, projected by an MLP head
(3 × [Linear, BN, ReLU] + Linear to ``projection_dim``; paper: 2048 hidden, 128 out) and pulled
together with NT-Xent (τ = 0.1) against every other clip of the **global** batch
(``losses.nt_xent``, gathered across processes with gradients).

Two departures for ultrasound, both defaults of ``CVRLConfig`` (``config/methods.py``): the gap
between the clips is capped at ``max_gap_s`` = 2 s (a scan shows a new plane every few seconds;
Kinetics clips last 10 s) and the intensity jitter is ±25% instead of 0.8. With the paper's
values on the synthetic corpus the two views share no anatomy the encoder can find, NT-Xent stays
at ln(2B − 1) and the projections collapse onto one direction (``train/embedding_std`` ≈ 0.01–0.04).

    >>> module = CVRLModule(cfg.stage("pretrain"))
    >>> loss = module.training_step({"video_a": a, "video_b": b}, 0)     # (B, 1, n, H, W) each
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from usssl.data.augment import ContrastiveClipAugment
from usssl.engine.optim import configure_optimization
from usssl.methods.losses import nt_xent
from usssl.models.encoders import build_encoder
from usssl.models.heads import mlp


class CVRLModule(L.LightningModule):
    """Encoder + MLP head trained with NT-Xent on clip pairs of one video.

    Args:
        cfg: the pretrain stage's config (``.encoder``, ``.optimizer``, ``.augment``,
            ``.projection_dim``, ``.cvrl``); ``cfg.cvrl.temperature`` is the NT-Xent τ.
        encoder: optional encoder ``(B, C, T, H, W) -> (B, D)`` instead of ``build_encoder(cfg.encoder)``.

    Attributes:
        encoder: the encoder that transfers downstream.
        head: the projection head, discarded after pretraining.
    """

    def __init__(self, cfg, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.save_hyperparameters({"cfg": cfg.model_dump(mode="json")})
        self.cfg, self.cv = cfg, cfg.cvrl
        self.encoder = encoder if encoder is not None else build_encoder(cfg.encoder)
        hidden = self.cv.head_hidden_dim or self.encoder.out_dim
        self.head = mlp(self.encoder.out_dim, hidden, cfg.projection_dim, layers=self.cv.head_layers)
        self.augment = ContrastiveClipAugment.from_config(self.cv) if cfg.augment else None

    def embed(self, video_a: torch.Tensor, video_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views (B, C, n, H, W) in [0, 1] → projected embeddings (B, projection_dim) each."""
        if self.training and self.augment is not None:
            video_a, video_b = self.augment(video_a), self.augment(video_b)  # independent draws
        x = (torch.cat([video_a, video_b], dim=0) - 0.5) / 0.25  # (2B, C, n, H, W), one encoder pass
        z = self.head(self.encoder(x))  # (2B, projection_dim)
        return z.chunk(2, dim=0)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        z_a, z_b = self.embed(batch["video_a"], batch["video_b"])
        loss = nt_xent(z_a, z_b, self.cv.temperature)
        with torch.no_grad():
            na, nb = F.normalize(z_a, dim=-1), F.normalize(z_b, dim=-1)
            positive = (na * nb).sum(-1).mean()  # mean cosine of the positive pairs
            emb_std = na.std(dim=0).mean()
        size = z_a.shape[0]
        for name, value in (("loss", loss), ("nt_xent", loss), ("positive_cosine", positive),
                            ("embedding_std", emb_std)):
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, prog_bar=name == "loss", batch_size=size)
        return loss

    def configure_optimizers(self) -> dict:
        return configure_optimization(self.parameters(), self.cfg.optimizer)


def make_dataset(cache, shards: list[str], split: str | None, cfg, seed: int):
    """(ClipPairDataset of ``shards``, no data metrics): the registry's dataset for this method."""
    from usssl.data.clips import ClipPairDataset

    cv = cfg.cvrl
    return ClipPairDataset(cache, shards, split, clip_frames=cv.clip_frames, stride=cv.stride,
                           pairs_per_epoch=cv.pairs_per_epoch, max_gap_s=cv.max_gap_s, seed=seed), {}


def make_module(cfg, cache) -> CVRLModule:
    """The registry's LightningModule for this method."""
    return CVRLModule(cfg)

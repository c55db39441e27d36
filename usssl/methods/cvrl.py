"""CVRL: contrastive video representation learning with temporally distant positives.

Qian, Meng, Gong, Yang, Wang, Belongie, Cui. *Spatiotemporal Contrastive Video Representation
Learning.* CVPR 2021. Two clips of the same video, drawn with the interval sampler
P(Δ) ∝ T − Δ (``data/clips.py: ClipPairDataset``), each augmented with its own temporally
consistent draw (``data/augment.py``), are encoded, projected by an MLP head
(3 × [Linear, BN, ReLU] + Linear to ``projection_dim``; paper: 2048 hidden, 128 out) and pulled
together with NT-Xent (τ = 0.1) against every other clip of the **global** batch
(``losses.nt_xent``, gathered across processes with gradients).

Training follows the official code (tensorflow/models, official/projects/video_ssl:
``losses/losses.py``, ``configs/experiments/cvrl_pretrain_k600_200ep.yaml``):

- the loss is the **sum** of the two directions, loss_a + loss_b, each the mean over one view's
  anchors, i.e. twice the mean over all 2B anchors (:func:`cvrl_loss`), so the official lr 0.32
  gives the official step;
- weight decay acts on conv and linear kernels only, never on BatchNorm or biases
  (:func:`weight_decay_groups`; ``decay_bn_bias`` turns it back on everywhere);
- the learning rate warms up linearly from 0 over ``warmup_epochs``, per step, then follows the
  optimizer's schedule (official: 5 epochs, then cosine);
- BatchNorm in encoder and head is synchronised across processes under DDP on GPUs
  (``sync_batchnorm``, ``engine/distributed.py: sync_batchnorm_decision``).

Two departures for ultrasound, both defaults of ``CVRLConfig`` (``config/methods.py``): the gap
between the clips is capped at ``max_gap_s`` = 2 s (a scan shows a new plane every few seconds;
Kinetics clips last 10 s) and the intensity jitter is ±25% instead of 0.8. With the paper's
values on the synthetic corpus the two views share no anatomy the encoder can find, NT-Xent stays
at ln(2B − 1) and the projections collapse onto one direction (``train/embedding_std`` ≈ 0.01–0.04).

    >>> module = CVRLModule(cfg.stage("pretrain"))
    >>> loss = module.training_step({"video_a": a, "video_b": b}, 0)     # (B, 1, n, H, W) each
"""

from __future__ import annotations

import logging

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from usssl.data.augment import ContrastiveClipAugment
from usssl.engine.distributed import sync_batchnorm_decision
from usssl.engine.optim import configure_optimization
from usssl.methods.losses import nt_xent
from usssl.models.encoders import build_encoder
from usssl.models.heads import mlp

log = logging.getLogger(__name__)


def cvrl_loss(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent summed over the two directions, as the official CVRL code: loss_a + loss_b.

    loss_a is the mean over the B anchors of view a of −log softmax of the positive against the
    other 2·R·B − 2 clips of the global batch (loss_b likewise for view b), so the sum is twice
    ``nt_xent``, which averages over all 2B anchors.

    Args:
        z_a, z_b: (B, D) projections of the two views (row i of each from the same video).
        temperature: the NT-Xent τ.
    """
    return 2 * nt_xent(z_a, z_b, temperature)


def weight_decay_groups(module: nn.Module, decay_bn_bias: bool = False) -> list[dict]:
    """Optimizer parameter groups: conv and linear kernels (≥ 2-D) get the optimizer's weight decay;
    BatchNorm scales and shifts and every bias (≤ 1-D) get none, as the official code's L2 term,
    which sums over variables named ``kernel`` only. ``decay_bn_bias``: one group, decay on all."""
    params = [p for p in module.parameters() if p.requires_grad]
    if decay_bn_bias:
        return [{"params": params}]
    return [{"params": [p for p in params if p.ndim >= 2]},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (from 0): step / warmup_steps during the
    warm-up, then 1 (the official linear warm-up from a rate of 0)."""
    return 1.0 if step >= warmup_steps else step / warmup_steps


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
        loss = cvrl_loss(z_a, z_b, self.cv.temperature)  # loss_a + loss_b
        with torch.no_grad():
            na, nb = F.normalize(z_a, dim=-1), F.normalize(z_b, dim=-1)
            positive = (na * nb).sum(-1).mean()  # mean cosine of the positive pairs
            emb_std = na.std(dim=0).mean()
        size = z_a.shape[0]
        for name, value in (("loss", loss), ("nt_xent", loss / 2), ("positive_cosine", positive),
                            ("embedding_std", emb_std)):
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, prog_bar=name == "loss", batch_size=size)
        return loss

    def configure_optimizers(self) -> dict:
        return configure_optimization(weight_decay_groups(self, self.cv.decay_bn_bias), self.cfg.optimizer)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """One step at the scheduled rate times the warm-up factor; the scheduled rate is put back
        afterwards, so the per-epoch schedule (and a resumed run) never sees the warm-up."""
        steps = round(self.cv.warmup_epochs * self.trainer.num_training_batches)
        factor = warmup_factor(self.trainer.global_step, steps)
        scheduled = [group["lr"] for group in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, scheduled):
            group["lr"] = lr * factor
        optimizer.step(closure=optimizer_closure)
        for group, lr in zip(optimizer.param_groups, scheduled):
            group["lr"] = lr

    def configure_model(self) -> None:
        """Lightning's hook before the strategy wraps the model: SyncBatchNorm where it can run."""
        self.set_sync_batchnorm(self.trainer.world_size, self.trainer.strategy.root_device.type)

    def set_sync_batchnorm(self, world_size: int, device_type: str) -> bool:
        """Turn every BatchNorm of encoder and head into SyncBatchNorm when ``sync_batchnorm`` is on
        and ``world_size`` processes train on CUDA (``sync_batchnorm_decision``); log the decision.
        The parameter and buffer names do not change, so ``encoder.pt`` loads into a plain encoder."""
        use, why = sync_batchnorm_decision(self.cv.sync_batchnorm, world_size, device_type)
        log.info("pretrain.cvrl: %s", why)
        if use:
            self.encoder = nn.SyncBatchNorm.convert_sync_batchnorm(self.encoder)
            self.head = nn.SyncBatchNorm.convert_sync_batchnorm(self.head)
        return use


def make_dataset(cache, shards: list[str], split: str | None, cfg, seed: int):
    """(ClipPairDataset of ``shards``, no data metrics): the registry's dataset for this method."""
    from usssl.data.clips import ClipPairDataset

    cv = cfg.cvrl
    return ClipPairDataset(cache, shards, split, clip_frames=cv.clip_frames, stride=cv.stride,
                           pairs_per_epoch=cv.pairs_per_epoch, max_gap_s=cv.max_gap_s, seed=seed), {}


def make_module(cfg, cache) -> CVRLModule:
    """The registry's LightningModule for this method."""
    return CVRLModule(cfg)

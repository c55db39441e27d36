"""Optimizers and learning-rate schedules from an ``OptimizerConfig``, in Lightning's format.

Schedules step once per epoch. ``step`` divides the rate by ``1/gamma`` every ``step_epochs``
(the video–speech paper: lr 1e-3 ÷ 10 every 20 epochs); ``multistep`` at the given ``milestones``
(the downstream protocol: ÷ 10 at epochs 20 and 35); ``cosine`` anneals to 0 over
``cosine_epochs``.

    >>> configure_optimization(model.parameters(), cfg.optimizer)
    {'optimizer': SGD(...), 'lr_scheduler': {'scheduler': StepLR(...), 'interval': 'epoch'}}
"""

from __future__ import annotations

from typing import Any, Iterable

import torch


def build_optimizer(params: Iterable, cfg) -> torch.optim.Optimizer:
    """The optimizer of ``cfg`` (``params``: tensors or param-group dicts)."""
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-epoch schedule of ``cfg``, or None for a constant rate."""
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_epochs, gamma=cfg.gamma)
    if cfg.scheduler == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.cosine_epochs)
    return None


def configure_optimization(params: Iterable, cfg) -> dict[str, Any]:
    """What a LightningModule's ``configure_optimizers`` returns for ``cfg``."""
    optimizer = build_optimizer(params, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    if scheduler is None:
        return {"optimizer": optimizer}
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

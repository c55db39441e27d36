"""A Lightning Trainer built from the pipeline config, with atomic checkpoints and MLflow logging.

Checkpoints go to ``<output_dir>/checkpoints/<stage>/`` (``last.ckpt`` plus the latest epoch), at epoch
ends only (and where ``max_steps`` ends training; the loaders are not stateful, so a mid-epoch
position could not be restored). They are written to a temporary name then renamed, so a run killed
mid-write never leaves a corrupt file, and each holds every random state (``usssl.engine.rng``):
``usssl run --resume`` continues from ``last.ckpt`` with the weights and metrics, bit for bit, of a
run that was never stopped (same machine, same thread count).

    >>> trainer = build_trainer(cfg, "pretrain", tracker, max_epochs=10)
    >>> trainer.fit(module, loader, ckpt_path=resume_checkpoint(cfg, "pretrain"))
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from usssl.config import PipelineConfig
from usssl.engine.files import save_atomic
from usssl.engine.rng import RandomStateCallback
from usssl.engine.tracking import Tracker

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint atomically (``save_atomic``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        save_atomic(checkpoint, path)


class MLflowCallback(Callback):
    """Sends every ``train/*`` term per logged step and per epoch to the tracker (rank 0 only)."""

    def __init__(self, tracker: Tracker, every_n_steps: int, prefix: str = "") -> None:
        self.tracker = tracker
        self.every = every_n_steps
        self.prefix = prefix

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank != 0 or trainer.global_step % self.every:
            return
        metrics = {
            self.prefix + k[: -len("_step")]: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.endswith("_step")
        }
        self.tracker.log_metrics(metrics, step=trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.global_rank != 0:
            return
        metrics = {
            self.prefix + k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.endswith("_epoch")
        }
        metrics[self.prefix + "epoch"] = trainer.current_epoch
        self.tracker.log_metrics(metrics, step=trainer.current_epoch)


class EpochSeedCallback(Callback):
    """Gives datasets with ``set_epoch`` fresh, reproducible draws each epoch."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(trainer.current_epoch)


def checkpoint_dir(cfg: PipelineConfig, stage: str) -> Path:
    return Path(cfg.output_dir) / "checkpoints" / stage


def resume_checkpoint(cfg: PipelineConfig, stage: str) -> str | None:
    """``last.ckpt`` of a stage when it exists, else None."""
    last = checkpoint_dir(cfg, stage) / "last.ckpt"
    return str(last) if last.is_file() else None


def build_trainer(
    cfg: PipelineConfig,
    stage: str,
    tracker: Tracker,
    max_epochs: int,
    max_steps: int = -1,
    callbacks: list[Callback] | None = None,
    checkpoints: bool = True,
    metric_prefix: str = "",
) -> L.Trainer:
    """A Trainer from ``cfg.trainer`` for one stage (progress bar, checkpoints, MLflow)."""
    t = cfg.trainer
    cbs: list[Callback] = [MLflowCallback(tracker, t.log_every_n_steps, metric_prefix), EpochSeedCallback(),
                           RandomStateCallback()]  # after EpochSeedCallback: it remakes the epoch's iterator
    if checkpoints:
        cbs.append(
            ModelCheckpoint(dirpath=checkpoint_dir(cfg, stage), filename="epoch{epoch:03d}",
                            auto_insert_metric_name=False, save_last=True, save_top_k=1,
                            monitor=None, every_n_epochs=1, save_on_train_epoch_end=True)
        )
    if t.progress:  # rich's bar on a terminal, one line per epoch in a log file (usssl.engine.progress)
        from usssl.engine.progress import training_bar

        cbs.append(training_bar(refresh_rate=max(1, t.log_every_n_steps)))
    cbs += callbacks or []
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        max_epochs=max_epochs,
        max_steps=max_steps,
        logger=False,
        callbacks=cbs,
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=checkpoints,
        enable_progress_bar=t.progress,
        enable_model_summary=False,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip_val,
        default_root_dir=str(Path(cfg.output_dir)),
        num_sanity_val_steps=0,
    )

"""The pretrain stage: a self-supervised method on the training subjects only, its encoder saved.

The method comes from the registry (``usssl.methods.METHODS``): its module makes the dataset of the
training shards and the LightningModule; this stage never branches on a method name. Outputs in
``<output_dir>/pretrain`` (``pretrain-<name>`` for a later named stage): ``encoder.pt``
(``usssl.models.checkpoint``) and ``pretrain_data.json`` (the shards and subjects it saw).

Before anything is written the stage checks that an epoch of the training data holds at least one
full batch (:func:`check_batch_fits`): otherwise Lightning would train 0 steps, exit 0, and the
"pretrained" encoder would equal a random one. ``usssl validate`` runs the same check
(:func:`check_pretrain_data`) when the cache already exists.

    >>> run(cfg, cfg.stage("pretrain"), tracker, resume=False)["encoder"]
    'runs/demo/pretrain/encoder.pt'
"""

from __future__ import annotations

import logging
import shutil

from usssl.config import PipelineConfig
from usssl.engine.distributed import is_main_process
from usssl.engine.files import write_json_atomic
from usssl.engine.tracking import Tracker
from usssl.errors import DataError

log = logging.getLogger(__name__)


def pretrain_shards(cfg: PipelineConfig, pcfg, cache) -> tuple[list[str], str | None]:
    """(shard ids, split name for the dataset's check): the split's training subjects, or every
    subject outside fold ``pcfg.exclude_fold`` of the finetune stage's k folds."""
    if pcfg.exclude_fold is None:
        return cache.shard_ids("train"), "train"
    from usssl.data.splits import cache_fold, shards_of

    fcfg = cfg.stage("finetune")
    train, _ = cache_fold(cache, fcfg.folds, cfg.seed, pcfg.exclude_fold)
    return shards_of(cache, train), None


def check_batch_fits(pcfg, n_items: int, n_shards: int, key: str | None = None) -> int:
    """Optimizer steps per epoch: ``n_items // pcfg.batch_size`` (the loader drops a last partial batch).

    Raises:
        DataError: fewer items per epoch than one batch (0 steps); the message names the stage (``key``,
            default ``pretrain`` and its name) and the largest batch that fits.
    """
    key = key or (f"pretrain ({pcfg.name})" if pcfg.name else "pretrain")
    if n_items == 0:
        raise DataError(f"{key}: the {n_shards} training recording(s) give no training items for method "
                        f"'{pcfg.method}', so nothing can be learned; check the cache's training split (and, for "
                        "narration-based methods, that the recordings have speech)")
    steps = n_items // pcfg.batch_size
    if steps == 0:
        raise DataError(f"{key}.batch_size: {pcfg.batch_size} is larger than the {n_items} training items of one "
                        f"epoch (from {n_shards} training recording(s)), so pretraining would take 0 steps and the "
                        f"'pretrained' encoder would stay random; set batch_size to at most {n_items}, or draw more "
                        "items per epoch (pairs_per_epoch)")
    return steps


def check_pretrain_data(cfg: PipelineConfig, pcfg, key: str | None = None) -> int | None:
    """Steps per epoch of the pretrain stage ``pcfg`` (named ``key`` in errors) on the pipeline's cache
    (:func:`check_batch_fits` on the dataset the stage would build), for ``usssl validate``; None when an
    ingest stage of the pipeline has yet to write the cache. Without an ingest stage a missing cache is
    the DataError of ``Cache``."""
    from usssl.data.cache import Cache
    from usssl.methods import method_module

    try:
        cache = Cache(cfg.cache_dir)
    except DataError:
        if any(e.kind == "ingest" for e in cfg.stages):
            return None
        raise
    shards, split = pretrain_shards(cfg, pcfg, cache)
    dataset, _ = method_module(pcfg.method).make_dataset(cache, shards, split, pcfg, cfg.seed)
    return check_batch_fits(pcfg, len(dataset), len(shards), key)


def run(cfg: PipelineConfig, pcfg, tracker: Tracker, resume: bool) -> dict:
    """Train ``pcfg.method`` on the training shards; save the encoder (module docstring)."""
    import lightning as L
    from torch.utils.data import DataLoader

    from usssl.data.cache import Cache
    from usssl.engine.trainer import build_trainer, checkpoint_dir, resume_checkpoint
    from usssl.methods import method_module
    from usssl.models.checkpoint import save_encoder

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    cache = Cache(cfg.cache_dir)
    method = method_module(pcfg.method)
    shards, split = pretrain_shards(cfg, pcfg, cache)  # held-out subjects never reach pretraining
    dataset, data_metrics = method.make_dataset(cache, shards, split, pcfg, cfg.seed)
    check_batch_fits(pcfg, len(dataset), len(shards))  # before any output: 0 steps would "succeed"
    module = method.make_module(pcfg, cache)
    name = pcfg.name or pcfg.method
    out = cfg.pretrain_dir(name)
    stage = out.name  # "pretrain" or "pretrain-<name>": checkpoints and logs of this stage
    if is_main_process():
        write_json_atomic(out / "pretrain_data.json", {"exclude_fold": pcfg.exclude_fold, "shards": shards,
                                                       "subjects": dataset.subjects, "method": pcfg.method,
                                                       "name": name}, newline=False, default=str)
    tracker.log_params({"method": pcfg.method, "n_train_shards": len(shards)})
    tracker.log_metrics(data_metrics)
    loader = DataLoader(dataset, batch_size=pcfg.batch_size, shuffle=False, drop_last=True,
                        num_workers=cfg.trainer.num_workers)
    if not resume and is_main_process():
        shutil.rmtree(checkpoint_dir(cfg, stage), ignore_errors=True)
    trainer = build_trainer(cfg, stage, tracker, pcfg.max_epochs, pcfg.max_steps)
    trainer.fit(module, loader, ckpt_path=resume_checkpoint(cfg, stage) if resume else None)
    if trainer.global_rank == 0:
        save_encoder(out / "encoder.pt", module.encoder, pcfg.encoder, method=pcfg.method, name=name)
        if cfg.tracking.log_checkpoints:
            tracker.log_artifact(out / "encoder.pt", "checkpoints")
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.endswith("_epoch")}
    tracker.log_metrics({f"final/{k}": v for k, v in final.items()})
    return {"encoder": str(out / "encoder.pt"), "epochs": trainer.current_epoch, **final}

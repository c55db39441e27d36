"""The pretrain stage: a self-supervised method on training subjects only, its encoders saved.

The method comes from the registry (``usssl.methods.METHODS``): its module makes the dataset of the
training shards and the LightningModule; this stage never branches on a method name. It runs every
pretraining of ``usssl.stages.common.pretrain_runs``: one per fold and seed (strictly inductive, the
default with k folds), or one per seed on the ingest split's training subjects. Each writes, in
``<output_dir>/pretrain`` (``pretrain-<name>`` for a later named stage; ``fold<k>-seed<s>/`` or
``seed<s>/`` below it when there are several), ``encoder.pt`` (``usssl.models.checkpoint``) and
``pretrain_data.json`` (the shards and subjects it saw), and ``done.json`` once it has finished.
With ``--resume`` a finished pretraining (same epoch and step limits) is kept and an unfinished
one continues from its last checkpoint. In MLflow, a stage with several pretrainings gives each its
own run under the stage run (:func:`pretraining_run`: fold, seed and method as params, its curves
under the same names as every other's); a single pretraining logs into the stage run.

Before anything is written each pretraining checks that an epoch of its training data holds at least
one full batch (:func:`check_batch_fits`): otherwise Lightning would train 0 steps, exit 0, and the
"pretrained" encoder would equal a random one. ``usssl validate`` runs the same check
(:func:`check_pretrain_data`) when the cache already exists.

    >>> run(cfg, cfg.stage("pretrain"), tracker, resume=False)["encoders"]
    ['runs/demo/pretrain/encoder.pt']
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

from usssl.config import PipelineConfig
from usssl.engine.distributed import is_main_process
from usssl.engine.files import write_json_atomic
from usssl.engine.tracking import Tracker
from usssl.errors import DataError

log = logging.getLogger(__name__)


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
    from usssl.stages.common import pretrain_runs

    first = pretrain_runs(cfg, pcfg, cache)[0]  # every run draws the same number of items per epoch
    shards, split = run_shards(cache, pcfg, first)
    dataset, _ = method_module(pcfg.method).make_dataset(cache, shards, split, pcfg, first.seed)
    return check_batch_fits(pcfg, len(dataset), len(shards), key)


def run_shards(cache, pcfg, run) -> tuple[list[str], str | None]:
    """(shard ids, the split they are checked against) of one pretraining: the ingest split's training
    shards (checked against it), or a fold's subjects (disjoint from its test subjects by construction)."""
    from usssl.data.splits import shards_of

    if run.fold is None and pcfg.exclude_fold is None:
        return cache.shard_ids("train"), "train"
    return shards_of(cache, run.subjects), None


def train_encoder(cfg: PipelineConfig, pcfg, cache, shards: list[str], split: str | None, seed: int,
                  folder: Path, stage: str, tracker: Tracker, resume: bool, fold: int | None = None,
                  metric_prefix: str = "") -> dict:
    """Pretrain ``pcfg.method`` on ``shards`` with ``seed``; save ``folder/encoder.pt`` (and the data
    it saw); ``stage`` names its checkpoint folder. Curves, data counts and the checkpoint go to the
    tracker's active run; ``metric_prefix`` prefixes the curves (and files the checkpoint under
    ``checkpoints/<folder name>``) for callers that log several pretrainings into one run (the pretrain
    stage opens a run per pretraining instead). Returns the final epoch metrics."""
    import lightning as L
    from torch.utils.data import DataLoader

    from usssl.engine.trainer import build_trainer, checkpoint_dir, resume_checkpoint
    from usssl.methods import method_module
    from usssl.models.checkpoint import save_encoder

    L.seed_everything(seed, workers=True, verbose=False)
    method = method_module(pcfg.method)
    dataset, data_metrics = method.make_dataset(cache, shards, split, pcfg, seed)
    check_batch_fits(pcfg, len(dataset), len(shards))  # before any output: 0 steps would "succeed"
    module = method.make_module(pcfg, cache)
    name = pcfg.name or pcfg.method
    if is_main_process():
        write_json_atomic(folder / "pretrain_data.json", {"exclude_fold": pcfg.exclude_fold, "fold": fold,
                                                          "seed": seed, "shards": shards,
                                                          "subjects": dataset.subjects, "method": pcfg.method,
                                                          "name": name}, newline=False, default=str)
    tracker.log_metrics(data_metrics)
    loader = DataLoader(dataset, batch_size=pcfg.batch_size, shuffle=False, drop_last=True,
                        num_workers=cfg.trainer.num_workers)
    if not resume and is_main_process():
        shutil.rmtree(checkpoint_dir(cfg, stage), ignore_errors=True)
    trainer = build_trainer(cfg, stage, tracker, pcfg.max_epochs, pcfg.max_steps, metric_prefix=metric_prefix)
    trainer.fit(module, loader, ckpt_path=resume_checkpoint(cfg, stage) if resume else None)
    if trainer.global_rank == 0:
        extras = module.checkpoint_extras() if hasattr(module, "checkpoint_extras") else {}  # e.g. a projector
        save_encoder(folder / "encoder.pt", module.encoder, pcfg.encoder, method=pcfg.method, name=name,
                     fold=fold, seed=seed, **extras)
        if cfg.tracking.log_checkpoints:
            tracker.log_artifact(folder / "encoder.pt", f"checkpoints/{folder.name}" if metric_prefix else "checkpoints")
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.endswith("_epoch")}
    return {"epochs": trainer.current_epoch, **final}


def pretraining_run(tracker: Tracker, pcfg, run, n_shards: int, several: bool):
    """Where one pretraining logs: with ``several`` pretrainings in the stage, its own MLflow run under
    the stage run (named like its checkpoint folder, e.g. ``pretrain-fold0-seed0``; params ``method``,
    ``fold`` (``none`` on the ingest split), ``seed``, ``n_subjects``, ``n_shards``; tag
    ``usssl.kind = pretraining``), so that every pretraining has the same curve names and MLflow's
    chart and compare views can set them side by side; the stage run itself for a single pretraining."""
    if not several:
        return contextlib.nullcontext()
    params = {"method": pcfg.method, "name": pcfg.name or pcfg.method,
              "fold": "none" if run.fold is None else run.fold, "seed": run.seed,
              "n_subjects": len(run.subjects), "n_shards": n_shards}
    return tracker.child(run.stage, params=params, tags={"usssl.kind": "pretraining"})


def run(cfg: PipelineConfig, pcfg, tracker: Tracker, resume: bool) -> dict:
    """Run every pretraining of this stage (module docstring)."""
    from usssl.data.cache import Cache
    from usssl.stages.common import pretrain_runs

    cache = Cache(cfg.cache_dir)
    runs = pretrain_runs(cfg, pcfg, cache)
    tracker.log_params({"method": pcfg.method, "n_pretrainings": len(runs),
                        "inductive": all(r.fold is not None for r in runs)})
    summary: dict = {"encoders": [], "runs": []}
    for r in runs:
        path, marker = r.folder / "encoder.pt", r.folder / "done.json"
        wanted = {"max_epochs": pcfg.max_epochs, "max_steps": pcfg.max_steps}
        if resume and path.is_file() and marker.is_file() and json.loads(marker.read_text()) == wanted:
            log.info("pretraining %s (seed %d) already finished; kept (--resume)", r.inductive_for, r.seed)
        else:
            shards, split = run_shards(cache, pcfg, r)
            log.info("pretraining %s on %d subject(s) (%s, seed %d)", pcfg.method, len(r.subjects),
                     r.inductive_for, r.seed)
            with pretraining_run(tracker, pcfg, r, len(shards), several=len(runs) > 1):
                final = train_encoder(cfg, pcfg, cache, shards, split, r.seed, r.folder, r.stage, tracker, resume,
                                      fold=r.fold)  # fmt: skip
                if len(runs) == 1:  # a run per pretraining shows its last epoch's values as they are
                    tracker.log_metrics({f"final/{k}": v for k, v in final.items()})
            summary["runs"].append({"fold": r.fold, "seed": r.seed, **final})
            if is_main_process():
                write_json_atomic(marker, wanted)
        summary["encoders"].append(str(path))
    if len(runs) == 1:  # one pretraining: its figures at the top level, as the stage always reported them
        summary |= {"encoder": summary["encoders"][0], **(summary["runs"][0] if summary["runs"] else {})}
    return summary

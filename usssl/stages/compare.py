"""The compare stage (and ``usssl compare``): every encoder × every end task, one table (ViRB for
ultrasound, Kotar et al. ICCV 2021, without its flaws: selection on validation, strict loading,
schedulers that step).

For every task its cache's subject-level k folds (stratified; validation subjects carved from each
fold's training subjects) and, for every encoder, fold and seed, one **cell**:

1. the encoder: random (seeded), a fixed checkpoint (strict), the supervised reference (fine-tuned on
   the fold's training labels, epochs chosen on its validation subjects), or a recipe pretrained on
   the fold's training and validation subjects only (strictly inductive; reused when finished);
2. its frozen features of the fold's train / val / test items, cached by the encoder's and the
   data's digests (``usssl.downstream.compare_fit``);
3. a linear head, learning rate and epoch chosen on validation; test scored once.

A cell writes ``<output_dir>/compare/cells/<encoder>/<task>/fold<k>-seed<s>.json`` when done, so a
killed grid loses at most the cell it was in (``--resume`` keeps the others; without it the grid
starts again). Then ``compare/report.md`` (``usssl.downstream.compare_report``), ``table.csv``,
``correlation.csv`` and ``heatmap.png`` are written and logged.

    >>> run(cfg, cfg.stage("compare"), tracker, resume=False)["table"]
    'runs/compare/compare/table.csv'
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from usssl.config import FinetuneConfig, PipelineConfig
from usssl.engine.files import write_json_atomic
from usssl.engine.progress import progress
from usssl.errors import ConfigError

log = logging.getLogger(__name__)


def _encoder(cfg: PipelineConfig, entry, cache, fold, seed: int, task, folder: Path, tracker):
    """The encoder of one cell (module docstring, step 1)."""
    import torch

    from usssl.models.checkpoint import load_encoder, load_foreign_encoder
    from usssl.models.encoders import build_encoder

    if entry.source == "random":
        torch.manual_seed(seed * 1000 + fold.index)
        return build_encoder(entry.random)
    if entry.source == "checkpoint":
        return load_foreign_encoder(entry.checkpoint, entry.architecture, entry.key_map)
    # keyed by the data, not the task: tasks on one cache share its folds, so one pretraining serves them all
    run_dir = folder / "encoders" / entry.name / f"data-{cache.digest()[:12]}" / f"fold{fold.index}-seed{seed}"
    wanted = {"settings": (entry.recipe or entry.supervised).model_dump(mode="json"), "cache": cache.digest()}
    done = run_dir / "done.json"
    if done.is_file() and json.loads(done.read_text()) == wanted and (run_dir / "encoder.pt").is_file():
        return load_encoder(run_dir / "encoder.pt")[0]
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    stage = f"compare-{entry.name}-{cache.digest()[:8]}-fold{fold.index}-seed{seed}"
    if entry.source == "recipe":
        from usssl.data.splits import shards_of
        from usssl.stages.pretrain import train_encoder

        train_encoder(cfg, entry.recipe, cache, shards_of(cache, fold.seen_subjects), None, seed, run_dir, stage,
                      tracker, resume=False, fold=fold.index, metric_prefix=f"{stage}/")  # fmt: skip
    else:
        import lightning as L

        from usssl.models.checkpoint import save_encoder
        from usssl.stages.finetune import fit

        L.seed_everything(seed, workers=True, verbose=False)
        fcfg = FinetuneConfig(frame_stride=2)  # on the cache's labels, the same for every task of the cache
        model, _ = fit(cfg, fcfg, "finetune", lambda: build_encoder(entry.supervised), fold.frames(cache, "train", 2),
                       fold.frames(cache, "val", 2), cache.classes, tracker, stage, seed)  # fmt: skip
        save_encoder(run_dir / "encoder.pt", model.encoder, entry.supervised)
    write_json_atomic(done, wanted)
    return load_encoder(run_dir / "encoder.pt")[0]


def _task_data(task, cache, fold, part: str):
    """(dataset to encode, labels, subjects, recordings, pairs or None) of one part of a fold."""
    from usssl.data.splits import shards_of
    from usssl.downstream.compare_fit import CachedFrames, gap_pairs

    if task.kind == "classification":
        data = fold.frames(cache, part, task.frame_stride)
        return data, data.labels, data.subject_ids, [s for s, _ in data.items], None
    subjects = {"train": fold.train_subjects, "val": fold.val_subjects, "test": fold.test_subjects}[part]
    data = CachedFrames(cache, shards_of(cache, subjects), task.frame_stride)
    lengths: dict[str, int] = {}
    for shard, _ in data.items:
        lengths[shard] = lengths.get(shard, 0) + 1
    pairs = gap_pairs(lengths, task.gaps, task.pairs_per_recording, seed=fold.index)  # the same pairs for every encoder
    subject_of = {s: cache.shard(s).subject for s in lengths}
    return (data, np.array([c for *_, c in pairs], int), np.array([subject_of[s] for s, *_ in pairs]),
            [s for s, *_ in pairs], pairs)  # fmt: skip


def _cell(cfg: PipelineConfig, ccfg, entry, task, cache, fold, seed: int, out: Path, tracker) -> dict:
    """Run one cell (module docstring) and return its result."""
    from usssl.downstream.compare_fit import cached_features, fit_head, head_probs, pair_features, state_digest
    from usssl.downstream.metrics import classification_scores

    start = time.perf_counter()
    encoder = _encoder(cfg, entry, cache, fold, seed, task, out, tracker)
    digest = state_digest(encoder)
    parts = {}
    for part in ("train", "val", "test"):
        data, labels, subjects, recordings, pairs = _task_data(task, cache, fold, part)
        feats = cached_features(out / "features", encoder, digest, data, cache.digest(), task.batch_size)
        if pairs is not None:  # rows by (shard, position among that shard's strided frames)
            rows, seen = {}, {}
            for row, (shard, _) in enumerate(data.items):
                rows[(shard, seen.get(shard, 0))] = row
                seen[shard] = seen.get(shard, 0) + 1
            feats = pair_features(feats, rows, pairs)
        parts[part] = (feats, labels, subjects, recordings)
    n_classes = len(task.gaps) if task.kind == "frame_gap" else len(cache.classes)
    (x_tr, y_tr, _, _), (x_val, y_val, _, _) = parts["train"], parts["val"]
    if len(y_tr) == 0 or len(y_val) == 0:
        raise ConfigError(f"compare task '{task.name}': fold {fold.index} has no labelled training or validation "
                          "items; lower compare.folds or label more subjects")  # fmt: skip
    head = fit_head(x_tr, y_tr, x_val, y_val, n_classes, task.lr_grid, task.epochs, task.eval_every,
                    task.optimizer, seed)  # selection sees train and val only
    x_te, y_te, s_te, r_te = parts["test"]
    probs = head_probs(head, x_te)  # test scored once
    from usssl.stages.evaluate import by_recording, scoring_level

    level = scoring_level(task.level, cache) if task.kind == "classification" else task.level.replace("auto", "frame")
    if level == "recording":

        probs, y_te, _, s_te = by_recording(probs, y_te, r_te, s_te)
    yhat = probs.argmax(1)
    return {"encoder": entry.name, "task": task.name, "fold": fold.index, "seed": seed, "source": entry.source,
            "fold_aware": entry.source != "checkpoint" or entry.fold_aware, "n_classes": n_classes,
            "level": level, "selection": head.selection, "f1": classification_scores(y_te, yhat, n_classes)["f1"],
            "n_train": len(y_tr), "n_val": len(y_val), "n_test": len(y_te), "encoder_digest": digest,
            "y": y_te.tolist(), "yhat": yhat.tolist(), "subjects": [str(s) for s in s_te],
            "seconds": time.perf_counter() - start}  # fmt: skip


def run(cfg: PipelineConfig, ccfg, tracker, resume: bool) -> dict:
    """Every cell (resumable), then the table, correlations and heat map (module docstring)."""
    from usssl.data.cache import Cache
    from usssl.downstream.compare_report import correlations, estimates, heat_map, markdown
    from usssl.stages.common import fold_plan

    out = Path(cfg.output_dir) / "compare"
    if not resume:
        shutil.rmtree(out / "cells", ignore_errors=True)
    caches = {t.name: Cache(t.cache) for t in ccfg.tasks}
    fcfg = FinetuneConfig(cv="kfold", folds=ccfg.folds, val_fraction=ccfg.val_fraction)
    plans = {t.name: fold_plan(cfg, fcfg, caches[t.name]) for t in ccfg.tasks}
    todo = [(t, e, f, s) for t in ccfg.tasks for e in ccfg.encoders if e.only_tasks is None or t.name in e.only_tasks
            for f in plans[t.name] for s in cfg.run_seeds]  # fmt: skip
    cells = []
    with progress("compare: encoder × task cells", len(todo), cfg.trainer.progress, counts=True) as bar:
        for task, entry, fold, seed in todo:
            path = out / "cells" / entry.name / task.name / f"fold{fold.index}-seed{seed}.json"
            if path.is_file():
                cells.append(json.loads(path.read_text()))
            else:
                log.info("compare: %s × %s, fold %d, seed %d", entry.name, task.name, fold.index, seed)
                cell = _cell(cfg, ccfg, entry, task, caches[task.name], fold, seed, out, tracker)
                write_json_atomic(path, cell)
                cells.append(cell)
            bar.advance()
    table = estimates(cells, ccfg.bootstrap, cfg.seed)
    corr = correlations(cells, max(ccfg.bootstrap, 1), cfg.seed)
    report = markdown(table, corr, ccfg.folds, list(cfg.run_seeds))
    (out / "report.md").write_text(report)
    table.to_csv(out / "table.csv", index=False)
    corr.to_csv(out / "correlation.csv", index=False)
    heat_map(table, out / "heatmap.png")
    tracker.log_metrics({f"{r.encoder}/{r.task}/f1_pct": float(r.f1) for r in table.itertuples()})
    for name in ("report.md", "table.csv", "correlation.csv", "heatmap.png"):
        tracker.log_artifact(out / name, "compare")
    return {"table": str(out / "table.csv"), "report": report, "cells": len(cells)}

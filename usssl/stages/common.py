"""What the transfer stages share: the folds (with their validation subjects), the seeds, the
initialisations and where each pretrained encoder is.

A *fold* is a partition of subjects into train / val / test. With ``finetune.cv: split`` there is
one: the ingest's split, its validation subjects being the ingest's ``val`` split or, when that is
empty, ``finetune.val_fraction`` of its training subjects (by subject, stratified, from ``seed``).
With ``cv: kfold`` there are k stratified subject-level folds (``usssl.data.splits.cache_folds``),
each with validation subjects carved from its training subjects the same way. Every choice
(epochs, learning rate, the exported recipe) is made on validation; test subjects are read only
by the evaluate stage. Folds and validation subjects do not change with ``seeds``: the seeds vary
initialisation and sampling, so comparisons between initialisations stay paired.

Pretraining (``pretrain_runs``) is strictly inductive by default: with k folds, one pretraining per
fold and seed on that fold's training and validation subjects; with ``pretrain.shared: true`` (or a
single split) one per seed on the ingest split's training subjects.

    >>> folds = fold_plan(cfg, cfg.stage("finetune"), cache)     # [Fold(index=0, ...), ...]
    >>> encoder, enc_cfg = encoder_for_init(cfg, "video_speech", cache, folds[0], seed=0)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from usssl.config import EncoderConfig, FinetuneConfig, PipelineConfig
from usssl.data.cache import Cache
from usssl.data.datasets import FrameDataset
from usssl.data.splits import (cache_fold, cache_order_keys, cache_strata, check_disjoint, require_test_split,
                               shards_of, stratified_order)
from usssl.errors import ConfigError

log = logging.getLogger(__name__)

RUN_CONFIG_FILE = "config.yaml"
"""The resolved config a pipeline run writes into its output_dir (``usssl export RUN_DIR`` reads it)."""


@dataclass
class Fold:
    """One train / val / test partition of the subjects (``from_split``: the ingest's split)."""

    index: int
    train_subjects: list[str]
    val_subjects: list[str]
    test_subjects: list[str]
    from_split: bool

    def frames(self, cache: Cache, part: str, stride: int, indices: np.ndarray | None = None,
               clip_frames: int = 1) -> FrameDataset:
        """The labelled frames of the ``part`` ("train", "val" or "test") subjects, each read as the clip of
        ``clip_frames`` frames centred on it (the encoder's ``EncoderConfig.clip_frames``)."""
        subjects = {"train": self.train_subjects, "val": self.val_subjects, "test": self.test_subjects}[part]
        split = "test" if part == "test" and self.from_split else None
        return FrameDataset(cache, shards_of(cache, subjects), split=split, stride=stride, indices=indices,
                            clip_frames=clip_frames)

    @property
    def seen_subjects(self) -> list[str]:
        """The subjects a fold's pretraining may read: its training and validation subjects."""
        return sorted(self.train_subjects + self.val_subjects)


def validation_subjects(cache: Cache, subjects: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, val): ``round(fraction · n)`` of ``subjects`` (at least 1, at most n − 1) held out for
    validation, stratified by each subject's main label, in ``seed``'s order; ``fraction`` 0 or fewer
    than 2 subjects: no validation."""
    n = len(subjects)
    if fraction <= 0 or n < 2:
        return sorted(subjects), []
    n_val = min(max(1, int(round(fraction * n))), n - 1)
    order = stratified_order(subjects, seed, cache_strata(cache), cache_order_keys(cache))
    return sorted(order[n_val:]), sorted(order[:n_val])


def fold_plan(cfg: PipelineConfig, fcfg: FinetuneConfig | None, cache: Cache) -> list[Fold]:
    """The folds the transfer stages run: the ingest split, or the chosen k-fold folds (module docstring)."""
    fraction = fcfg.val_fraction if fcfg is not None else 0.0
    if fcfg is None or fcfg.cv == "split":
        require_test_split(cache, "finetune" if fcfg is not None else "saliency")
        train, val = cache.splits["train"], cache.splits.get("val", [])
        if not val:
            train, val = validation_subjects(cache, train, fraction, cfg.seed)
        folds = [Fold(0, train, val, cache.splits["test"], True)]
    else:
        chosen = fcfg.run_folds if fcfg.run_folds is not None else range(fcfg.folds)
        folds = []
        for f in chosen:
            train, test = cache_fold(cache, fcfg.folds, cfg.seed, f)
            folds.append(Fold(f, *validation_subjects(cache, train, fraction, cfg.seed), test, False))
    for fold in folds:
        check_disjoint({"train": fold.train_subjects, "val": fold.val_subjects, "test": fold.test_subjects})
    return folds


def init_names(cfg: PipelineConfig, fcfg) -> list[str]:
    """``fcfg.inits`` with ``pretrain`` expanded to every pretrain stage's name, duplicates dropped."""
    names: list[str] = []
    for init in fcfg.inits:
        expanded = cfg.pretrain_names() if init == "pretrain" else [init]
        if init == "pretrain" and not expanded:
            raise ConfigError("finetune.inits: 'pretrain' needs a pretrain stage before finetune")
        names += [n for n in expanded if n not in names]
    return names


def random_encoder_config(cfg: PipelineConfig) -> EncoderConfig:
    """The architecture every initialisation shares: the first pretrain stage's encoder."""
    pre = cfg.stage("pretrain")
    return pre.encoder if pre is not None else EncoderConfig()


@dataclass
class PretrainRun:
    """One pretraining of a pretrain stage: for one fold (None: shared by every fold) and one seed."""

    fold: int | None
    seed: int
    subjects: list[str]
    folder: Path  # encoder.pt and pretrain_data.json
    stage: str  # the checkpoint folder's name under <output_dir>/checkpoints

    @property
    def inductive_for(self) -> str:
        return "every fold" if self.fold is None else f"fold {self.fold}"


def pretrain_stage_named(cfg: PipelineConfig, name: str):
    for entry in cfg.stages:
        if entry.kind == "pretrain" and (entry.body.name or entry.body.method) == name:
            return entry.body
    raise ConfigError(f"no pretrain stage named {name!r}; pretrain stages: {cfg.pretrain_names()}")


def pretrain_runs(cfg: PipelineConfig, pcfg, cache: Cache) -> list[PretrainRun]:
    """Every pretraining the stage ``pcfg`` runs, in order (module docstring)."""
    base = cfg.pretrain_dir(pcfg.name or pcfg.method)
    seeds, fine = cfg.run_seeds, cfg.stage("finetune")
    if fine is not None and fine.cv == "kfold" and not pcfg.shared and pcfg.exclude_fold is None:
        return [PretrainRun(fold.index, s, fold.seen_subjects, base / f"fold{fold.index}-seed{s}",
                            f"{base.name}-fold{fold.index}-seed{s}")
                for fold in fold_plan(cfg, fine, cache) for s in seeds]  # fmt: skip
    if pcfg.exclude_fold is not None:
        subjects = cache_fold(cache, fine.folds, cfg.seed, pcfg.exclude_fold)[0]
    else:
        subjects = list(cache.splits["train"])
    one = len(seeds) == 1
    return [PretrainRun(None, s, sorted(subjects), base if one else base / f"seed{s}",
                        base.name if one else f"{base.name}-seed{s}") for s in seeds]  # fmt: skip


def pretrain_run_for(cfg: PipelineConfig, name: str, cache: Cache, fold: Fold, seed: int) -> PretrainRun:
    """The pretraining of stage ``name`` that ``fold`` and ``seed`` transfer from."""
    for run in pretrain_runs(cfg, pretrain_stage_named(cfg, name), cache):
        if run.seed == seed and run.fold in (None, fold.index):
            return run
    raise ConfigError(f"pretrain stage {name!r} has no encoder for fold {fold.index}, seed {seed}")


def pretrained_encoder(cfg: PipelineConfig, name: str, cache: Cache | None = None, fold: Fold | None = None,
                       seed: int | None = None) -> tuple[nn.Module, EncoderConfig, list[str]]:  # fmt: skip
    """The encoder of pretrain stage ``name`` for ``fold`` and ``seed`` (default: the first fold of the
    plan and the first seed), its settings and the subjects it trained on."""
    from usssl.models.checkpoint import load_encoder

    cache = Cache(cfg.cache_dir) if cache is None else cache
    fold = fold_plan(cfg, cfg.stage("finetune"), cache)[0] if fold is None else fold
    seed = cfg.run_seeds[0] if seed is None else seed

    run = pretrain_run_for(cfg, name, cache, fold, seed)
    path = run.folder / "encoder.pt"
    if not path.is_file():
        raise ConfigError(f"finetune.inits: {name!r} needs {path}; run its pretrain stage first")
    encoder, enc_cfg, _ = load_encoder(path)  # strict: a mismatched checkpoint is an error
    data = run.folder / "pretrain_data.json"
    subjects = json.loads(data.read_text()).get("subjects", []) if data.is_file() else []
    return encoder, enc_cfg, subjects


def encoder_for_init(cfg: PipelineConfig, init: str, cache: Cache, fold: Fold,
                     seed: int) -> tuple[nn.Module, EncoderConfig]:  # fmt: skip
    """(encoder, its EncoderConfig) for ``init`` ("random" or a pretrain stage's name)."""
    from usssl.models.encoders import build_encoder

    if init == "random":
        enc_cfg = random_encoder_config(cfg)
        return build_encoder(enc_cfg), enc_cfg
    encoder, enc_cfg, _ = pretrained_encoder(cfg, init, cache, fold, seed)
    return encoder, enc_cfg


def protocol_description(cfg: PipelineConfig, cache: Cache) -> dict:
    """What a reviewer needs to check the protocol: folds, seeds, what pretraining saw, what selection
    used (for the report's "Protocol" block and the export's provenance)."""
    fine = cfg.stage("finetune")
    folds = fold_plan(cfg, fine, cache)
    pretraining = []
    for entry in cfg.stages:
        if entry.kind == "pretrain":
            runs = pretrain_runs(cfg, entry.body, cache)
            saw = any(run.fold is None and set(run.subjects) & set(f.test_subjects) for run in runs for f in folds)
            pretraining.append({"name": entry.body.name or entry.body.method, "runs": len(runs),
                                "per_fold": all(run.fold is not None for run in runs), "saw_test_subjects": saw})
    return {"cv": "split" if fine is None else fine.cv, "folds": len(folds), "seeds": cfg.run_seeds,
            "n_subjects": {"train": [len(f.train_subjects) for f in folds], "val": [len(f.val_subjects) for f in folds],
                           "test": [len(f.test_subjects) for f in folds]},
            "pretraining": pretraining, "transductive": any(p["saw_test_subjects"] for p in pretraining),
            "val_fraction": None if fine is None else fine.val_fraction,
            "early_stopping": None if fine is None else fine.early_stopping,
            "lr_grid": None if fine is None else (fine.lr_grid or [fine.optimizer.lr])}

"""What the transfer stages share: the folds, the initialisations and their encoders.

A *fold* is a pair of disjoint subject sets. With ``finetune.cv: split`` there is one, the
ingest's train / test split; with ``cv: kfold`` there are k stratified subject-level folds stored
beside the cache's index (``usssl.data.splits.cache_folds``). Every initialisation sees the same
folds, label subsets and seeds, so each comparison against random initialisation is paired.

    >>> fold_plan(cfg, cfg.stage("finetune"), cache)       # [Fold(index=0, ...), ...]
    >>> encoder, enc_cfg = encoder_for_init(cfg, "random")
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
from torch import nn

from usssl.config import EncoderConfig, FinetuneConfig, PipelineConfig
from usssl.data.cache import Cache
from usssl.data.datasets import FrameDataset
from usssl.data.splits import cache_fold, check_disjoint, shards_of
from usssl.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Fold:
    """One train / test partition of the subjects (``from_split``: the ingest's split)."""

    index: int
    train_subjects: list[str]
    test_subjects: list[str]
    from_split: bool

    def frames(self, cache: Cache, part: str, stride: int, indices: np.ndarray | None = None) -> FrameDataset:
        """The labelled frames of the ``part`` ("train" or "test") subjects."""
        subjects = self.train_subjects if part == "train" else self.test_subjects
        return FrameDataset(cache, shards_of(cache, subjects), split=part if self.from_split else None,
                            stride=stride, indices=indices)


def fold_plan(cfg: PipelineConfig, fcfg: FinetuneConfig | None, cache: Cache) -> list[Fold]:
    """The folds the finetune stage runs: the ingest split, or the chosen k-fold folds."""
    if fcfg is None or fcfg.cv == "split":
        fold = Fold(0, cache.splits["train"], cache.splits["test"], True)
        check_disjoint({"train": fold.train_subjects, "test": fold.test_subjects})
        return [fold]
    chosen = fcfg.run_folds if fcfg.run_folds is not None else range(fcfg.folds)
    return [Fold(f, *cache_fold(cache, fcfg.folds, cfg.seed, f), False) for f in chosen]


def init_names(cfg: PipelineConfig, fcfg: FinetuneConfig) -> list[str]:
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


def pretrained_encoder(cfg: PipelineConfig, name: str) -> tuple[nn.Module, EncoderConfig, list[str]]:
    """The encoder saved by pretrain stage ``name``, its settings and the subjects it trained on."""
    from usssl.models.checkpoint import load_encoder

    folder = cfg.pretrain_dir(name)
    path = folder / "encoder.pt"
    if not path.is_file():
        raise ConfigError(f"finetune.inits: {name!r} needs {path}; run its pretrain stage first")
    encoder, enc_cfg, _ = load_encoder(path)  # strict: a mismatched checkpoint is an error
    data = folder / "pretrain_data.json"
    subjects = json.loads(data.read_text()).get("subjects", []) if data.is_file() else []
    return encoder, enc_cfg, subjects


def encoder_for_init(cfg: PipelineConfig, init: str) -> tuple[nn.Module, EncoderConfig]:
    """(encoder, its EncoderConfig) for ``init`` ("random" or a pretrain stage's name)."""
    from usssl.models.encoders import build_encoder

    if init == "random":
        enc_cfg = random_encoder_config(cfg)
        return build_encoder(enc_cfg), enc_cfg
    encoder, enc_cfg, _ = pretrained_encoder(cfg, init)
    return encoder, enc_cfg

"""The transfer stages: fit every (init, protocol, label fraction, fold), then score held-out subjects.

A *fold* is a pair of disjoint subject sets. With ``finetune.cv: split`` there is one, the
ingest's train / test split; with ``cv: kfold`` there are k stratified subject-level folds stored
beside the cache's index (``usssl.data.splits.cache_folds``). Every initialisation sees the same
folds, label subsets and seeds, so each comparison against random initialisation is paired.

Each fitted model is saved self-describing (``finetune/<tag>.pt``: state, protocol, encoder
settings, classes), so ``evaluate`` and ``export`` rebuild it without the pipeline's config.

    >>> fold_plan(cfg, cfg.stage("finetune"), cache)       # [Fold(index=0, ...), ...]
    >>> model = load_model("runs/demo/finetune/video_speech-linear-0.1.pt")
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from usssl.config import EncoderConfig, FinetuneConfig, PipelineConfig
from usssl.data.cache import Cache
from usssl.data.datasets import FrameDataset
from usssl.data.splits import BACKGROUND, cache_fold, check_disjoint, shards_of
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
    from usssl.models.encoders import build_encoder

    folder = cfg.pretrain_dir(name)
    path = folder / "encoder.pt"
    if not path.is_file():
        raise ConfigError(f"finetune.inits: {name!r} needs {path}; run its pretrain stage first")
    state = torch.load(path, map_location="cpu", weights_only=False)
    enc_cfg = EncoderConfig(**state["encoder_cfg"])
    encoder = build_encoder(enc_cfg)
    encoder.load_state_dict(state["encoder"])  # strict: a mismatched checkpoint is an error
    data = folder / "pretrain_data.json"
    subjects = json.loads(data.read_text()).get("subjects", []) if data.is_file() else []
    return encoder, enc_cfg, subjects


def finetune_model(encoder: nn.Module, n_classes: int, fcfg: FinetuneConfig):
    """An untrained ``PlaneClassifier`` of the ``finetune`` protocol around ``encoder``."""
    from usssl.downstream.plane_detection import PlaneClassifier

    return PlaneClassifier(encoder, n_classes, fcfg.optimizer, encoder_lr_scale=fcfg.encoder_lr_scale,
                           augment=fcfg.augment)


def load_model(path: str | Path) -> nn.Module:
    """Rebuild a fitted model from its ``finetune/<tag>.pt`` file (see ``run_finetune``), in eval mode."""
    from usssl.downstream.plane_detection import KNNClassifier, PlaneClassifier
    from usssl.models.encoders import build_encoder

    saved = torch.load(path, map_location="cpu", weights_only=False)
    encoder = build_encoder(EncoderConfig(**saved["encoder_cfg"]))
    n_classes = len(saved["classes"])
    if saved["protocol"] == "knn":
        bank = saved["model"]["bank"]
        model = KNNClassifier(encoder, torch.zeros_like(bank), torch.zeros(bank.shape[0]), n_classes,
                              saved["knn_k"], saved["knn_temperature"])
    else:
        model = PlaneClassifier(encoder, n_classes, freeze_encoder=saved["protocol"] == "linear")
    model.load_state_dict(saved["model"])
    return model.eval()


def _background(classes: list[str]) -> int | None:
    return classes.index(BACKGROUND) if BACKGROUND in classes else None


def _fit_finetune(cfg, fcfg, model, subset, background, tracker, tag: str) -> None:
    from usssl.downstream.plane_detection import balanced_loader
    from usssl.engine.trainer import build_trainer

    loader = balanced_loader(subset, subset.labels, fcfg.batch_size, fcfg.samples_per_epoch,
                             seed=cfg.seed, background=background)
    trainer = build_trainer(cfg, f"finetune/{tag}", tracker, fcfg.max_epochs, checkpoints=False,
                            metric_prefix=f"{tag}/")
    trainer.fit(model, loader)


def fit(cfg: PipelineConfig, fcfg: FinetuneConfig, protocol: str, encoder: nn.Module, subset: FrameDataset,
        classes: list[str], tracker, tag: str) -> nn.Module:
    """Fit one model of ``protocol`` on the labelled ``subset``."""
    from usssl.downstream.plane_detection import fit_knn, fit_linear_probe

    n_classes = len(classes)
    if protocol == "linear":
        return fit_linear_probe(encoder, subset, subset.labels, n_classes, epochs=fcfg.linear_epochs, seed=cfg.seed)
    if protocol == "knn":
        return fit_knn(encoder, subset, subset.labels, n_classes, fcfg.knn_k, fcfg.knn_temperature)
    model = finetune_model(encoder, n_classes, fcfg)
    _fit_finetune(cfg, fcfg, model, subset, _background(classes), tracker, tag)
    return model


def supervised_encoder(cfg: PipelineConfig, fcfg: FinetuneConfig, fold: Fold, cache: Cache, tracker,
                       out: Path, resume: bool) -> nn.Module:
    """The supervised reference: an encoder fine-tuned from random init on all of the fold's labels."""
    from usssl.models.encoders import build_encoder

    enc_cfg = random_encoder_config(cfg)
    path = out / f"supervised-encoder-fold{fold.index}.pt"
    encoder = build_encoder(enc_cfg)
    if resume and path.is_file():
        encoder.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["encoder"])
        return encoder
    import lightning as L

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    train = fold.frames(cache, "train", fcfg.frame_stride)
    model = finetune_model(encoder, len(cache.classes), fcfg)
    _fit_finetune(cfg, fcfg, model, train, _background(cache.classes), tracker, f"supervised-fold{fold.index}")
    _save({"encoder": model.encoder.state_dict(), "encoder_cfg": enc_cfg.model_dump()}, path)
    return model.encoder


def _save(obj: dict, path: Path) -> None:
    from usssl.engine.trainer import save_atomic
    from usssl.methods.distributed import is_main_process

    if is_main_process():
        save_atomic(obj, path)


def run_finetune(cfg: PipelineConfig, fcfg: FinetuneConfig, tracker, resume: bool) -> dict:
    """Fit every (fold, init, protocol, label fraction); write ``finetune/manifest.json``."""
    import lightning as L

    from usssl.downstream.plane_detection import label_fraction_indices
    from usssl.models.encoders import build_encoder

    cache = Cache(cfg.cache_dir)
    out = Path(cfg.output_dir) / "finetune"
    folds = fold_plan(cfg, fcfg, cache)
    inits = init_names(cfg, fcfg)
    manifest = []
    pretrained = {init: pretrained_encoder(cfg, init) for init in inits if init not in ("random", "supervised")}
    # init -> encoder state to start from (None: a fresh, seeded random encoder); loaded once
    weights: dict[str, dict | None] = {"random": None, **{i: e.state_dict() for i, (e, _, _) in pretrained.items()}}
    for fold in folds:
        full = fold.frames(cache, "train", fcfg.frame_stride)
        log.info("fold %d: %d training subjects, %d test subjects, %d labelled training frames",
                 fold.index, len(fold.train_subjects), len(fold.test_subjects), len(full))
        if "supervised" in inits:  # the reference encoder, trained once per fold
            weights["supervised"] = supervised_encoder(cfg, fcfg, fold, cache, tracker, out, resume).state_dict()
        for init in inits:
            enc_cfg, seen = pretrained[init][1:] if init in pretrained else (random_encoder_config(cfg), [])
            for protocol in fcfg.protocols:
                for frac in sorted(fcfg.label_fractions):
                    L.seed_everything(cfg.seed, workers=True, verbose=False)
                    encoder = build_encoder(enc_cfg)
                    if weights[init] is not None:
                        encoder.load_state_dict(weights[init])
                    tag = f"{init}-{protocol}-{frac:g}" + ("" if fold.from_split else f"-fold{fold.index}")
                    path = out / f"{tag}.pt"
                    idx = label_fraction_indices(full.labels, frac, seed=cfg.seed)
                    entry = {"tag": tag, "init": init, "protocol": protocol, "label_fraction": frac,
                             "fold": fold.index, "n_train": int(idx.size), "path": str(path),
                             "pretrain_saw_test": bool(set(seen) & set(fold.test_subjects))}
                    manifest.append(entry)
                    if resume and path.is_file():
                        continue
                    subset = fold.frames(cache, "train", fcfg.frame_stride, indices=idx)
                    t0 = time.time()
                    model = fit(cfg, fcfg, protocol, encoder, subset, cache.classes, tracker, tag)
                    extra = {"knn_k": fcfg.knn_k, "knn_temperature": fcfg.knn_temperature} if protocol == "knn" else {}
                    _save({"model": model.state_dict(), "encoder_cfg": enc_cfg.model_dump(),
                           "classes": cache.classes, **extra, **{k: v for k, v in entry.items() if k != "path"}}, path)
                    tracker.log_metrics({f"{tag}/train_seconds": time.time() - t0, f"{tag}/n_train": idx.size})
                    if cfg.tracking.log_checkpoints:
                        tracker.log_artifact(path, "checkpoints")
    from usssl.methods.distributed import is_main_process

    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return {"models": len(manifest), "folds": len(folds)}

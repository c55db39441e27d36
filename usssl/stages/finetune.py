"""The finetune stage: fit every (fold, init, protocol, label fraction) and write the manifest.

Each fitted model is saved self-describing (``finetune/<tag>.pt``, ``usssl.downstream.checkpoint``),
so ``evaluate`` and ``export`` rebuild it without the pipeline's config; ``finetune/manifest.json``
lists them with their fold, label count and whether the encoder's pretraining saw the fold's test
subjects.

    >>> run(cfg, cfg.stage("finetune"), tracker, resume=False)
    {'models': 8, 'folds': 1}
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from torch import nn

from usssl.config import FinetuneConfig, PipelineConfig
from usssl.data.cache import Cache
from usssl.data.datasets import FrameDataset
from usssl.data.splits import BACKGROUND
from usssl.engine.distributed import is_main_process
from usssl.stages.common import Fold, fold_plan, init_names, pretrained_encoder, random_encoder_config

log = logging.getLogger(__name__)


def finetune_model(encoder: nn.Module, n_classes: int, fcfg: FinetuneConfig):
    """An untrained ``PlaneClassifier`` of the ``finetune`` protocol around ``encoder``."""
    from usssl.downstream.plane_detection import PlaneClassifier

    return PlaneClassifier(encoder, n_classes, fcfg.optimizer, encoder_lr_scale=fcfg.encoder_lr_scale,
                           augment=fcfg.augment)


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
    from usssl.models.checkpoint import load_encoder, save_encoder
    from usssl.models.encoders import build_encoder

    enc_cfg = random_encoder_config(cfg)
    path = out / f"supervised-encoder-fold{fold.index}.pt"
    if resume and path.is_file():
        return load_encoder(path)[0]
    encoder = build_encoder(enc_cfg)
    import lightning as L

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    train = fold.frames(cache, "train", fcfg.frame_stride)
    model = finetune_model(encoder, len(cache.classes), fcfg)
    _fit_finetune(cfg, fcfg, model, train, _background(cache.classes), tracker, f"supervised-fold{fold.index}")
    if is_main_process():
        save_encoder(path, model.encoder, enc_cfg)
    return model.encoder


def run(cfg: PipelineConfig, fcfg: FinetuneConfig, tracker, resume: bool) -> dict:
    """Fit every (fold, init, protocol, label fraction); write ``finetune/manifest.json``."""
    import lightning as L

    from usssl.downstream.checkpoint import save_classifier
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
                    if is_main_process():
                        save_classifier(path, model, enc_cfg, cache.classes, **extra,
                                        **{k: v for k, v in entry.items() if k != "path"})
                    tracker.log_metrics({f"{tag}/train_seconds": time.time() - t0, f"{tag}/n_train": idx.size})
                    if cfg.tracking.log_checkpoints:
                        tracker.log_artifact(path, "checkpoints")
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return {"models": len(manifest), "folds": len(folds)}

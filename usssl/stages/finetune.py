"""The finetune stage: fit every (fold, init, protocol, label fraction) and write the manifest.

Each fitted model is saved self-describing (``finetune/<tag>.pt``, ``usssl.downstream.checkpoint``),
so ``evaluate`` and ``export`` rebuild it without the pipeline's config; ``finetune/manifest.json``
lists them with their fold, label count and whether the encoder's pretraining saw the fold's test
subjects.

    >>> run(cfg, cfg.stage("finetune"), tracker, resume=False)
    {'models': 8, 'folds': 1}
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

from torch import nn

from usssl.config import FinetuneConfig, PipelineConfig
from usssl.data.cache import Cache
from usssl.data.datasets import FrameDataset
from usssl.data.splits import BACKGROUND
from usssl.engine.distributed import is_main_process
from usssl.engine.files import write_json_atomic
from usssl.stages.common import Fold, fold_plan, init_names, pretrained_encoder, random_encoder_config

log = logging.getLogger(__name__)


def finetune_model(encoder: nn.Module, n_classes: int, fcfg: FinetuneConfig, lr: float | None = None):
    """An untrained ``PlaneClassifier`` of the ``finetune`` protocol around ``encoder`` (``lr``: instead
    of ``fcfg.optimizer.lr``)."""
    from usssl.downstream.plane_detection import PlaneClassifier

    optimizer = fcfg.optimizer if lr is None else fcfg.optimizer.model_copy(update={"lr": lr})
    return PlaneClassifier(encoder, n_classes, optimizer, encoder_lr_scale=fcfg.encoder_lr_scale,
                           augment=fcfg.augment)


def _background(classes: list[str]) -> int | None:
    return classes.index(BACKGROUND) if BACKGROUND in classes else None


def _fit_finetune(cfg, fcfg, model, subset, background, tracker, tag: str, seed: int, keep=None,
                  prefix: str = "") -> None:
    from usssl.downstream.plane_detection import balanced_loader
    from usssl.engine.trainer import build_trainer

    loader = balanced_loader(subset, subset.labels, fcfg.batch_size, fcfg.samples_per_epoch,
                             seed=seed, background=background)
    trainer = build_trainer(cfg, f"finetune/{tag}", tracker, fcfg.max_epochs, checkpoints=False,
                            metric_prefix=prefix, callbacks=[keep] if keep is not None else None)
    trainer.fit(model, loader)
    if keep is not None:  # the validation curve beside the training curves
        tracker.log_history({f"{prefix}val/macro_f1": [(e, 100 * f) for e, f in keep.history]})


def fit(cfg: PipelineConfig, fcfg: FinetuneConfig, protocol: str, make_encoder: Callable[[], nn.Module],
        subset: FrameDataset, val: FrameDataset | None, classes: list[str], tracker, tag: str,
        seed: int, metric_prefix: str | None = None) -> tuple[nn.Module, dict]:
    """Fit one model of ``protocol`` on the labelled ``subset``; every choice on ``val`` (the fold's
    validation subjects), never on test. Returns (model, selection: epoch, lr, val_f1).

    Curves (``train/*`` per step and epoch, ``val/macro_f1`` in % per epoch) go to the tracker's active
    run, named ``<metric_prefix>train/ce`` …; ``metric_prefix`` None: ``<tag>/``. With several learning
    rates each lr's curves are prefixed ``lr<lr>/`` as well."""
    prefix = f"{tag}/" if metric_prefix is None else metric_prefix
    import lightning as L

    from usssl.downstream.plane_detection import KeepBestOnValidation, fit_knn, fit_linear_probe, macro_f1

    n_classes = len(classes)
    has_val = val is not None and len(val) > 0
    if protocol == "linear":
        model = fit_linear_probe(make_encoder(), subset, subset.labels, n_classes, epochs=fcfg.linear_epochs,
                                 seed=seed, val=(val, val.labels) if has_val and fcfg.early_stopping else None)
        tracker.log_history({prefix + k: v for k, v in model.curves.items()})
        chosen = dict(model.selection, lr=0.05)
    elif protocol == "knn":
        model, chosen = fit_knn(make_encoder(), subset, subset.labels, n_classes, fcfg.knn_k, fcfg.knn_temperature), {}
    else:
        best_model, chosen = None, {}
        grid = fcfg.lr_grid or [fcfg.optimizer.lr]
        for lr in grid:
            L.seed_everything(seed, workers=True, verbose=False)
            model = finetune_model(make_encoder(), n_classes, fcfg, lr)
            keep = KeepBestOnValidation(val, val.labels, n_classes) if has_val and fcfg.early_stopping else None
            _fit_finetune(cfg, fcfg, model, subset, _background(classes), tracker, tag, seed, keep,
                          prefix + (f"lr{lr:g}/" if len(grid) > 1 else ""))
            found = dict(keep.selection if keep else {"epoch": fcfg.max_epochs}, lr=lr)
            if "val_f1" not in found and has_val:
                found["val_f1"] = macro_f1(model, val, val.labels, n_classes)
            if best_model is None or found.get("val_f1", 0) > chosen.get("val_f1", 0):
                best_model, chosen = model, found
        model = best_model
    if has_val and "val_f1" not in chosen:
        chosen["val_f1"] = macro_f1(model, val, val.labels, n_classes)
    return model, {"epoch": chosen.get("epoch"), "lr": chosen.get("lr"), "val_f1": chosen.get("val_f1", float("nan"))}


def supervised_encoder(cfg: PipelineConfig, fcfg: FinetuneConfig, fold: Fold, cache: Cache, tracker,
                       out: Path, resume: bool, seed: int) -> nn.Module:
    """The supervised reference: an encoder fine-tuned from random init on all of the fold's training
    labels (epochs chosen on its validation subjects)."""
    from usssl.models.checkpoint import load_encoder, save_encoder
    from usssl.models.encoders import build_encoder

    enc_cfg = random_encoder_config(cfg)
    path = out / f"supervised-encoder-fold{fold.index}{_seed_tag(cfg, seed)}.pt"
    if resume and path.is_file():
        return load_encoder(path)[0]
    import lightning as L

    L.seed_everything(seed, workers=True, verbose=False)
    tag = f"supervised-encoder-fold{fold.index}{_seed_tag(cfg, seed)}"
    clip = enc_cfg.clip_frames
    with tracker.child(tag, params={"init": "random", "protocol": "finetune", "label_fraction": 1.0,
                                    "fold": fold.index, "seed": seed, "purpose": "the supervised reference encoder"}):
        model, _ = fit(cfg, fcfg, "finetune", lambda: build_encoder(enc_cfg),
                       fold.frames(cache, "train", fcfg.frame_stride, clip_frames=clip),
                       fold.frames(cache, "val", fcfg.frame_stride, clip_frames=clip),
                       cache.classes, tracker, tag, seed, metric_prefix="")
    if is_main_process():
        save_encoder(path, model.encoder, enc_cfg)
    return model.encoder


def _seed_tag(cfg: PipelineConfig, seed: int) -> str:
    return "" if len(cfg.run_seeds) == 1 else f"-seed{seed}"


def run(cfg: PipelineConfig, fcfg: FinetuneConfig, tracker, resume: bool) -> dict:
    """Fit every (seed, fold, init, protocol, label fraction); write ``finetune/manifest.json``.

    Reads the training and validation subjects of each fold only: test subjects are never loaded here
    (the evaluate stage scores them once).
    """
    import lightning as L

    from usssl.downstream.checkpoint import save_classifier
    from usssl.downstream.plane_detection import label_fraction_indices
    from usssl.models.encoders import build_encoder

    cache = Cache(cfg.cache_dir)
    out = Path(cfg.output_dir) / "finetune"
    folds = fold_plan(cfg, fcfg, cache)
    inits = init_names(cfg, fcfg)
    manifest = []
    for seed in cfg.run_seeds:
        for fold in folds:
            full = fold.frames(cache, "train", fcfg.frame_stride)
            val = fold.frames(cache, "val", fcfg.frame_stride)
            log.info("seed %d, fold %d: %d training, %d validation and %d test subjects; %d labelled training "
                     "frames", seed, fold.index, len(fold.train_subjects), len(fold.val_subjects),
                     len(fold.test_subjects), len(full))  # fmt: skip
            # init -> (encoder settings, state to start from or None: a fresh seeded encoder, subjects it saw)
            starts: dict[str, tuple] = {"random": (random_encoder_config(cfg), None, [])}
            for init in inits:
                if init == "supervised":  # the reference encoder, trained once per fold and seed
                    encoder = supervised_encoder(cfg, fcfg, fold, cache, tracker, out, resume, seed)
                    starts[init] = (random_encoder_config(cfg), encoder.state_dict(), fold.seen_subjects)
                elif init != "random":
                    encoder, enc_cfg, seen = pretrained_encoder(cfg, init, cache, fold, seed)
                    starts[init] = (enc_cfg, encoder.state_dict(), seen)
            for init in inits:
                enc_cfg, state, seen = starts[init]
                clip = enc_cfg.clip_frames  # each encoder reads its own clips (EncoderConfig.clip_frames)
                val_clips = val if clip == 1 else fold.frames(cache, "val", fcfg.frame_stride, clip_frames=clip)

                def make_encoder(enc_cfg=enc_cfg, state=state) -> nn.Module:
                    encoder = build_encoder(enc_cfg)
                    if state is not None:
                        encoder.load_state_dict(state)
                    return encoder

                for protocol in fcfg.protocols:
                    for frac in sorted(fcfg.label_fractions):
                        L.seed_everything(seed, workers=True, verbose=False)
                        tag = (f"{init}-{protocol}-{frac:g}" + ("" if fold.from_split else f"-fold{fold.index}")
                               + _seed_tag(cfg, seed))  # fmt: skip
                        path = out / f"{tag}.pt"
                        idx = label_fraction_indices(full.labels, frac, seed=seed)
                        entry = {"tag": tag, "init": init, "protocol": protocol, "label_fraction": frac,
                                 "fold": fold.index, "seed": seed, "n_train": int(idx.size), "path": str(path),
                                 "clip_frames": clip,
                                 "n_val_subjects": len(fold.val_subjects),
                                 "pretrain_saw_test": bool(set(seen) & set(fold.test_subjects))}
                        if resume and path.is_file():
                            manifest.append({**entry, **_saved_selection(path)})
                            continue
                        subset = fold.frames(cache, "train", fcfg.frame_stride, indices=idx, clip_frames=clip)
                        t0 = time.time()
                        params = {k: entry[k] for k in ("init", "protocol", "label_fraction", "fold", "seed",
                                                        "n_train", "n_val_subjects")}
                        with tracker.child(tag, params=params, tags={"usssl.model": tag}) as run_id:
                            model, chosen = fit(cfg, fcfg, protocol, make_encoder, subset, val_clips, cache.classes,
                                                tracker, tag, seed, metric_prefix="")
                            tracker.log_params({"selected_epoch": chosen["epoch"], "selected_lr": chosen["lr"]})
                            tracker.log_metrics({"train_seconds": time.time() - t0} | (
                                {} if math.isnan(chosen["val_f1"]) else {"val_macro_f1": 100 * chosen["val_f1"]}))
                        entry |= {"val_f1": chosen["val_f1"], "selected_epoch": chosen["epoch"],
                                  "selected_lr": chosen["lr"], "mlflow_run_id": run_id}
                        manifest.append(entry)
                        extra = {"knn_k": fcfg.knn_k, "knn_temperature": fcfg.knn_temperature} if protocol == "knn" else {}
                        if is_main_process():
                            save_classifier(path, model, enc_cfg, cache.classes, **extra,
                                            **{k: v for k, v in entry.items() if k != "path"})
                        if cfg.tracking.log_checkpoints and run_id:
                            tracker.log_artifact(path, "checkpoints", run_id=run_id)
    if is_main_process():
        write_json_atomic(out / "manifest.json", manifest, newline=False)
    return {"models": len(manifest), "folds": len(folds), "seeds": len(cfg.run_seeds)}


def _saved_selection(path: Path) -> dict:
    """The selection fields saved with a fitted model (for a resumed run's manifest)."""
    import torch

    saved = torch.load(path, map_location="cpu", weights_only=False)
    return {k: saved.get(k) for k in ("val_f1", "selected_epoch", "selected_lr", "mlflow_run_id")}

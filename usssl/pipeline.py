"""Run the stages of a pipeline: ingest → pretrain → finetune → evaluate, tracked in MLflow.

Stages talk only through files under ``output_dir`` (the cache, ``pretrain/encoder.pt``,
``finetune/*.pt``, ``evaluate/``), so each can be re-run or resumed on its own. A finished stage
writes ``stages/<i>-<kind>.done.json``; ``resume=True`` skips finished stages and continues an
unfinished training stage from its last checkpoint. One MLflow parent run covers the pipeline and
each stage is a nested run.

    >>> result = run_pipeline(load_config("pipelines/demo.yaml"))
    >>> print(result["report"])
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from usssl.config import PipelineConfig
from usssl.engine.tracking import Tracker

log = logging.getLogger(__name__)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _save_state(state: dict, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- ingest
def synth_corpus(cfg: PipelineConfig) -> Path:
    """The built-in synthetic corpus under ``<output_dir>/synth``, generated when missing or stale."""
    from usssl.data.synth import generate

    s = cfg.data.synth
    out = Path(cfg.output_dir) / "synth"
    wanted = {"subjects": s.subjects, "seed": s.seed, "duration_s": s.duration_s, "voice": s.voice,
              "size": list(s.size)}
    meta = out / "corpus.json"
    if meta.is_file():
        have = json.loads(meta.read_text())
        if all(have.get(k) == v for k, v in wanted.items()):
            return out
        shutil.rmtree(out)
    log.info("generating the synthetic corpus (%d subjects) in %s", s.subjects, out)
    generate(out, subjects=s.subjects, seed=s.seed, voice=s.voice, duration_s=s.duration_s,
             size=tuple(s.size), progress=cfg.trainer.progress)
    return out


def run_ingest(cfg: PipelineConfig, icfg, tracker: Tracker, resume: bool) -> dict:
    from usssl.data.cache import Cache
    from usssl.data.ingest import ingest

    sources = [Path(p) for p in cfg.data.sources] or [synth_corpus(cfg)]
    d = cfg.data
    summary = ingest(sources, cfg.cache_dir, icfg, labels_csv=d.labels_csv and Path(d.labels_csv),
                     gaze_csv=d.gaze_csv and Path(d.gaze_csv),
                     subjects_csv=d.subjects_csv and Path(d.subjects_csv), progress=cfg.trainer.progress)
    cache = Cache(cfg.cache_dir)
    digest = cache.digest()
    counts = {f"n_subjects_{k}": len(v) for k, v in cache.splits.items()}
    tracker.log_params({"dataset_digest": digest, "n_classes": len(cache.classes),
                        "classes": ",".join(cache.classes)})
    tracker.log_metrics({"ingest/n_ok": summary.n_ok, "ingest/n_skipped": summary.n_skipped,
                         "ingest/n_frames": summary.n_frames, **{f"ingest/{k}": v for k, v in counts.items()}})
    return {"digest": digest, "n_ok": summary.n_ok, "n_skipped": summary.n_skipped, **counts}


# ----------------------------------------------------------------------------- pretrain
def pretrain_setup(cfg: PipelineConfig, pcfg, cache) -> tuple[Any, Any, dict[str, float]]:
    """The training-split dataset, the LightningModule and data metrics for ``pcfg.method``."""
    train = cache.shard_ids("train")  # held-out subjects never reach pretraining
    if pcfg.method == "video_speech":
        from usssl.data.datasets import AudioVisualDataset
        from usssl.methods.video_speech import VideoSpeechModule

        sp = pcfg.speech
        dataset = AudioVisualDataset(cache, train, split="train", window_s=sp.window_s,
                                     interval_frames=sp.interval_frames,
                                     affinity_threshold=sp.affinity_threshold,
                                     pairs_per_epoch=pcfg.pairs_per_epoch, pairs_per_interval=sp.pairs_per_interval,
                                     hard_negative_range=sp.hard_negative_range, seed=cfg.seed,
                                     order_frames=4 if pcfg.video_speech.gamma > 0 else 0,
                                     order_stride=pcfg.video_speech.order_stride)
        metrics = {"data/high_affinity_interval_fraction": dataset.n_high_affinity / max(dataset.n_intervals, 1),
                   "data/n_speech_frames": sum(s.frames.size for s in dataset.speech)}
        return dataset, VideoSpeechModule(pcfg, audio_rate=int(cache.settings["audio_rate"])), metrics
    from usssl.data.samplers import ClipDataset, ClipPairDataset

    if pcfg.method == "order_transform":
        from usssl.methods.order_transform import OrderTransformModule

        ot = pcfg.order_transform
        dataset = ClipDataset(cache, train, "train", clip_frames=ot.clip_frames, stride=ot.frame_stride,
                              clips_per_epoch=pcfg.pairs_per_epoch or 2048, seed=cfg.seed)
        return dataset, OrderTransformModule(pcfg), {}
    from usssl.methods.cvrl import CVRLModule

    cv = pcfg.cvrl
    dataset = ClipPairDataset(cache, train, "train", clip_frames=cv.clip_frames, stride=cv.stride,
                              pairs_per_epoch=cv.pairs_per_epoch, seed=cfg.seed)
    return dataset, CVRLModule(pcfg), {}


def run_pretrain(cfg: PipelineConfig, pcfg, tracker: Tracker, resume: bool) -> dict:
    import lightning as L
    from torch.utils.data import DataLoader

    from usssl.data.cache import Cache
    from usssl.engine.trainer import build_trainer, checkpoint_dir, resume_checkpoint
    from usssl.methods.distributed import is_main_process

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    cache = Cache(cfg.cache_dir)
    dataset, module, data_metrics = pretrain_setup(cfg, pcfg, cache)
    out = Path(cfg.output_dir) / "pretrain"
    if is_main_process():
        _write_json(out / "pretrain_data.json", {"split": "train", "shards": cache.shard_ids("train"),
                                                 "subjects": dataset.subjects, "method": pcfg.method})
    tracker.log_params({"method": pcfg.method, "n_train_shards": len(cache.shard_ids("train"))})
    tracker.log_metrics(data_metrics)
    loader = DataLoader(dataset, batch_size=pcfg.batch_size, shuffle=False, drop_last=True,
                        num_workers=cfg.trainer.num_workers)
    if not resume and is_main_process():
        shutil.rmtree(checkpoint_dir(cfg, "pretrain"), ignore_errors=True)
    trainer = build_trainer(cfg, "pretrain", tracker, pcfg.max_epochs, pcfg.max_steps)
    trainer.fit(module, loader, ckpt_path=resume_checkpoint(cfg, "pretrain") if resume else None)
    if trainer.global_rank == 0:
        _save_state({"encoder": module.encoder.state_dict(), "encoder_cfg": pcfg.encoder.model_dump(),
                     "method": pcfg.method}, out / "encoder.pt")
        if cfg.tracking.log_checkpoints:
            tracker.log_artifact(out / "encoder.pt", "checkpoints")
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.endswith("_epoch")}
    tracker.log_metrics({f"final/{k}": v for k, v in final.items()})
    return {"encoder": str(out / "encoder.pt"), "epochs": trainer.current_epoch, **final}


# ----------------------------------------------------------------------------- finetune
def _encoder_for(cfg: PipelineConfig, init: str):
    import torch

    from usssl.models.encoders import build_encoder

    pre = cfg.stage("pretrain")
    enc_cfg = pre.encoder if pre is not None else None
    path = Path(cfg.output_dir) / "pretrain" / "encoder.pt"
    if init == "pretrain":
        if not path.is_file():
            from usssl.errors import ConfigError

            raise ConfigError(f"finetune.inits: 'pretrain' needs {path}; add a pretrain stage before finetune")
        state = torch.load(path, map_location="cpu", weights_only=False)
        from usssl.config import EncoderConfig

        encoder = build_encoder(EncoderConfig(**state["encoder_cfg"]))
        encoder.load_state_dict(state["encoder"])  # strict: a mismatched checkpoint is an error
        return encoder, state["method"]
    from usssl.config import EncoderConfig

    return build_encoder(enc_cfg or EncoderConfig()), "random"


def run_finetune(cfg: PipelineConfig, fcfg, tracker: Tracker, resume: bool) -> dict:
    import lightning as L

    from usssl.data.cache import Cache
    from usssl.data.datasets import FrameDataset
    from usssl.downstream.plane_detection import (PlaneClassifier, balanced_loader, balanced_weights,
                                                  fit_linear_probe, label_fraction_indices)
    from usssl.engine.trainer import build_trainer
    from usssl.methods.distributed import is_main_process

    cache = Cache(cfg.cache_dir)
    n_classes = len(cache.classes)
    full = FrameDataset(cache, cache.shard_ids("train"), split="train", stride=fcfg.frame_stride)
    out = Path(cfg.output_dir) / "finetune"
    manifest = []
    for init in fcfg.inits:
        for protocol in fcfg.protocols:
            for frac in sorted(fcfg.label_fractions):
                L.seed_everything(cfg.seed, workers=True, verbose=False)
                encoder, init_name = _encoder_for(cfg, init)
                tag = f"{init_name}-{protocol}-{frac:g}"
                path = out / f"{tag}.pt"
                idx = label_fraction_indices(full.labels, frac, seed=cfg.seed)
                entry = {"tag": tag, "init": init_name, "protocol": protocol, "label_fraction": frac,
                         "n_train": int(idx.size), "path": str(path), "source": init}
                manifest.append(entry)
                if resume and path.is_file():
                    continue
                subset = FrameDataset(cache, cache.shard_ids("train"), split="train",
                                      stride=fcfg.frame_stride, indices=idx)
                t0 = time.time()
                if protocol == "linear":
                    model = fit_linear_probe(encoder, subset, subset.labels, n_classes,
                                             epochs=fcfg.linear_epochs, seed=cfg.seed)
                else:
                    model = PlaneClassifier(encoder, n_classes, fcfg.optimizer,
                                            class_weights=balanced_weights(subset.labels, n_classes),
                                            encoder_lr_scale=fcfg.encoder_lr_scale, augment=fcfg.augment)
                    loader = balanced_loader(subset, subset.labels, fcfg.batch_size,
                                             samples_per_epoch=fcfg.samples_per_epoch, seed=cfg.seed)
                    trainer = build_trainer(cfg, f"finetune/{tag}", tracker, fcfg.max_epochs,
                                            checkpoints=False, metric_prefix=f"{tag}/")
                    trainer.fit(model, loader)
                if is_main_process():
                    _save_state({"model": model.state_dict(), **{k: v for k, v in entry.items() if k != "path"}}, path)
                tracker.log_metrics({f"{tag}/train_seconds": time.time() - t0, f"{tag}/n_train": idx.size})
                if cfg.tracking.log_checkpoints:
                    tracker.log_artifact(path, "checkpoints")
    if is_main_process():
        _write_json(out / "manifest.json", manifest)
    return {"models": len(manifest)}


# ----------------------------------------------------------------------------- evaluate
def run_evaluate(cfg: PipelineConfig, ecfg, tracker: Tracker, resume: bool) -> dict:
    import pandas as pd
    import torch

    from usssl.data.cache import Cache
    from usssl.data.datasets import FrameDataset
    from usssl.downstream.metrics import classification_scores
    from usssl.downstream.plane_detection import PlaneClassifier, predict
    from usssl.downstream.report import confusion_plot, label_efficiency_plot, markdown_report

    cache = Cache(cfg.cache_dir)
    manifest_path = Path(cfg.output_dir) / "finetune" / "manifest.json"
    if not manifest_path.is_file():
        from usssl.errors import ConfigError

        raise ConfigError("evaluate: no fine-tuned models found; add a finetune stage before evaluate")
    test = FrameDataset(cache, cache.shard_ids("test"), split="test", stride=ecfg.frame_stride)
    out = Path(cfg.output_dir) / "evaluate"
    out.mkdir(parents=True, exist_ok=True)
    rows, predictions = [], []
    for entry in json.loads(manifest_path.read_text()):
        encoder, _ = _encoder_for(cfg, "random")
        model = PlaneClassifier(encoder, len(cache.classes))
        model.load_state_dict(torch.load(entry["path"], map_location="cpu", weights_only=False)["model"])
        probs = predict(model, test)
        pred = probs.argmax(1)
        scores = classification_scores(test.labels, pred, len(cache.classes))
        rows.append({"init": entry["init"], "protocol": entry["protocol"],
                     "label_fraction": entry["label_fraction"], "fold": 0,
                     "precision": scores["precision"], "recall": scores["recall"], "f1": scores["f1"],
                     "accuracy": scores["accuracy"], "n_train": entry["n_train"], "n_test": len(test)})
        predictions.append(pd.DataFrame({"model": entry["tag"], "item": range(len(test)),
                                         "true": [cache.classes[i] for i in test.labels],
                                         "pred": [cache.classes[i] for i in pred]}))
        tracker.log_metrics({f"{entry['tag']}/{k}": scores[k] for k in ("precision", "recall", "f1", "accuracy")})
        confusion_plot(scores["confusion"], cache.classes, out / f"confusion_{entry['tag']}.png",
                       f"{entry['tag']} — macro F1 {100 * scores['f1']:.1f}%")
    results = pd.DataFrame(rows)
    results.to_csv(out / "results.csv", index=False)
    pd.concat(predictions).to_csv(out / "predictions.csv", index=False)
    report = markdown_report(results)
    (out / "report.md").write_text(report)
    label_efficiency_plot(results, out / "label_efficiency.png")
    for name in ("results.csv", "predictions.csv", "report.md", "label_efficiency.png"):
        tracker.log_artifact(out / name, "report")
    for png in sorted(out.glob("confusion_*.png")):
        tracker.log_artifact(png, "report/confusion")
    return {"report": report, "results": str(out / "results.csv"), "n_test": len(test)}


STAGES: dict[str, Callable[..., dict]] = {
    "ingest": run_ingest,
    "pretrain": run_pretrain,
    "finetune": run_finetune,
    "evaluate": run_evaluate,
}


TRAINING_STAGES = ("pretrain", "finetune")


def _wait_for_stage(marker: Path, since: float | None, timeout_s: float = 24 * 3600) -> None:
    """Block a non-main rank until the main process has finished an earlier stage."""
    deadline = time.time() + timeout_s
    while not (marker.is_file() and (since is None or marker.stat().st_mtime >= since)):
        if time.time() > deadline:
            from usssl.errors import UssslError

            raise UssslError(f"waited {timeout_s:.0f} s for the main process to finish {marker.name}")
        time.sleep(1.0)


def run_pipeline(cfg: PipelineConfig, resume: bool = False) -> dict[str, Any]:
    """Run every stage in order; returns each stage's summary under its kind, plus ``report``.

    Under multi-process training (torchrun, SLURM, Lightning's launcher) every rank runs this
    function: only the main process ingests, evaluates, writes markers and logs; the other ranks
    join the training stages once the main process has finished the stages before them.
    """
    from usssl.methods.distributed import is_main_process, launched_together

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    main = is_main_process()
    started = None if resume or not launched_together() else time.time() - 2.0
    tracker = Tracker(cfg)
    results: dict[str, Any] = {"tracking_uri": tracker.uri, "output_dir": str(out.resolve())}
    t0 = time.time()
    with tracker.pipeline_run():
        for i, entry in enumerate(cfg.stages):
            done = out / "stages" / f"{i}-{entry.kind}.done.json"
            if not main:
                if entry.kind in TRAINING_STAGES:
                    for j, earlier in enumerate(cfg.stages[:i]):
                        _wait_for_stage(out / "stages" / f"{j}-{earlier.kind}.done.json", started)
                    STAGES[entry.kind](cfg, entry.body, tracker, resume)
                continue
            if resume and done.is_file():
                log.info("stage %d (%s) already finished; skipping (--resume)", i, entry.kind)
                results[entry.kind] = json.loads(done.read_text())
                continue
            done.unlink(missing_ok=True)
            log.info("stage %d: %s", i, entry.kind)
            start = time.time()
            with tracker.stage(entry.kind):
                summary = STAGES[entry.kind](cfg, entry.body, tracker, resume)
                tracker.log_metrics({"stage_seconds": time.time() - start})
            summary["seconds"] = round(time.time() - start, 1)
            _write_json(done, summary)
            results[entry.kind] = summary
        tracker.log_metrics({"pipeline_seconds": time.time() - t0})
        if "ingest" in results:
            tracker.set_tags({"dataset_digest": results["ingest"].get("digest", "")})
    results["seconds"] = round(time.time() - t0, 1)
    if "evaluate" in results:
        results["report"] = results["evaluate"].get("report")
    return results

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
def pretrain_shards(cfg: PipelineConfig, pcfg, cache) -> tuple[list[str], str | None]:
    """(shard ids, split name for the dataset's check): the split's training subjects, or every
    subject outside fold ``pcfg.exclude_fold`` of the finetune stage's k folds."""
    if pcfg.exclude_fold is None:
        return cache.shard_ids("train"), "train"
    from usssl.data.splits import cache_fold, shards_of

    fcfg = cfg.stage("finetune")
    train, _ = cache_fold(cache, fcfg.folds, cfg.seed, pcfg.exclude_fold)
    return shards_of(cache, train), None


def pretrain_setup(cfg: PipelineConfig, pcfg, cache) -> tuple[Any, Any, dict[str, float]]:
    """The training-subject dataset, the LightningModule and data metrics for ``pcfg.method``."""
    train, split = pretrain_shards(cfg, pcfg, cache)  # held-out subjects never reach pretraining
    if pcfg.method == "video_speech":
        from usssl.data.datasets import AudioVisualDataset
        from usssl.methods.video_speech import VideoSpeechModule

        sp = pcfg.speech
        dataset = AudioVisualDataset(cache, train, split=split, window_s=sp.window_s,
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
        dataset = ClipDataset(cache, train, split, clip_frames=ot.clip_frames, stride=ot.frame_stride,
                              clips_per_epoch=pcfg.pairs_per_epoch or 2048, seed=cfg.seed)
        return dataset, OrderTransformModule(pcfg), {}
    from usssl.methods.cvrl import CVRLModule

    cv = pcfg.cvrl
    dataset = ClipPairDataset(cache, train, split, clip_frames=cv.clip_frames, stride=cv.stride,
                              pairs_per_epoch=cv.pairs_per_epoch, max_gap_s=cv.max_gap_s, seed=cfg.seed)
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
    name = pcfg.name or pcfg.method
    out = cfg.pretrain_dir(name)
    stage = out.name  # "pretrain" or "pretrain-<name>": checkpoints and logs of this stage
    shards, _ = pretrain_shards(cfg, pcfg, cache)
    if is_main_process():
        _write_json(out / "pretrain_data.json", {"exclude_fold": pcfg.exclude_fold, "shards": shards,
                                                 "subjects": dataset.subjects, "method": pcfg.method, "name": name})
    tracker.log_params({"method": pcfg.method, "n_train_shards": len(shards)})
    tracker.log_metrics(data_metrics)
    loader = DataLoader(dataset, batch_size=pcfg.batch_size, shuffle=False, drop_last=True,
                        num_workers=cfg.trainer.num_workers)
    if not resume and is_main_process():
        shutil.rmtree(checkpoint_dir(cfg, stage), ignore_errors=True)
    trainer = build_trainer(cfg, stage, tracker, pcfg.max_epochs, pcfg.max_steps)
    trainer.fit(module, loader, ckpt_path=resume_checkpoint(cfg, stage) if resume else None)
    if trainer.global_rank == 0:
        from usssl.engine.trainer import save_atomic

        save_atomic({"encoder": module.encoder.state_dict(), "encoder_cfg": pcfg.encoder.model_dump(),
                     "method": pcfg.method, "name": name}, out / "encoder.pt")
        if cfg.tracking.log_checkpoints:
            tracker.log_artifact(out / "encoder.pt", "checkpoints")
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.endswith("_epoch")}
    tracker.log_metrics({f"final/{k}": v for k, v in final.items()})
    return {"encoder": str(out / "encoder.pt"), "epochs": trainer.current_epoch, **final}


# ----------------------------------------------------------------------------- transfer
def run_finetune(cfg: PipelineConfig, fcfg, tracker: Tracker, resume: bool) -> dict:
    from usssl.downstream.transfer import run_finetune as run

    return run(cfg, fcfg, tracker, resume)


def run_evaluate(cfg: PipelineConfig, ecfg, tracker: Tracker, resume: bool) -> dict:
    from usssl.downstream.evaluate import run_evaluate as run

    return run(cfg, ecfg, tracker, resume)


def run_saliency(cfg: PipelineConfig, scfg, tracker: Tracker, resume: bool) -> dict:
    from usssl.downstream.stages import run_saliency_stage

    return run_saliency_stage(cfg, scfg, tracker, resume)


def run_export(cfg: PipelineConfig, xcfg, tracker: Tracker, resume: bool) -> dict:
    from usssl.downstream.stages import run_export as run

    return run(cfg, xcfg, tracker, resume)


STAGES: dict[str, Callable[..., dict]] = {
    "ingest": run_ingest,
    "pretrain": run_pretrain,
    "finetune": run_finetune,
    "evaluate": run_evaluate,
    "saliency": run_saliency,
    "export": run_export,
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
    reports = [results[k].get("report") for k in ("evaluate", "saliency") if k in results]
    if any(reports):
        results["report"] = "\n".join(r for r in reports if r)
    return results

"""The ingest stage: the recordings of ``data.sources`` (or the built-in synthetic corpus) into the
cache, with the dataset's digest and split sizes logged.

    >>> run(cfg, cfg.stage("ingest"), tracker, resume=False)["n_ok"]
    12
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from usssl.config import PipelineConfig
from usssl.engine.tracking import Tracker

log = logging.getLogger(__name__)


def synth_corpus(cfg: PipelineConfig) -> Path:
    """The built-in synthetic corpus under ``<output_dir>/synth``, generated when missing or stale."""
    from usssl.data.synth import generate

    s = cfg.data.synth
    out = Path(cfg.output_dir) / "synth"
    wanted = {"subjects": s.subjects, "seed": s.seed, "duration_s": s.duration_s, "voice": s.voice,
              "size": list(s.size), "naming_fraction": s.naming_fraction, "unnamed": s.unnamed}
    meta = out / "corpus.json"
    if meta.is_file():
        have = json.loads(meta.read_text())
        if all(have.get(k) == v for k, v in wanted.items()):
            return out
        shutil.rmtree(out)
    log.info("generating the synthetic corpus (%d subjects) in %s", s.subjects, out)
    generate(out, subjects=s.subjects, seed=s.seed, voice=s.voice, duration_s=s.duration_s,
             size=tuple(s.size), progress=cfg.trainer.progress, naming_fraction=s.naming_fraction,
             unnamed=s.unnamed)
    return out


def fold_count(cfg: PipelineConfig) -> int:
    """The fewest subjects a class needs so that every fold can train and test on it: the folds of
    the first k-fold stage (finetune or saliency), else 2 (one to train on, one to test)."""
    for entry in cfg.stages:
        if getattr(entry.body, "cv", None) == "kfold":
            return int(entry.body.folds)
    return 2


def run(cfg: PipelineConfig, icfg, tracker: Tracker, resume: bool) -> dict:
    """Ingest the sources into ``cfg.cache_dir``; returns counts and the cache digest."""
    from usssl.data.cache import Cache
    from usssl.data.ingest import ingest

    sources = [Path(p) for p in cfg.data.sources] or [synth_corpus(cfg)]
    d = cfg.data
    summary = ingest(sources, cfg.cache_dir, icfg, labels_csv=d.labels_csv and Path(d.labels_csv),
                     gaze_csv=d.gaze_csv and Path(d.gaze_csv),
                     subjects_csv=d.subjects_csv and Path(d.subjects_csv), progress=cfg.trainer.progress,
                     allow_unmatched_labels=d.allow_unmatched_labels, subject_per_recording=d.subject_per_recording,
                     min_subjects_per_class=fold_count(cfg))
    cache = Cache(cfg.cache_dir)
    digest = cache.digest()
    counts = {f"n_subjects_{k}": len(v) for k, v in cache.splits.items()}
    tracker.log_params({"dataset_digest": digest, "n_classes": len(cache.classes),
                        "classes": ",".join(cache.classes)})
    tracker.log_metrics({"ingest/n_ok": summary.n_ok, "ingest/n_skipped": summary.n_skipped,
                         "ingest/n_frames": summary.n_frames, **{f"ingest/{k}": v for k, v in counts.items()}})
    return {"digest": digest, "n_ok": summary.n_ok, "n_skipped": summary.n_skipped, **counts}


def check_cache_classes(cfg: PipelineConfig) -> str:
    """Warn (as ingest does) about each class of the existing cache labelled in fewer subjects than
    the pipeline's folds; returns what was checked, in words (for ``usssl validate``)."""
    from usssl.data.cache import Cache
    from usssl.data.splits import class_subject_counts, warn_thin_classes

    cache = Cache(cfg.cache_dir)
    labels = ((sh.subject, sh.labels) for sh in map(cache.shard, cache.shard_ids()))
    need = fold_count(cfg)
    thin = warn_thin_classes(class_subject_counts(labels, cache.classes), need, "validate")
    if thin:
        return f"classes: {', '.join(sorted(thin))} labelled in fewer than {need} subjects (see the warning)"
    return f"classes: each labelled class in at least {need} subjects of the cache"

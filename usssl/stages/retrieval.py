"""The retrieval stage: clip (and recording) retrieval with every frozen encoder, per fold and seed.

For each seed, fold (the finetune stage's plan) and init, the encoder that fold transfers from (the
pretraining that never saw its test subjects; a fresh seeded one for ``random``) embeds clips of
``clip_frames`` frames centred on every ``frame_stride``-th labelled frame; queries are the fold's
test subjects' clips, the gallery its training subjects' (``usssl.downstream.retrieval``).

Outputs in ``<output_dir>/retrieval/``: ``results.csv`` (init, fold, seed, level, k, recall, sizes),
``summary.csv`` (mean ± std over folds × seeds) and ``report.md``.

    >>> run(cfg, cfg.stage("retrieval"), tracker, resume=False)["summary"]
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from usssl.config import PipelineConfig, RetrievalConfig
from usssl.data.cache import Cache
from usssl.data.splits import BACKGROUND

log = logging.getLogger(__name__)


def _clips(fold, cache: Cache, part: str, rcfg: RetrievalConfig):
    """The ``part`` subjects' clips (background left out when asked)."""
    full = fold.frames(cache, part, rcfg.frame_stride)
    keep = None
    if rcfg.exclude_background and BACKGROUND in cache.classes:
        keep = np.flatnonzero(full.labels != cache.classes.index(BACKGROUND))
    return fold.frames(cache, part, rcfg.frame_stride, indices=keep, clip_frames=rcfg.clip_frames)


def _encoder(cfg: PipelineConfig, init: str, cache: Cache, fold, seed: int):
    import lightning as L

    from usssl.stages.common import encoder_for_init

    L.seed_everything(seed, workers=True, verbose=False)  # random init: a fresh encoder of this seed
    return encoder_for_init(cfg, init, cache, fold, seed)[0]


def run(cfg: PipelineConfig, rcfg: RetrievalConfig, tracker, resume: bool) -> dict:
    """Score every (seed, fold, init); write and log ``retrieval/`` (module docstring)."""
    from usssl.data.splits import shards_of
    from usssl.downstream.retrieval import (RecordingClips, clip_features, recall_at_k, recording_features,
                                            valid_ks)
    from usssl.stages.common import fold_plan, init_names

    cache = Cache(cfg.cache_dir)
    folds = fold_plan(cfg, cfg.stage("finetune"), cache)
    inits = init_names(cfg, rcfg)
    rows: list[dict] = []
    for seed in cfg.run_seeds:
        for fold in folds:
            queries, gallery = _clips(fold, cache, "test", rcfg), _clips(fold, cache, "train", rcfg)
            recordings = None
            if rcfg.recording_clips:
                recordings = (RecordingClips(cache, shards_of(cache, fold.test_subjects), rcfg.clip_frames,
                                             rcfg.recording_clips),
                              RecordingClips(cache, shards_of(cache, fold.train_subjects), rcfg.clip_frames,
                                             rcfg.recording_clips))
            for init in inits:
                encoder = _encoder(cfg, init, cache, fold, seed)
                base = {"init": init, "fold": fold.index, "seed": seed}
                scores = recall_at_k(clip_features(encoder, queries), queries.labels, clip_features(encoder, gallery),
                                     gallery.labels, rcfg.ks)
                rows += [{**base, "level": "clip", "k": k, "recall": r, "n_queries": len(queries),
                          "n_gallery": len(gallery)} for k, r in scores.items()]
                if recordings is not None and len(recordings[0].shard_ids) and len(recordings[1].shard_ids):
                    q, g = (recording_features(encoder, r) for r in recordings)
                    rec = recall_at_k(q, recordings[0].labels, g, recordings[1].labels, rcfg.ks)
                    rows += [{**base, "level": "recording", "k": k, "recall": r, "n_queries": len(q),
                              "n_gallery": len(g)} for k, r in rec.items()]
                log.info("retrieval: seed %d, fold %d, %s: %s", seed, fold.index, init,
                         ", ".join(f"R@{k} {r:.3f}" for k, r in scores.items()))
            dropped = sorted(set(rcfg.ks) - set(valid_ks(rcfg.ks, len(gallery))))
            if dropped:
                log.warning("retrieval: Recall@%s left out for fold %d: a gallery of %d clips allows k <= %d",
                            dropped, fold.index, len(gallery), len(gallery) // 4)
    out = Path(cfg.output_dir) / "retrieval"
    out.mkdir(parents=True, exist_ok=True)
    results = pd.DataFrame(rows, columns=["init", "fold", "seed", "level", "k", "recall", "n_queries", "n_gallery"])
    summary = (results.groupby(["level", "init", "k"], sort=False)["recall"]
               .agg(mean="mean", std="std", runs="count").reset_index())
    results.to_csv(out / "results.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    report = markdown(summary, rcfg, len(folds), len(cfg.run_seeds))
    (out / "report.md").write_text(report)
    tracker.log_metrics({f"retrieval/{r.level}/{r.init}/recall_at_{r.k}": float(r.mean) for r in summary.itertuples()})
    for name in ("results.csv", "summary.csv", "report.md"):
        tracker.log_artifact(out / name, "retrieval")
    return {"results": str(out / "results.csv"), "folds": len(folds), "seeds": len(cfg.run_seeds),
            "summary": {f"{r.level}/{r.init}/R@{r.k}": round(float(r.mean), 4) for r in summary.itertuples()}}


def markdown(summary: pd.DataFrame, rcfg: RetrievalConfig, n_folds: int, n_seeds: int) -> str:
    """The report: Recall@k per level and init, mean ± std over folds × seeds."""
    lines = [f"# Clip retrieval (Recall@k, %; {rcfg.clip_frames}-frame clips, cosine nearest neighbours)", "",
             f"Queries: test subjects' clips; gallery: training subjects' clips; {n_folds} fold(s) × {n_seeds} "
             f"seed(s), mean ± std.{' Background clips left out.' if rcfg.exclude_background else ''}", ""]
    for level, part in summary.groupby("level", sort=False):
        ks = sorted(part["k"].unique())
        lines += [f"## {level} level", "", "| init | " + " | ".join(f"R@{k}" for k in ks) + " |",
                  "|---|" + "---|" * len(ks)]
        for init, rows in part.groupby("init", sort=False):
            by_k = rows.set_index("k")
            cells = [_cell(by_k.loc[k]) if k in by_k.index else "–" for k in ks]
            lines.append(f"| {init} | " + " | ".join(cells) + " |")
        lines.append("")
    if summary.empty:
        lines.append("No retrieval scores: every gallery was smaller than 4 clips.")
    if rcfg.recording_clips and "recording" not in set(summary["level"]):
        lines.append("No recording-level scores: no recording carries a single label (or too few do).")
    return "\n".join(lines) + "\n"


def _cell(row: pd.Series) -> str:
    """Recall in %: mean ± std over runs, the mean alone for one run."""
    mean = f"{100 * row['mean']:.1f}"
    return mean if row["runs"] < 2 or np.isnan(row["std"]) else f"{mean} ± {100 * row['std']:.1f}"

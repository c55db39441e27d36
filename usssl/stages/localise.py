"""The localise stage: label-free anatomy localisation with ContraCAM for each init (``random`` and
every pretrained encoder of ``inits``; the first fold and seed's encoder).

Writes ``localise/<init>/objects/<shard>.npz`` (per-frame masks and boxes, the input of
``pretrain.frame_contrastive.objects_from``), ``boxes.csv``, ``overlay-*.png`` and, when the cache
holds anatomy masks (``Shard.masks``), ``scores.csv`` and ``localise/report.md`` (mask IoU, box IoU
and pointing game of ContraCAM and the centre-box baseline).

    >>> run(cfg, cfg.stage("localise"), tracker, resume=False)["report"]
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from usssl.config import LocaliseConfig, PipelineConfig
from usssl.data.cache import Cache
from usssl.stages.common import init_names

log = logging.getLogger(__name__)


def scorer_for_init(cfg: PipelineConfig, init: str, cache: Cache, lcfg: LocaliseConfig):
    """The ContraCAM scorer of ``init``: its image encoder and (when saved) its projector."""
    from usssl.downstream.contracam import ContrastiveScorer, reduce_last_stride
    from usssl.methods.frame_contrastive import projector_from_meta
    from usssl.models.checkpoint import load_encoder
    from usssl.models.encoders import build_encoder
    from usssl.stages.common import fold_plan, pretrain_run_for, random_encoder_config

    projector = None
    if init == "random":
        encoder = build_encoder(random_encoder_config(cfg))
    else:
        fold = fold_plan(cfg, cfg.stage("finetune"), cache)[0]
        path = pretrain_run_for(cfg, init, cache, fold, cfg.run_seeds[0]).folder / "encoder.pt"
        encoder, _, meta = load_encoder(path)
        projector = projector_from_meta(meta)
    if not hasattr(encoder, "image_encoder"):
        from usssl.errors import ConfigError

        raise ConfigError(f"localise.inits: {init!r} has a 3-D video encoder; ContraCAM explains 2-D frame encoders")
    image_encoder = encoder.image_encoder.eval()
    if lcfg.expand_resolution:
        h, w = (int(v) for v in cache.index[["height", "width"]].iloc[0])
        image_encoder = reduce_last_stride(image_encoder, (h, w))
    return ContrastiveScorer(image_encoder, None if projector is None else projector.eval())


def localise_report(scores: dict[str, pd.DataFrame]) -> str:
    """Markdown: one row per init (ContraCAM) and the centre-box baseline once."""
    from usssl.downstream.localise import METRICS
    from usssl.downstream.report import to_markdown

    rows = []
    for init, frame in scores.items():
        mean = frame.groupby("model")[list(METRICS)].mean()
        rows.append({"model": f"ContraCAM ({init})", **mean.loc["contracam"]})
    first = next(iter(scores.values()))
    rows.append({"model": "centre box", **first.groupby("model")[list(METRICS)].mean().loc["centre_box"]})
    table = pd.DataFrame(rows).set_index("model").round(3)
    table.columns = ["mask IoU ↑", "box IoU ↑", "pointing ↑"]
    n = first["frame"].nunique() if not first.empty else 0
    return "\n".join(["## Label-free anatomy localisation (frames with an anatomy mask)", "",
                      f"{len(first) // 2} frames ({n} distinct indices).", "", to_markdown(table), ""])


def run(cfg: PipelineConfig, lcfg: LocaliseConfig, tracker, resume: bool) -> dict:
    """Localise the chosen split's frames with every init; write ``localise/`` (module docstring)."""
    import torch

    cache = Cache(cfg.cache_dir)
    shards = cache.shard_ids(None if lcfg.split == "all" else lcfg.split)
    out = Path(cfg.output_dir) / "localise"
    truth_of = None
    if any(cache.shard(s).masks is not None for s in shards):  # recordings without masks are not scored
        def truth_of(shard_id):  # noqa: E306
            return cache.shard(shard_id).masks
    scores: dict[str, pd.DataFrame] = {}
    for init in init_names(cfg, lcfg):
        folder = out / init
        if resume and (folder / "boxes.csv").is_file() and (truth_of is None or (folder / "scores.csv").is_file()):
            if truth_of is not None:
                scores[init] = pd.read_csv(folder / "scores.csv")
            continue
        torch.manual_seed(cfg.seed)
        from usssl.downstream.localise import localise

        scorer = scorer_for_init(cfg, init, cache, lcfg)
        frame = localise(cache, scorer, shards, lcfg, folder, seed=cfg.seed, truth_of=truth_of)
        for png in sorted(folder.glob("overlay-*.png")):
            tracker.log_artifact(png, f"localise/{init}")
        if truth_of is not None:
            frame.to_csv(folder / "scores.csv", index=False)
            scores[init] = frame
            means = frame[frame["model"] == "contracam"].drop(columns=["shard", "frame", "model"]).mean()
            tracker.log_metrics({f"localise/{init}/{k}": float(v) for k, v in means.items()})
    report = localise_report(scores) if scores else ""
    if report:
        (out / "report.md").write_text(report)
        tracker.log_artifact(out / "report.md", "report")
    return {"report": report, "inits": init_names(cfg, lcfg), "objects": str(out)}

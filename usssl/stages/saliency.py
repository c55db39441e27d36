"""The saliency stage: for each init (random and every pretrained encoder), fold and seed, train the
map decoder on the fold's training subjects (epochs chosen on its validation subjects) and score
it, the centre-bias and the uniform baselines on its test subjects; writes ``saliency/<init>/``
(``<init>/fold<k>-seed<s>/`` with several folds or seeds) and ``saliency/report.md``.

    >>> run(cfg, cfg.stage("saliency"), tracker, resume=False)["report"]
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from usssl.config import PipelineConfig, SaliencyConfig
from usssl.data.cache import Cache
from usssl.stages.common import encoder_for_init, init_names

log = logging.getLogger(__name__)


def saliency_report(summaries: dict[str, pd.DataFrame], transductive: bool = False, how: str = "") -> str:
    """Markdown: one row per init (the trained decoder), then the two baselines once."""
    from usssl.downstream.report import to_markdown
    from usssl.downstream.saliency import METRICS

    rows = []
    for init, summary in summaries.items():
        rows.append({"model": f"{init} encoder + decoder", **summary.set_index("model").loc["trained", list(METRICS)]})
    first = next(iter(summaries.values())).set_index("model")
    rows += [{"model": name.replace("_", " "), **first.loc[name, list(METRICS)]} for name in ("centre_bias", "uniform")]
    table = pd.DataFrame(rows).set_index("model").round(3)
    table.columns = ["KL ↓", "CC ↑", "NSS ↑", "SIM ↑", "AUC-Judd ↑"]
    mark = " — TRANSDUCTIVE (pretraining saw test subjects' video)" if transductive else ""
    return "\n".join([f"## Gaze saliency on held-out subjects (MIT benchmark metrics){mark}", "",
                      *([how, ""] if how else []), to_markdown(table), ""])


def run(cfg: PipelineConfig, scfg: SaliencyConfig, tracker, resume: bool) -> dict:
    """Train and score a saliency decoder per init, fold and seed (the finetune stage's folds, the same
    rule for what pretraining saw, epochs chosen on validation); write ``saliency/report.md``."""
    import lightning as L

    from usssl.data.splits import shards_of
    from usssl.downstream.saliency import run_saliency
    from usssl.stages.common import fold_plan, pretrain_run_for

    cache = Cache(cfg.cache_dir)
    out = Path(cfg.output_dir) / "saliency"
    folds, seeds = fold_plan(cfg, cfg.stage("finetune"), cache), cfg.run_seeds
    single = len(folds) == 1 and len(seeds) == 1
    summaries: dict[str, pd.DataFrame] = {}
    transductive = False
    for init in init_names(cfg, scfg):
        parts = []
        for seed in seeds:
            for fold in folds:
                folder = out / init if single else out / init / f"fold{fold.index}-seed{seed}"
                if init != "random":  # what the encoder's pretraining saw: read from its pretrain_data.json
                    seen = pretrain_run_for(cfg, init, cache, fold, seed).folder / "pretrain_data.json"
                    subjects = json.loads(seen.read_text()).get("subjects", []) if seen.is_file() else []
                    transductive |= bool(set(subjects) & set(fold.test_subjects))
                if not (resume and (folder / "saliency_summary.csv").is_file()):
                    L.seed_everything(seed, workers=True, verbose=False)
                    encoder, enc_cfg = encoder_for_init(cfg, init, cache, fold, seed)
                    shards = {part: shards_of(cache, getattr(fold, f"{part}_subjects")) for part in ("train", "val", "test")}
                    scores = run_saliency(cache, encoder, scfg, folder, seed=seed, shards=shards,
                                          model_meta={"encoder_cfg": enc_cfg.model_dump(), "init": init,
                                                      "fold": fold.index, "seed": seed})
                    tag = init if single else f"{init}/{folder.name}"
                    tracker.log_metrics({f"saliency/{tag}/{k.replace('/', '_')}": v for k, v in scores.items()})
                parts.append(pd.read_csv(folder / "saliency_summary.csv"))
                for png in sorted(folder.glob("*.png")):
                    tracker.log_artifact(png, f"saliency/{init}" if single else f"saliency/{init}/{folder.name}")
        summaries[init] = pd.concat(parts).groupby("model", sort=False).mean(numeric_only=True).reset_index()
        if not single:
            summaries[init].to_csv(out / init / "saliency_summary.csv", index=False)
    how = "" if single else f"Mean over {len(folds)} fold(s) × {len(seeds)} seed(s); decoder epochs chosen on validation."
    report = saliency_report(summaries, transductive, how)
    (out / "report.md").write_text(report)
    tracker.log_artifact(out / "report.md", "report")
    return {"report": report, "inits": list(summaries), "transductive": transductive}

"""The saliency stage: for each init (random and every pretrained encoder), train the map decoder
on the ingest split's training subjects and score it, the centre-bias and the uniform baselines
on the test subjects; writes ``saliency/<init>/`` and ``saliency/report.md``.

    >>> run(cfg, cfg.stage("saliency"), tracker, resume=False)["report"]
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from usssl.config import PipelineConfig, SaliencyConfig
from usssl.data.cache import Cache
from usssl.stages.common import encoder_for_init, init_names

log = logging.getLogger(__name__)


def saliency_report(summaries: dict[str, pd.DataFrame]) -> str:
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
    return "\n".join(["## Gaze saliency on held-out subjects (MIT benchmark metrics)", "", to_markdown(table), ""])


def run(cfg: PipelineConfig, scfg: SaliencyConfig, tracker, resume: bool) -> dict:
    """Train and score a saliency decoder per init; write ``saliency/report.md``."""
    import lightning as L

    from usssl.downstream.saliency import run_saliency

    cache = Cache(cfg.cache_dir)
    out = Path(cfg.output_dir) / "saliency"
    summaries: dict[str, pd.DataFrame] = {}
    for init in init_names(cfg, scfg):
        folder = out / init
        if not (resume and (folder / "saliency_summary.csv").is_file()):
            L.seed_everything(cfg.seed, workers=True, verbose=False)
            encoder, enc_cfg = encoder_for_init(cfg, init)
            scores = run_saliency(cache, encoder, scfg, folder, seed=cfg.seed,
                                  model_meta={"encoder_cfg": enc_cfg.model_dump(), "init": init})
            tracker.log_metrics({f"saliency/{init}/{k.replace('/', '_')}": v for k, v in scores.items()})
        summaries[init] = pd.read_csv(folder / "saliency_summary.csv")
        for png in sorted(folder.glob("*.png")):
            tracker.log_artifact(png, f"saliency/{init}")
    report = saliency_report(summaries)
    (out / "report.md").write_text(report)
    tracker.log_artifact(out / "report.md", "report")
    return {"report": report, "inits": list(summaries)}

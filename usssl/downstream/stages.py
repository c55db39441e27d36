"""Pipeline stages of the downstream tasks after evaluate: gaze saliency and export.

- ``saliency``: for each init (random and every pretrained encoder), ``run_saliency`` trains the
  map decoder on the ingest split's training subjects and scores it, the centre-bias and the
  uniform baselines on the test subjects; writes ``saliency/<init>/`` and ``saliency/report.md``.
- ``export``: the best (or a named) fitted plane classifier, with the saliency model of the same
  init when there is one, as ``export/`` for ``usssl predict``.

    >>> run_saliency_stage(cfg, cfg.stage("saliency"), tracker, resume=False)["report"]
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import torch

from usssl.config import ExportConfig, PipelineConfig, SaliencyConfig
from usssl.data.cache import Cache
from usssl.errors import ConfigError

log = logging.getLogger(__name__)


def _encoder(cfg: PipelineConfig, init: str):
    """(encoder, its EncoderConfig) for ``init`` ("random" or a pretrain stage's name)."""
    from usssl.downstream.transfer import pretrained_encoder, random_encoder_config
    from usssl.models.encoders import build_encoder

    if init == "random":
        enc_cfg = random_encoder_config(cfg)
        return build_encoder(enc_cfg), enc_cfg
    encoder, enc_cfg, _ = pretrained_encoder(cfg, init)
    return encoder, enc_cfg


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


def run_saliency_stage(cfg: PipelineConfig, scfg: SaliencyConfig, tracker, resume: bool) -> dict:
    """Train and score a saliency decoder per init; write ``saliency/report.md``."""
    import lightning as L

    from usssl.downstream.saliency import run_saliency
    from usssl.downstream.transfer import init_names

    cache = Cache(cfg.cache_dir)
    out = Path(cfg.output_dir) / "saliency"
    summaries: dict[str, pd.DataFrame] = {}
    for init in init_names(cfg, scfg):
        folder = out / init
        if not (resume and (folder / "saliency_summary.csv").is_file()):
            L.seed_everything(cfg.seed, workers=True, verbose=False)
            encoder, enc_cfg = _encoder(cfg, init)
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


def load_saliency_model(path: Path):
    """Rebuild a ``SaliencyModel`` saved by the saliency stage."""
    from usssl.config import EncoderConfig
    from usssl.downstream.saliency import SaliencyModel
    from usssl.models.encoders import build_encoder

    saved = torch.load(path, map_location="cpu", weights_only=False)
    model = SaliencyModel(build_encoder(EncoderConfig(**saved["encoder_cfg"])), saved["channels"], saved["blocks"])
    model.load_state_dict(saved["model"])
    return model.eval(), saved


def choose_model(cfg: PipelineConfig, xcfg: ExportConfig) -> dict:
    """The manifest entry to export: ``xcfg.model`` by tag, or the best mean F1 (fold 0's model)."""
    manifest = json.loads((Path(cfg.output_dir) / "finetune" / "manifest.json").read_text())
    if xcfg.model != "best":
        found = [e for e in manifest if e["tag"] == xcfg.model]
        if not found:
            raise ConfigError(f"export.model: no fitted model {xcfg.model!r}; choose one of "
                              f"{sorted(e['tag'] for e in manifest)} or 'best'")
        return found[0]
    results_path = Path(cfg.output_dir) / "evaluate" / "results.csv"
    if not results_path.is_file():
        raise ConfigError("export.model: 'best' needs the evaluate stage's results; put export after evaluate")
    results = pd.read_csv(results_path)
    results = results[results["protocol"].isin(["linear", "finetune"])]
    init, protocol, frac = results.groupby(["init", "protocol", "label_fraction"])["f1"].mean().idxmax()
    return next(e for e in manifest if (e["init"], e["protocol"], e["label_fraction"]) == (init, protocol, frac))


def run_export(cfg: PipelineConfig, xcfg: ExportConfig, tracker, resume: bool) -> dict:
    """Export the chosen classifier (+ saliency model) to ``<output_dir>/export``."""
    from usssl.downstream.export import PreprocessingSpec, export_model
    from usssl.downstream.transfer import load_model

    entry = choose_model(cfg, xcfg)
    model = load_model(entry["path"])
    saliency, clip = None, None
    sal_path = Path(cfg.output_dir) / "saliency" / entry["init"] / "saliency_model.pt"
    if xcfg.saliency and sal_path.is_file():
        saliency, saved = load_saliency_model(sal_path)
        clip = saved["clip_frames"]
    spec = PreprocessingSpec.from_training(Cache(cfg.cache_dir).settings, entry, pipeline=cfg.name)
    spec.saliency_clip_frames = clip
    out = export_model(model, Path(cfg.output_dir) / "export", spec, saliency=saliency)
    for name in sorted(p.name for p in out.iterdir()):
        tracker.log_artifact(out / name, "export")
    log.info("exported %s to %s (usssl predict %s INPUT...)", entry["tag"], out, out)
    return {"model": entry["tag"], "saliency": saliency is not None, "export_dir": str(out)}

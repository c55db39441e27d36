"""The export stage: the best (or a named) fitted plane classifier, with the saliency model of the
same init when there is one, as ``export/`` for ``usssl predict``.

    >>> run(cfg, cfg.stage("export"), tracker, resume=False)["export_dir"]
    'runs/demo/export'
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from usssl.config import ExportConfig, PipelineConfig
from usssl.data.cache import Cache
from usssl.errors import ConfigError

log = logging.getLogger(__name__)


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


def run(cfg: PipelineConfig, xcfg: ExportConfig, tracker, resume: bool) -> dict:
    """Export the chosen classifier (+ saliency model) to ``<output_dir>/export``."""
    from usssl.downstream.checkpoint import load_classifier, load_saliency_model
    from usssl.downstream.export import PreprocessingSpec, export_model

    entry = choose_model(cfg, xcfg)
    model = load_classifier(entry["path"])
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

"""The export stage: a plane classifier, with the saliency model of the same init when there is one,
as ``export/`` for ``usssl predict``.

Cross-validation estimates how well a *recipe* (init × protocol × label fraction, with the settings
selected on validation) works; it does not pick a model to ship. The recipe with the best mean
*validation* macro F1 is re-run once on every subject — its own pretraining included, with an inner
subject-level validation split for epoch selection — and that model is exported (``refit``).
``preprocessing.json`` records the recipe, how it was chosen and its cross-validated estimate.

    >>> run(cfg, cfg.stage("export"), tracker, resume=False)["export_dir"]
    'runs/demo/export'
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
from torch import nn

from usssl.config import ExportConfig, PipelineConfig
from usssl.data.cache import Cache
from usssl.engine.distributed import is_main_process
from usssl.downstream.export import SALIENCY_FILE
from usssl.errors import ConfigError

log = logging.getLogger(__name__)

KEYS = ["init", "protocol", "label_fraction"]


def choose_recipe(cfg: PipelineConfig, xcfg: ExportConfig) -> dict:
    """The recipe to export, chosen on validation only: ``xcfg.model`` by tag, or the (init, protocol,
    label fraction) with the best mean validation macro F1 over folds and seeds. Test scores are
    never read here. Returns the first manifest entry of the recipe plus ``selection`` (how it was
    chosen, with every recipe's mean validation F1)."""
    manifest = json.loads((Path(cfg.output_dir) / "finetune" / "manifest.json").read_text())
    if xcfg.model != "best":
        found = [e for e in manifest if e["tag"] == xcfg.model]
        if not found:
            raise ConfigError(f"export.model: no fitted model {xcfg.model!r}; choose one of "
                              f"{sorted(e['tag'] for e in manifest)} or 'best'")
        return {**found[0], "selection": {"rule": f"named in the config: {xcfg.model}"}}
    fitted = pd.DataFrame(manifest)
    fitted = fitted[fitted["protocol"].isin(["linear", "finetune"])]
    val = fitted.groupby(KEYS)["val_f1"].mean() if "val_f1" in fitted else pd.Series(dtype=float)
    if val.dropna().empty:
        raise ConfigError("export.model: 'best' chooses on validation scores and the finetune stage has none "
                          "(finetune.val_fraction is 0, or a fold has too few subjects); set finetune.val_fraction "
                          "> 0 or name a model tag in export.model")
    key = val.idxmax()
    entry = next(e for e in manifest if tuple(e[k] for k in KEYS) == key)
    table = {"-".join(f"{v:g}" if isinstance(v, float) else str(v) for v in k): round(float(f), 4)
             for k, f in val.dropna().items()}
    return {**entry, "selection": {"rule": "best mean validation macro F1 over folds and seeds (linear, finetune)",
                                   "val_f1": round(float(val[key]), 4), "validation_f1_by_recipe": table}}


def cv_estimate(cfg: PipelineConfig, recipe: dict) -> dict | None:
    """The evaluate stage's cross-validated estimate of ``recipe`` (macro F1 with its interval), if any."""
    path = Path(cfg.output_dir) / "evaluate" / "intervals.csv"
    if not path.is_file():
        return None
    rows = pd.read_csv(path)
    row = rows[(rows["init"] == recipe["init"]) & (rows["protocol"] == recipe["protocol"])
               & (rows["label_fraction"] == recipe["label_fraction"])]  # fmt: skip
    if row.empty:
        return None
    keep = [c for c in ("f1", "f1_lo", "f1_hi", "precision", "recall", "fold_f1_mean", "fold_f1_std", "n_folds",
                        "n_seeds", "n_subjects") if c in row]
    return {k: (float(v) if isinstance(v, float) else int(v)) for k, v in row.iloc[0][keep].items()}


def refit_on_all_subjects(cfg: PipelineConfig, recipe: dict, tracker, resume: bool):
    """Re-run ``recipe`` once on every subject: its pretraining (when the init is a pretrain stage), then
    the protocol at its label fraction, with epochs chosen on an inner subject-level validation split.
    Returns (model, its EncoderConfig, the inner fit's selection)."""
    import lightning as L

    from usssl.data.splits import shards_of
    from usssl.models.checkpoint import load_encoder
    from usssl.models.encoders import build_encoder
    from usssl.stages.common import Fold, pretrain_stage_named, random_encoder_config, validation_subjects
    from usssl.stages.finetune import fit, supervised_encoder
    from usssl.stages.pretrain import train_encoder
    from usssl.downstream.plane_detection import label_fraction_indices

    fcfg, cache = cfg.stage("finetune"), Cache(cfg.cache_dir)
    out = Path(cfg.output_dir) / "export-refit"
    everyone = sorted(set(cache.index["subject"]))
    fold = Fold(-1, *validation_subjects(cache, everyone, fcfg.val_fraction, cfg.seed), [], False)
    init, seed = recipe["init"], cfg.seed
    enc_cfg, state = random_encoder_config(cfg), None
    if init == "supervised":
        state = supervised_encoder(cfg, fcfg, fold, cache, tracker, out, resume, seed).state_dict()
    elif init != "random":
        pcfg = pretrain_stage_named(cfg, init)
        folder = out / f"pretrain-{init}"
        if not (resume and (folder / "encoder.pt").is_file()):
            log.info("export: pretraining %s on all %d subjects", init, len(everyone))
            train_encoder(cfg, pcfg, cache, shards_of(cache, everyone), None, seed, folder, f"export-pretrain-{init}",
                          tracker, resume, metric_prefix="export/")
        encoder, enc_cfg, _ = load_encoder(folder / "encoder.pt")
        state = encoder.state_dict()

    def make_encoder() -> nn.Module:
        encoder = build_encoder(enc_cfg)
        if state is not None:
            encoder.load_state_dict(state)
        return encoder

    L.seed_everything(seed, workers=True, verbose=False)
    full, clip = fold.frames(cache, "train", fcfg.frame_stride), enc_cfg.clip_frames
    idx = label_fraction_indices(full.labels, recipe["label_fraction"], seed=seed)
    subset = fold.frames(cache, "train", fcfg.frame_stride, indices=idx, clip_frames=clip)
    model, chosen = fit(cfg, fcfg, recipe["protocol"], make_encoder, subset,
                        fold.frames(cache, "val", fcfg.frame_stride, clip_frames=clip),
                        cache.classes, tracker, "export-refit", seed)
    return model, enc_cfg, {**chosen, "n_train": int(idx.size), "n_subjects": len(everyone),
                            "n_inner_val_subjects": len(fold.val_subjects)}


def refit_checkpoint(cfg: PipelineConfig) -> Path:
    """Where the export stage keeps the model it refit on every subject (for ``usssl export RUN_DIR``)."""
    return Path(cfg.output_dir) / "export-refit" / "classifier.pt"


def run(cfg: PipelineConfig, xcfg: ExportConfig, tracker, resume: bool) -> dict:
    """Export the chosen classifier (+ saliency model) to ``<output_dir>/export``."""
    from usssl.downstream.checkpoint import load_classifier, save_classifier

    recipe = choose_recipe(cfg, xcfg)
    if xcfg.model == "best" and xcfg.refit:
        model, enc_cfg, refit = refit_on_all_subjects(cfg, recipe, tracker, resume)
        trained_on = {"refit": "every subject", **refit}
        if not is_main_process():  # the other ranks only helped train
            return {}
        save_classifier(refit_checkpoint(cfg), model, enc_cfg, Cache(cfg.cache_dir).classes, tag="export-refit",
                        trained_on=trained_on, **{k: recipe[k] for k in KEYS})  # fmt: skip
    else:
        model, trained_on = load_classifier(recipe["path"]), {"refit": f"no: the fitted model {recipe['tag']}"}
    out = write_export(cfg, xcfg, recipe, model, trained_on, Path(cfg.output_dir) / "export", tracker)
    return {"model": recipe["tag"], "recipe": {k: recipe[k] for k in KEYS}, "saliency": (out / SALIENCY_FILE).is_file(),
            "export_dir": str(out), "refit": xcfg.model == "best" and xcfg.refit}


def write_export(cfg: PipelineConfig, xcfg: ExportConfig, recipe: dict, model: nn.Module, trained_on: dict,
                 out: Path, tracker) -> Path:  # fmt: skip
    """``model`` (+ the saliency model of its init) as an export folder ``out`` with its provenance; with
    tracking, its files as artifacts of the active run and both networks as MLflow models."""
    from usssl.downstream.checkpoint import load_saliency_model
    from usssl.downstream.export import SPEC_FILE, PreprocessingSpec, export_model, example_input
    from usssl.engine.mlflow_models import log_torch_model

    estimate = cv_estimate(cfg, recipe)
    saliency, clip = None, None
    candidates = sorted((Path(cfg.output_dir) / "saliency" / recipe["init"]).rglob("saliency_model.pt"))
    if xcfg.saliency and candidates:
        saliency, saved = load_saliency_model(candidates[0])
        clip = saved["clip_frames"]
    clip_frames = recipe.get("clip_frames", 1)  # the clip the classifier's encoder reads, centred on the frame
    spec = PreprocessingSpec.from_training(Cache(cfg.cache_dir).settings, recipe, pipeline=cfg.name,
                                           clip_frames=clip_frames)
    spec.clip_anchor = "centre" if clip_frames > 1 else spec.clip_anchor
    spec.saliency_clip_frames = clip
    spec.provenance |= {"selection": recipe["selection"], "cross_validated_estimate": estimate,
                        "trained_on": trained_on,
                        "saliency_model": str(candidates[0].relative_to(cfg.output_dir)) if saliency else None}
    out = export_model(model, out, spec, saliency=saliency)
    for name in sorted(p.name for p in out.iterdir()):
        tracker.log_artifact(out / name, "export")
    params = {k: recipe[k] for k in KEYS} | {"refit": trained_on["refit"]}
    log_torch_model(tracker, model, "plane_classifier", example_input(spec, "planes"), [out / SPEC_FILE], params)
    if saliency is not None:
        log_torch_model(tracker, saliency, "saliency_model", example_input(spec, "saliency"), [out / SPEC_FILE],
                        params)
    log.info("exported %s (%s) to %s (usssl predict %s INPUT...)", "-".join(str(recipe[k]) for k in KEYS),
             trained_on["refit"], out, out)
    return out


def reexport(run_dir: str | Path, model: str | None = None, out: str | Path | None = None) -> dict:
    """Export again a model a finished run trained, without training: the run's own choice (its refit
    model when the export stage refit one, else its chosen fitted model) or the fitted model ``model``
    (a tag of ``finetune/manifest.json``). Reads the run's ``config.yaml``; writes ``out`` (default
    ``RUN_DIR/export``, or ``RUN_DIR/export-<model>``); logs nothing to MLflow.

    Raises:
        ConfigError: no config.yaml or manifest in ``run_dir``, an unknown model tag, or a refit model
            the run did not keep.
    """
    from usssl.config import load_config
    from usssl.downstream.checkpoint import load_classifier
    from usssl.engine.tracking import Tracker
    from usssl.stages.common import RUN_CONFIG_FILE

    root = Path(run_dir)
    if not (root / RUN_CONFIG_FILE).is_file() or not (root / "finetune" / "manifest.json").is_file():
        raise ConfigError(f"usssl export: {root} has no {RUN_CONFIG_FILE} and finetune/manifest.json; give the "
                          "output_dir of a finished `usssl run` (a run from before usssl wrote config.yaml: run "
                          "`usssl run PIPELINE --resume` once, which writes it and skips the finished stages)")
    cfg = load_config(root / RUN_CONFIG_FILE)
    from usssl.config import REDACTED

    data = cfg.data  # config.yaml has its paths redacted (they can name patients): the run's own cache/
    if data.cache_dir is not None and REDACTED in str(data.cache_dir):
        data = data.model_copy(update={"cache_dir": None})
    cfg = cfg.model_copy(update={"output_dir": str(root), "data": data,
                                 "tracking": cfg.tracking.model_copy(update={"enabled": False})})
    xcfg = cfg.stage("export") or ExportConfig()
    if model:
        xcfg = xcfg.model_copy(update={"model": model})
    recipe = choose_recipe(cfg, xcfg)
    recipe["path"] = str(root / "finetune" / Path(recipe["path"]).name)  # the run may have been moved
    if xcfg.model == "best" and xcfg.refit:
        path = refit_checkpoint(cfg)
        if not path.is_file():
            raise ConfigError(f"usssl export: {root} exported a model refit on every subject and did not keep it "
                              f"({path} is missing); give --model TAG to export a fitted model, or rerun the "
                              "export stage")
        import torch

        trained_on = torch.load(path, map_location="cpu", weights_only=False).get("trained_on", {"refit": "every subject"})
        classifier = load_classifier(path)
    else:
        classifier, trained_on = load_classifier(recipe["path"]), {"refit": f"no: the fitted model {recipe['tag']}"}
    target = Path(out) if out else root / ("export" if not model else f"export-{model}")
    written = write_export(cfg, xcfg, recipe, classifier, trained_on, target, Tracker(cfg))
    return {"model": recipe["tag"] if xcfg.model != "best" or not xcfg.refit else "refit on every subject",
            "recipe": {k: recipe[k] for k in KEYS}, "export_dir": str(written),
            "saliency": (written / SALIENCY_FILE).is_file()}

"""Run the stages of a pipeline: ingest → pretrain → finetune → evaluate, tracked in MLflow.

This module owns the stage order, the done markers and resume; each stage's body is its module in
``usssl.stages`` (the stage table ``usssl.stages.STAGES``), and nothing here branches on a method.

Stages talk only through files under ``output_dir`` (the cache, ``pretrain/encoder.pt``,
``finetune/*.pt``, ``evaluate/``), so each can be re-run or resumed on its own. A finished stage
writes ``stages/<i>-<kind>.done.json``; ``resume=True`` skips finished stages and continues an
unfinished training stage from its last checkpoint. ``config.yaml`` in ``output_dir`` is the resolved
config the run used (defaults filled in, every path redacted: paths can name patients; ``usssl export RUN_DIR`` reads it).

One MLflow parent run covers the pipeline and each stage is a nested run (``usssl.engine.tracking``);
when the stages are done the parent run gets the cache as its dataset input, the evaluate stage's
headline metrics, and the report as its description (docs/mlflow.md).

    >>> result = run_pipeline(load_config("pipelines/demo.yaml"))
    >>> print(result["report"])
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from usssl.config import PipelineConfig, to_yaml
from usssl.engine.files import write_json_atomic, write_text_atomic
from usssl.engine.tracking import Tracker
from usssl.stages import TRAINING_STAGES, stage_runner
from usssl.stages.common import RUN_CONFIG_FILE

log = logging.getLogger(__name__)

RUN_LOCK = ".usssl-run.lock"  # in output_dir while a run writes there (usssl.engine.lock)


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

    One run writes into an output folder at a time: the main process holds ``RUN_LOCK`` there, and
    a second run stops with a ``LockError`` naming the first (pid, host, start time).
    """
    from usssl.engine.distributed import is_main_process
    from usssl.engine.lock import folder_lock

    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    with folder_lock(Path(cfg.output_dir) / RUN_LOCK, "usssl run", enabled=is_main_process()):
        return _run_stages(cfg, resume)


def _run_stages(cfg: PipelineConfig, resume: bool) -> dict[str, Any]:
    from usssl.engine.distributed import is_main_process, launched_together

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    main = is_main_process()
    started = None if resume or not launched_together() else time.time() - 2.0
    if main:
        write_text_atomic(out / RUN_CONFIG_FILE, to_yaml(cfg, redact=True))  # paths can name patients
    tracker = Tracker(cfg)
    results: dict[str, Any] = {"tracking_uri": tracker.uri, "output_dir": str(out.resolve()),
                               "experiment": tracker.experiment, "runs_url": tracker.runs_url}
    t0 = time.time()
    with tracker.pipeline_run():
        for i, entry in enumerate(cfg.stages):
            done = out / "stages" / f"{i}-{entry.kind}.done.json"
            if not main:
                if entry.kind in TRAINING_STAGES:
                    for j, earlier in enumerate(cfg.stages[:i]):
                        _wait_for_stage(out / "stages" / f"{j}-{earlier.kind}.done.json", started)
                    stage_runner(entry.kind)(cfg, entry.body, tracker, resume)
                continue
            if resume and done.is_file():
                log.info("stage %d (%s) already finished; skipping (--resume)", i, entry.kind)
                results[entry.kind] = json.loads(done.read_text())
                continue
            done.unlink(missing_ok=True)
            log.info("stage %d: %s", i, entry.kind)
            start = time.time()
            with tracker.stage(entry.kind):
                summary = stage_runner(entry.kind)(cfg, entry.body, tracker, resume)
                tracker.log_metrics({"stage_seconds": time.time() - start})
            summary["seconds"] = round(time.time() - start, 1)
            write_json_atomic(done, summary, newline=False, default=str)
            results[entry.kind] = summary
        reports = [results[k].get("report") for k in ("evaluate", "saliency") if k in results]
        if any(reports):
            results["report"] = "\n".join(r for r in reports if r)
        if main:
            _summarise_in_parent_run(cfg, tracker, results, time.time() - t0)
    results["seconds"] = round(time.time() - t0, 1)
    return results


def _summarise_in_parent_run(cfg: PipelineConfig, tracker: Tracker, results: dict, seconds: float) -> None:
    """The pipeline run's headline metrics, description (headline + report) and dataset input."""
    headline = dict(results.get("evaluate", {}).get("headline") or {})
    tracker.log_metrics({**headline, "pipeline_seconds": seconds})
    lines = [f"**{cfg.name}**: " + " → ".join(e.kind for e in cfg.stages)]
    if headline:
        lines += ["", "Macro F1 (%, cross-validated, largest label fraction; intervals in the evaluate run's "
                  "configuration runs):", ""] + [f"- {k.split('/', 1)[1]}: {v:.1f}" for k, v in headline.items()]
    tracker.set_description("\n".join(lines) + ("\n\n" + results["report"] if results.get("report") else ""))
    if not tracker.enabled:
        return
    from usssl.data.cache import DATA_CARD_FILE, Cache
    from usssl.errors import DataError

    try:
        cache = Cache(cfg.cache_dir)
        digest, index = cache.digest(), cache.index
    except (DataError, OSError):  # no finished cache (a pipeline without data stages)
        return
    card = cache.root / DATA_CARD_FILE
    profile = {"recordings": len(index), "subjects": int(index["subject"].nunique()),
               "frames": int(index["n_frames"].sum()), "classes": cache.classes,
               **{f"{k}_subjects": len(v) for k, v in cache.splits.items()}}
    tracker.log_dataset(f"{cfg.name}-cache", digest, profile, card.read_text() if card.is_file() else None)
    tracker.set_tags({"dataset_digest": digest})

"""Pipeline stages: one module per stage kind, each with ``run(cfg, stage_cfg, tracker, resume) -> dict``.

A stage reads its config, calls library code (``usssl.data``, ``usssl.methods``,
``usssl.downstream``) and writes under ``output_dir``; it is the only place that knows the output
layout. ``STAGES`` maps a stage kind to its module (imported when the stage runs, so the CLI stays
light). Adding a stage: ``usssl/stages/<kind>.py`` with ``run``, its settings class in
``usssl/config/stages.py`` (a field of ``StageEntry``), and one line here.

    >>> stage_runner("evaluate")(cfg, cfg.stage("evaluate"), tracker, resume=False)["report"]
"""

from __future__ import annotations

import importlib
from typing import Callable

STAGES: dict[str, str] = {
    "ingest": "usssl.stages.ingest",
    "pretrain": "usssl.stages.pretrain",
    "finetune": "usssl.stages.finetune",
    "evaluate": "usssl.stages.evaluate",
    "saliency": "usssl.stages.saliency",
    "localise": "usssl.stages.localise",
    "export": "usssl.stages.export",
    "compare": "usssl.stages.compare",
    "retrieval": "usssl.stages.retrieval",
}
TRAINING_STAGES = ("pretrain", "finetune", "export")  # stages every rank joins under multi-process training
# (export re-runs the chosen recipe on every subject: its pretraining and fine-tuning train on all ranks)


def stage_runner(kind: str) -> Callable[..., dict]:
    """The ``run`` function of stage ``kind``."""
    return importlib.import_module(STAGES[kind]).run


__all__ = ["STAGES", "TRAINING_STAGES", "stage_runner"]

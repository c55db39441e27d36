"""The whole pipeline file: global sections and the ordered list of stages.

The schema is built by :func:`build_schema` from ``PretrainConfig`` (itself built from the method
settings registry), so a newly registered method's settings are part of the one static schema
that ``usssl validate --schema`` prints.
"""

import os
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from usssl.config.base import PATH, SEED_MAX, Strict
from usssl.config.compare import compare_config
from usssl.config.sections import DataConfig, EncoderConfig, TrackingConfig, TrainerConfig  # noqa: F401
from usssl.config.stages import (EvaluateConfig, ExportConfig, FinetuneConfig, IngestConfig, LocaliseConfig,
                                 PretrainBase, PretrainConfig, RetrievalConfig, SaliencyConfig)

STAGE_NAMES = ("ingest", "pretrain", "finetune", "evaluate", "saliency", "localise", "export", "retrieval",
               "compare")
REPEATABLE_STAGES = ("pretrain",)
"""Stage kinds that may appear more than once (each pretrain stage with its own ``name``); a second
stage of any other kind would overwrite the first one's outputs, so it is an error."""


def build_schema(pretrain_config: type[PretrainBase]) -> tuple[type[Strict], type[Strict]]:
    """(StageEntry, PipelineConfig) classes whose pretrain stage is validated by ``pretrain_config``."""

    compare_cls = compare_config(pretrain_config)

    class StageEntry(Strict):
        """One ``- <stage>: {...}`` item of ``stages``; exactly one key is set."""

        ingest: IngestConfig | None = None
        pretrain: pretrain_config | None = None
        finetune: FinetuneConfig | None = None
        evaluate: EvaluateConfig | None = None
        saliency: SaliencyConfig | None = None
        localise: LocaliseConfig | None = None
        export: ExportConfig | None = None
        compare: compare_cls | None = None
        retrieval: RetrievalConfig | None = None

        @model_validator(mode="before")
        @classmethod
        def _one_key(cls, value: Any) -> Any:
            if isinstance(value, str) and value in STAGE_NAMES:
                return {value: {}}
            if isinstance(value, dict):
                if len(value) != 1:
                    raise ValueError(f"each stage is one of {', '.join(STAGE_NAMES)}, got {sorted(value)}")
                key, body = next(iter(value.items()))
                return {key: {} if body is None else body}
            return value

        @property
        def kind(self) -> str:
            return next(name for name in STAGE_NAMES if getattr(self, name) is not None)

        @property
        def body(self) -> Strict:
            return getattr(self, self.kind)


    class PipelineConfig(Strict):
        """A whole pipeline: global settings and an ordered list of stages."""

        name: str = Field("pipeline", description="the MLflow run name of the pipeline")
        output_dir: str = Field("runs/pipeline", description="everything the pipeline writes goes here (a "
                                "relative path is read from the working directory)", json_schema_extra=PATH)
        seed: int = Field(0, ge=0, le=SEED_MAX,
                          description="seeds every random draw (data, models, splits of training); 0 … 2**32 − 1")
        seeds: list[int] | None = Field(
            None, description="run the whole protocol (pretraining, transfer, saliency) once per seed; the folds "
            "and validation subjects stay those of `seed`; null: [seed]")
        data: DataConfig = Field(default_factory=DataConfig)
        tracking: TrackingConfig = Field(default_factory=TrackingConfig)
        trainer: TrainerConfig = Field(default_factory=TrainerConfig)
        stages: list[StageEntry] = Field(default_factory=list)

        @property
        def run_seeds(self) -> list[int]:
            """The seeds the protocol runs with: ``seeds``, else ``[seed]``."""
            return list(self.seeds) if self.seeds else [self.seed]

        def stage(self, kind: str) -> Any:
            """The first stage of ``kind`` or None."""
            for entry in self.stages:
                if entry.kind == kind:
                    return entry.body
            return None

        def pretrain_names(self) -> list[str]:
            """The encoder name of each pretrain stage, in order (``name`` or the method)."""
            return [e.body.name or e.body.method for e in self.stages if e.kind == "pretrain"]

        def pretrain_dir(self, name: str) -> Path:
            """Where the pretrain stage ``name`` writes: ``pretrain`` for the first, ``pretrain-<name>`` after."""
            names = self.pretrain_names()
            return Path(self.output_dir) / ("pretrain" if names and names[0] == name else f"pretrain-{name}")

        @model_validator(mode="after")
        def _stages_fit_together(self) -> "PipelineConfig":
            kinds = [e.kind for e in self.stages]
            for kind in STAGE_NAMES:
                where = [f"stages[{i}]" for i, k in enumerate(kinds) if k == kind]
                if len(where) > 1 and kind not in REPEATABLE_STAGES:
                    inits = " (its inits can list every encoder)" if kind in ("finetune", "saliency") else ""
                    raise ValueError(f"{' and '.join(where)}: {len(where)} '{kind}' stages; a second one would "
                                     f"overwrite the first one's outputs: keep one{inits}; only pretrain stages may "
                                     "repeat, each with its own name")
            names = self.pretrain_names()
            if len(set(names)) != len(names):
                raise ValueError(f"stages: pretrain stages need distinct names (got {names}); set pretrain.name")
            fine = self.stage("finetune")
            known = {"random", "pretrain", *names}
            for kind, body in (("finetune", fine), ("saliency", self.stage("saliency")),
                               ("localise", self.stage("localise")),
                               ("retrieval", self.stage("retrieval"))):
                allowed = known | {"supervised"} if kind == "finetune" else known
                for init in body.inits if body is not None else []:
                    if init not in allowed:
                        raise ValueError(f"{kind}.inits: unknown init {init!r}; choose from {sorted(allowed)}")
            for e in self.stages:
                fold = e.body.exclude_fold if e.kind == "pretrain" else None
                if fold is not None and (fine is None or fine.cv != "kfold" or fold >= fine.folds):
                    raise ValueError(f"pretrain.exclude_fold: {fold} needs a finetune stage with cv: kfold and "
                                     f"more than {fold} folds")
                if fold is not None and not e.body.shared and fine.run_folds != [fold]:
                    raise ValueError(f"pretrain.exclude_fold: {fold} pretrains once on the other folds' subjects, "
                                     "whose test subjects the other folds then score: a leak. Leave exclude_fold "
                                     "unset (pretraining runs per fold), set finetune.run_folds: "
                                     f"[{fold}], or set pretrain.shared: true (tables then say 'transductive')")
            if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
                raise ValueError(f"seeds: give distinct seeds, e.g. [0, 1, 2] (got {self.seeds})")
            return self

        @property
        def cache_dir(self) -> Path:
            return Path(self.data.cache_dir) if self.data.cache_dir else Path(self.output_dir) / "cache"

        @property
        def tracking_uri(self) -> str:
            env = os.environ.get("MLFLOW_TRACKING_URI")
            if env:
                return env
            if self.tracking.uri:
                return self.tracking.uri
            return f"sqlite:///{Path(self.output_dir).resolve() / 'mlflow.db'}"

    return StageEntry, PipelineConfig


StageEntry, PipelineConfig = build_schema(PretrainConfig)

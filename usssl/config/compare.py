"""The settings of ``usssl compare`` (and the ``compare`` stage): every encoder × every end task.

An **encoder** entry is exactly one of

- ``random: {encoder settings}``: a randomly initialised encoder (seeded per fold and seed);
- ``recipe: {pretrain settings}``: a pretrain stage's settings, run per fold on that fold's training
  and validation subjects of each task's data (strictly inductive; finished runs are reused);
- ``supervised: {encoder settings}``: the supervised reference, fine-tuned from random init on each
  fold's training labels of the task (an upper reference, not a self-supervised encoder);
- ``checkpoint: FILE``: a fixed encoder, a usssl ``encoder.pt``, or a foreign state dict (e.g.
  torchvision-format weights) with ``architecture:`` and a ``key_map`` of key prefixes. It is marked
  "not fold-aware" unless ``fold_aware: true`` says it never saw the task's subjects.

A **task** names an ingested cache and what to predict from frozen features: ``classification``
(the cache's labels; per recording when they came one per recording) or ``frame_gap`` (a structural
task whose labels come free from time: which of ``gaps`` separates two frames of one scan).

    >>> CompareConfig.model_validate({"encoders": [{"name": "random", "random": {}}],
    ...                               "tasks": [{"name": "planes", "cache": "runs/demo/cache"}]})
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from usssl.config.base import PATH, Strict
from usssl.config.sections import EncoderConfig, OptimizerConfig

NAME = r"^[A-Za-z0-9_.-]+$"


class CompareTask(Strict):
    """One end task: its data, its head and how the head is chosen (on validation subjects)."""

    name: str = Field(pattern=NAME, description="the task's column in the table")
    cache: str = Field(description="an ingested cache folder (usssl ingest / a pipeline's cache)",
                       json_schema_extra=PATH)
    kind: Literal["classification", "frame_gap"] = Field(
        "classification", description="classification: the cache's labels; frame_gap: which of `gaps` separates "
        "two frames of one scan (labels free from time)")
    level: Literal["auto", "frame", "recording"] = Field(
        "auto", description="classification: score frames or recordings (auto: recording when the labels came one "
        "per recording)")
    frame_stride: int = Field(2, ge=1, le=1000, description="every n-th cached frame")
    gaps: list[int] = Field(default_factory=lambda: [1, 4, 16], description="frame_gap: the gap classes (frames)")
    pairs_per_recording: int = Field(32, ge=1, le=10_000, description="frame_gap: frame pairs per recording")
    lr_grid: list[float] = Field(default_factory=lambda: [0.003, 0.01, 0.03],
                                 description="head learning rates; the one with the best validation F1 is used")
    epochs: int = Field(100, ge=1, le=10_000, description="head epochs (full batch); the best epoch on validation "
                        "is kept")
    eval_every: int = Field(10, ge=1, description="validate the head every n epochs")
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(name="adam", weight_decay=1e-4,
                                                                               scheduler="cosine"))
    batch_size: int = Field(128, ge=1, le=65_536, description="frames per batch when encoding features")

    @field_validator("gaps")
    @classmethod
    def _gaps(cls, gaps: list[int]) -> list[int]:
        if len(gaps) < 2 or len(set(gaps)) != len(gaps) or min(gaps) < 1:
            raise ValueError(f"give at least two different gaps of 1 frame or more, got {gaps}")
        return sorted(gaps)

    @field_validator("lr_grid")
    @classmethod
    def _lrs(cls, lrs: list[float]) -> list[float]:
        if not lrs or min(lrs) <= 0:
            raise ValueError(f"give one or more positive learning rates, got {lrs}")
        return lrs


def compare_config(pretrain_config: type[Strict]) -> type[Strict]:
    """The ``CompareConfig`` class whose recipes are validated by ``pretrain_config``."""

    class CompareEncoder(Strict):
        """One encoder row of the table (module docstring: exactly one source)."""

        name: str = Field(pattern=NAME, description="the encoder's row in the table")
        random: EncoderConfig | None = Field(None, description="a random initialisation of this architecture")
        recipe: pretrain_config | None = Field(None, description="pretrain settings, run per fold (inductive)")
        supervised: EncoderConfig | None = Field(None, description="the supervised reference of this architecture")
        checkpoint: str | None = Field(None, description="a fixed encoder file", json_schema_extra=PATH)
        architecture: EncoderConfig | None = Field(None, description="checkpoint: the architecture of a foreign "
                                                   "state dict (a usssl encoder.pt carries its own)")
        key_map: dict[str, str] = Field(default_factory=dict, description="checkpoint: key prefix renames, e.g. "
                                        "{'': 'net.'} or {'module.': ''}, applied before strict loading")
        fold_aware: bool = Field(False, description="checkpoint: true only when it never saw the task's subjects")
        only_tasks: list[str] | None = Field(None, description="run on these tasks only (e.g. a speech method "
                                             "where the data has narration); null: every task")

        @model_validator(mode="after")
        def _one_source(self) -> "CompareEncoder":
            given = [k for k in ("random", "recipe", "supervised", "checkpoint") if getattr(self, k) is not None]
            if len(given) != 1:
                raise ValueError(f"encoder '{self.name}': give exactly one of random, recipe, supervised, "
                                 f"checkpoint (got {given or 'none'})")
            if (self.key_map or self.architecture) and self.checkpoint is None:
                raise ValueError(f"encoder '{self.name}': key_map and architecture belong to a checkpoint entry")
            return self

        @property
        def source(self) -> str:
            return next(k for k in ("random", "recipe", "supervised", "checkpoint") if getattr(self, k) is not None)

    class CompareConfig(Strict):
        """Every encoder × every task: frozen features, heads chosen on validation, test scored once."""

        encoders: list[CompareEncoder] = Field(min_length=1)
        tasks: list[CompareTask] = Field(min_length=1)
        folds: int = Field(3, ge=2, le=100, description="subject-level k folds of every task")
        val_fraction: float = Field(0.25, gt=0, lt=1, description="of each fold's training subjects: validation")
        bootstrap: int = Field(1000, ge=0, le=100_000, description="subject bootstrap replicates for 95% intervals")

        @model_validator(mode="after")
        def _unique(self) -> "CompareConfig":
            for what, items in (("encoder", self.encoders), ("task", self.tasks)):
                names = [i.name for i in items]
                twice = sorted({n for n in names if names.count(n) > 1})
                if twice:
                    raise ValueError(f"{what} names must be unique: {twice} appear twice")
            tasks = {t.name for t in self.tasks}
            for entry in self.encoders:
                unknown = sorted(set(entry.only_tasks or ()) - tasks)
                if unknown:
                    raise ValueError(f"encoder '{entry.name}': only_tasks names no task {unknown}; tasks: {sorted(tasks)}")
            return self

    return CompareConfig

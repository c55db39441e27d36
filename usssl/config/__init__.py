"""Pipeline configuration: a leaf package (it imports nothing of usssl but ``usssl.errors``).

- ``base``: ``Strict``, the base of every section (unknown keys are errors);
- ``sections``: data, tracking, trainer, optimizer, encoder;
- ``methods``: one settings class per self-supervised method and ``METHOD_SETTINGS``;
- ``stages``: the settings of each stage (``PretrainConfig`` is built from ``METHOD_SETTINGS``);
- ``pipeline``: ``StageEntry`` and ``PipelineConfig``;
- ``loading``: YAML loading, ``--set`` overrides, readable errors, ``to_yaml``, ``flatten`` and the
  reference generator.

    >>> cfg = load_config("pipelines/demo.yaml", ["pretrain.max_epochs=2"])
    >>> cfg.stage("pretrain").method
    'video_speech'
"""

from __future__ import annotations

from usssl.config import pipeline as _pipeline
from usssl.config import stages as _stages
from usssl.config.base import PATH, Strict
from usssl.config.loading import (REDACTED, apply_override, dump, flatten, format_validation_error, load_config,
                                  reference_markdown, to_yaml)
from usssl.config.methods import (METHOD_SETTINGS, CVRLConfig, OrderTransformConfig, SpeechConfig,
                                  VideoSpeechConfig)
from usssl.config.pipeline import STAGE_NAMES, PipelineConfig, StageEntry
from usssl.config.sections import (DataConfig, EncoderConfig, OptimizerConfig, SynthConfig, TrackingConfig,
                                   TrainerConfig)
from usssl.config.stages import (EvaluateConfig, ExportConfig, FinetuneConfig, IngestConfig, PretrainBase,
                                 PretrainConfig, SaliencyConfig, SplitConfig, build_pretrain_config)


def register_method_settings(name: str, settings: type[Strict] | None) -> None:
    """Add (or, with ``settings=None``, remove) a method's settings class and rebuild the schema.

    The built-in methods are listed in ``usssl/config/methods.py``; this is for a method kept outside
    the package (and for the registry test). Call it before loading a config that uses the method.
    """
    global PretrainConfig, StageEntry, PipelineConfig
    if settings is None:
        METHOD_SETTINGS.pop(name, None)
    else:
        METHOD_SETTINGS[name] = settings
    PretrainConfig = _stages.PretrainConfig = build_pretrain_config()
    StageEntry, PipelineConfig = _pipeline.StageEntry, _pipeline.PipelineConfig = _pipeline.build_schema(PretrainConfig)


__all__ = ["Strict", "load_config", "apply_override", "flatten", "format_validation_error", "reference_markdown",
           "to_yaml", "dump", "REDACTED", "PATH", "METHOD_SETTINGS", "CVRLConfig", "OrderTransformConfig",
           "SpeechConfig", "VideoSpeechConfig",
           "STAGE_NAMES", "PipelineConfig", "StageEntry", "DataConfig", "EncoderConfig", "OptimizerConfig",
           "SynthConfig", "TrackingConfig", "TrainerConfig", "EvaluateConfig", "ExportConfig", "FinetuneConfig",
           "IngestConfig", "PretrainBase", "PretrainConfig", "SaliencyConfig", "SplitConfig", "build_pretrain_config",
           "register_method_settings"]

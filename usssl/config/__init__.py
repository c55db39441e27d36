"""Pipeline configuration: a leaf package (it imports nothing of usssl but ``usssl.errors``).

- ``base``: ``Strict``, the base of every section (unknown keys are errors);
- ``sections``: data, tracking, trainer, optimizer, encoder;
- ``methods``: one settings class per self-supervised method and ``METHOD_SETTINGS``;
- ``stages``: the settings of each stage (``PretrainConfig`` is built from ``METHOD_SETTINGS``);
- ``pipeline``: ``StageEntry`` and ``PipelineConfig``;
- ``loading``: YAML loading, ``--set`` overrides, readable errors, ``to_yaml``, ``flatten`` and the
  reference generator; ``strict_yaml``: the file read strictly (repeated keys, alias bombs, binary
  files and syntax errors are one-line errors);
- ``preflight``: input paths, output folders and disk-full messages, checked before a run writes
  anything; ``machine``: the accelerator and devices, checked when a run starts (torch imported there
  only).

    >>> cfg = load_config("pipelines/demo.yaml", ["pretrain.max_epochs=2"])
    >>> cfg.stage("pretrain").method
    'video_speech'
"""

from __future__ import annotations

from usssl.config import pipeline as _pipeline
from usssl.config import stages as _stages
from usssl.config.base import MAX_BATCH, MAX_EPOCHS, MAX_PER_EPOCH, MAX_PIXELS, MAX_STEPS, PATH, SEED_MAX, Strict
from usssl.config.loading import (REDACTED, apply_override, dump, flatten, format_validation_error, load_config,
                                  reference_markdown, to_yaml)
from usssl.config.machine import check_machine
from usssl.config.methods import (METHOD_SETTINGS, CVRLConfig, FrameContrastiveConfig, OrderTransformConfig,
                                  SpeechConfig, TCGLConfig, VideoSpeechConfig)
from usssl.config.pipeline import REPEATABLE_STAGES, STAGE_NAMES, PipelineConfig, StageEntry
from usssl.config.preflight import (InputPath, absolute, check_inputs, check_output_dir, check_outputs, check_paths,
                                    input_paths, os_error_message, output_folders)
from usssl.config.sections import (DataConfig, EncoderConfig, OptimizerConfig, SynthConfig, TrackingConfig,
                                   TrainerConfig)
from usssl.config.stages import (EvaluateConfig, ExportConfig, FinetuneConfig, IngestConfig, LocaliseConfig,
                                 PretrainBase, PretrainConfig, RetrievalConfig, SaliencyConfig, SplitConfig,
                                 build_pretrain_config)
from usssl.config.strict_yaml import parse_yaml, read_yaml_file


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
           "SpeechConfig", "TCGLConfig", "VideoSpeechConfig",
           "STAGE_NAMES", "PipelineConfig", "StageEntry", "DataConfig", "EncoderConfig", "OptimizerConfig",
           "SynthConfig", "TrackingConfig", "TrainerConfig", "EvaluateConfig", "ExportConfig", "FinetuneConfig",
           "IngestConfig", "PretrainBase", "PretrainConfig", "RetrievalConfig", "SaliencyConfig", "SplitConfig",
           "build_pretrain_config",
           "register_method_settings", "REPEATABLE_STAGES", "SEED_MAX", "MAX_EPOCHS", "MAX_STEPS", "MAX_BATCH",
           "MAX_PER_EPOCH", "MAX_PIXELS", "parse_yaml", "read_yaml_file", "InputPath", "absolute", "input_paths",
           "check_inputs", "check_paths", "output_folders", "check_outputs", "check_output_dir", "os_error_message",
           "check_machine", "FrameContrastiveConfig", "LocaliseConfig"]

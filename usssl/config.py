"""Pipeline YAML → validated pydantic models, with errors a clinician can act on.

A pipeline file has a few global sections (``name``, ``output_dir``, ``seed``, ``data``,
``tracking``, ``trainer``) and a list of ``stages``, each a one-key mapping
(``- ingest: {...}``, ``- pretrain: {...}``, ``- finetune: {...}``, ``- evaluate: {...}``).
Every model forbids unknown keys, so a typo is an error that names its key path and suggests the
closest valid key::

    pipelines/demo.yaml: stages[1].pretrain.optimiser: unknown key (did you mean 'optimizer'?)

Overrides from the command line (``--set pretrain.max_epochs=2``) are applied to the raw YAML
before validation, so they are checked exactly like the file.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from usssl.config_base import Strict
from usssl.errors import ConfigError
from usssl.methods.configs import CVRLConfig, OrderTransformConfig

STAGE_NAMES = ("ingest", "pretrain", "finetune", "evaluate", "saliency", "export")


# ----------------------------------------------------------------------------- data
class SynthConfig(Strict):
    """The built-in synthetic corpus, generated when ``data.sources`` is empty."""

    subjects: int = Field(12, ge=3, description="number of synthetic subjects (one scan each)")
    seed: int = 0
    duration_s: float = Field(40.0, gt=1.0, description="length of each scan in seconds")
    voice: Literal["builtin", "espeak"] = "builtin"
    size: tuple[int, int] = (160, 160)


class DataConfig(Strict):
    """Where the recordings come from and where the cache goes."""

    sources: list[str] = Field(default_factory=list, description="folders or files to ingest")
    synth: SynthConfig = Field(default_factory=SynthConfig)
    cache_dir: str | None = Field(None, description="default: <output_dir>/cache")
    labels_csv: str | None = Field(None, description="per-frame labels: video, frame, plane")
    gaze_csv: str | None = Field(None, description="gaze: video, frame, x, y (pixels)")
    subjects_csv: str | None = Field(None, description="video → patient_id (hashed on ingest)")


class TrackingConfig(Strict):
    """MLflow tracking. ``uri`` null means ``sqlite:///<output_dir>/mlflow.db``;
    the environment variable ``MLFLOW_TRACKING_URI`` overrides both."""

    uri: str | None = None
    experiment: str = "usssl"
    enabled: bool = True
    log_checkpoints: bool = True


class TrainerConfig(Strict):
    """Lightning Trainer settings shared by every training stage."""

    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "cpu"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: Literal["32-true", "32", "bf16-mixed", "16-mixed", "bf16-true"] = "32-true"
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    log_every_n_steps: int = Field(5, ge=1)
    deterministic: bool = False
    gradient_clip_val: float | None = 5.0
    progress: bool = True


# ----------------------------------------------------------------------------- stages
class SplitConfig(Strict):
    """Subject-level split fractions (never by frame or clip)."""

    val: float = Field(0.0, ge=0.0, lt=1.0)
    test: float = Field(0.34, gt=0.0, lt=1.0)
    seed: int = 0


class IngestConfig(Strict):
    """Read recordings, crop to the imaging region, resample, and write the cache."""

    size: tuple[int, int] = Field((64, 64), description="cached frame height, width in pixels")
    fps: float | None = Field(15.0, gt=0, description="cached frame rate; null keeps the source rate")
    audio: bool = Field(True, description="keep the narration (false drops it: it may contain names)")
    audio_rate: int = Field(16000, ge=8000)
    crop: Literal["auto", "none"] | tuple[int, int, int, int] = Field(
        "auto", description="'auto' (ultrasound regions or motion), 'none', or [x0, y0, x1, y1]"
    )
    drop_frozen: bool = Field(False, description="drop frozen/duplicate frames (always flagged in flags.npy bit 0)")
    drop_doppler: bool = Field(False, description="drop colour-Doppler frames (always flagged in flags.npy bit 1)")
    split: SplitConfig = Field(default_factory=SplitConfig)
    workers: int = Field(2, ge=1)
    overwrite: bool = False


class OptimizerConfig(Strict):
    """The optimizer of a training stage (``momentum`` is used by SGD only)."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["none", "step", "multistep", "cosine"] = Field("none", description="per-epoch lr schedule")
    step_epochs: int = Field(20, ge=1, description="step: epochs between decays")
    milestones: list[int] = Field(default_factory=lambda: [20, 35], description="multistep: decay epochs")
    gamma: float = Field(0.1, gt=0, le=1, description="step/multistep: lr factor at each decay")
    cosine_epochs: int = Field(100, ge=1, description="cosine: epochs to anneal to 0")


class EncoderConfig(Strict):
    """A video encoder: ``(B, C, T, H, W) -> (B, D)``; 2-D encoders run per frame, averaged over time."""

    name: Literal["tiny2d", "se_resnext50", "se_resnext50_half", "resnet18", "resnet50", "tiny3d", "r3d_18",
                  "r2plus1d_18", "r3d_50"] = Field(
        "tiny2d", description="2-D per frame: tiny2d (tests, demo), se_resnext50(_half) (the ultrasound papers), "
        "resnet18/resnet50 (torchvision's architecture, no weights); "
        "3-D clip: tiny3d, r3d_18, r2plus1d_18, r3d_50 (CVRL)"
    )
    width: int = Field(16, ge=4, description="tiny2d/tiny3d: channels of the first block")
    dim: int = Field(64, ge=8, description="tiny2d/tiny3d: embedding size D (others: their own width)")
    dilate_last: int = Field(1, ge=0, le=2, description="SE-ResNeXt: last stages dilated instead of strided")


class SpeechConfig(Strict):
    """Speech windows and their encoder (a spectrogram CNN, or wav2vec2 / HuBERT from a local folder)."""

    encoder: Literal["tiny_spec", "se_resnext50", "se_resnext50_half", "wav2vec2", "hubert"] = "tiny_spec"
    pretrained_path: str | None = Field(None, description="wav2vec2/hubert: local save_pretrained folder")
    freeze: bool | int = Field(True, description="wav2vec2/hubert: true, false, or N top layers trainable")
    window_s: float = Field(0.6, gt=0, description="speech window length (paper: 0.6 s)")
    resample_to: int | None = Field(None, ge=8000, description="resample speech first (paper: 24000 Hz)")
    n_fft: int = Field(256, ge=32, description="FFT size (paper: 510 → 256 frequency bands)")
    hop_ms: float = Field(5.0, gt=0)
    win_ms: float = Field(10.0, gt=0)
    spec_size: tuple[int, int] = Field((64, 64), description="spectrogram resized to F x T'")
    interval_frames: int = Field(30, ge=1, description="frames per clip interval T (paper: 60 at 30 fps)")
    affinity_threshold: float = Field(0.5, ge=0, le=1, description="high affinity: speech fraction >=")
    pairs_per_interval: int = Field(2, ge=1, description="K pair groups per high-affinity interval (paper: 2)")
    hard_negative_range: int = Field(5, ge=2, description="D: hard negatives from intervals T+δ, 0<|δ|<D")


    @model_validator(mode="after")
    def _pretrained_needs_path(self) -> "SpeechConfig":
        if self.encoder in ("wav2vec2", "hubert") and not self.pretrained_path:
            raise ValueError(f"encoder '{self.encoder}' needs pretrained_path: a local folder saved with "
                             "save_pretrained (usssl never downloads weights)")
        return self


class VideoSpeechConfig(Strict):
    """The video–speech losses (Jiao et al., MICCAI 2020): L = α·L_cls + β·L_cont + γ·L_ord."""

    contrastive: Literal["infonce", "infonce_hard", "eq2_clamped"] = Field(
        "infonce_hard", description="infonce: symmetric CLIP-style; infonce_hard: + the hard negative in the "
        "denominator (safe Eq. 2); eq2_clamped: Eq. 2 with its numerator clamped")
    normalize: bool = Field(True, description="L2-normalise embeddings (the paper: raw dot products)")
    alpha: float = Field(1.0, ge=0, description="weight of L_cls, the 2-way correspondence classifier")
    beta: float = Field(1.0, ge=0, description="weight of L_cont")
    gamma: float = Field(1.0, ge=0, description="weight of L_ord, 4-frame order (12 classes) on all intervals")
    order_stride: int = Field(4, ge=1, description="cached frames between the 4 frames of the order clip")
    self_paced: Literal["gate", "spl_hard", "spl_linear"] = Field(
        "gate", description="gate: cross-modal terms on high-affinity pairs only (the paper); spl_*: also "
        "weight pairs by their loss against a growing pace (ours)")
    pace_start: float = Field(2.0, gt=0, description="spl: initial pace λ (loss units)")
    pace_growth: float = Field(1.3, ge=1, description="spl: λ multiplied by this every epoch")


class PretrainConfig(Strict):
    """Self-supervised pretraining on the training subjects only."""

    method: Literal["video_speech", "order_transform", "cvrl"] = Field(
        "video_speech", description="video_speech (Jiao MICCAI 2020), order_transform (Jiao ISBI 2020), cvrl (Qian CVPR 2021)"
    )
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    speech: SpeechConfig = Field(default_factory=SpeechConfig)
    temperature: float = Field(0.1, gt=0)
    projection_dim: int = Field(64, ge=8)
    max_epochs: int = Field(10, ge=1)
    max_steps: int = -1
    batch_size: int = Field(64, ge=2)
    pairs_per_epoch: int | None = Field(
        2048, ge=16, description="pairs drawn per epoch; null: K per high-affinity interval"
    )
    augment: bool = Field(True, description="temporally consistent flip/affine/gamma on the video")
    video_speech: VideoSpeechConfig = Field(default_factory=VideoSpeechConfig)
    order_transform: OrderTransformConfig = Field(default_factory=OrderTransformConfig)
    cvrl: CVRLConfig = Field(default_factory=CVRLConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$",
                             description="name of this pretrained encoder (default: the method); needed "
                             "to tell several pretrain stages apart in finetune.inits")
    exclude_fold: int | None = Field(
        None, ge=0, description="pretrain on every subject outside this fold of finetune's k folds "
        "(null: the ingest split's training subjects)")


class FinetuneConfig(Strict):
    """Transfer to standard-plane detection from each initialisation (METHODS.md §3).

    Every initialisation gets the same protocol (optimizer, epochs, augmentation, sampling, folds,
    seeds), so the comparison against random initialisation is paired.
    """

    inits: list[str] = Field(
        default_factory=lambda: ["random", "pretrain"],
        description="random; pretrain (every pretrain stage) or a pretrain stage's name; supervised (an "
        "encoder first trained with 100% of the fold's labels: a reference, not self-supervised)")
    protocols: list[Literal["linear", "finetune", "knn"]] = Field(
        default_factory=lambda: ["linear", "finetune"],
        description="linear: frozen encoder + logistic regression; finetune: everything trains; knn: "
        "k-nearest-neighbour vote on frozen features")
    label_fractions: list[float] = Field(default_factory=lambda: [0.1, 1.0],
                                         description="nested fractions of the labelled training frames")
    cv: Literal["split", "kfold"] = Field(
        "split", description="split: train on the ingest's train subjects, test on its test subjects; "
        "kfold: subject-level k-fold over every subject (stratified by label)")
    folds: int = Field(3, ge=2, description="kfold: number of folds (the papers: 3)")
    run_folds: list[int] | None = Field(None, description="kfold: only these folds (0-based); null: all")
    frame_stride: int = Field(2, ge=1, description="use every n-th cached frame (the papers: 8 at 30 fps)")
    max_epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=2)
    samples_per_epoch: int = Field(
        1024, ge=16, description="class-balanced draws per fine-tuning epoch: planes equally, plus one "
        "background frame per plane frame when the classes include 'background'")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    encoder_lr_scale: float = Field(1.0, gt=0, le=1, description="fine-tune: encoder lr = lr × this")
    augment: bool = Field(True, description="protocol augmentation: flip, ±10° rotation, zoom, gamma")
    linear_epochs: int = Field(100, ge=1, description="epochs of the linear probe on frozen features")
    knn_k: int = Field(20, ge=1, description="knn: neighbours that vote")
    knn_temperature: float = Field(0.07, gt=0, description="knn: vote weight exp(cosine / τ)")

    @model_validator(mode="after")
    def _check(self) -> "FinetuneConfig":
        for f in self.label_fractions:
            if not 0.0 < f <= 1.0:
                raise ValueError(f"label fraction {f} must be in (0, 1]")
        for f in self.run_folds or []:
            if not 0 <= f < self.folds:
                raise ValueError(f"run_folds: fold {f} does not exist (folds are 0..{self.folds - 1})")
        return self


class EvaluateConfig(Strict):
    """Score every fine-tuned model on its held-out subjects and write the report."""

    frame_stride: int = Field(1, ge=1)
    title: str = Field("Standard-plane detection", description="the report's heading (the task)")
    paper_reference: bool = Field(True, description="append the papers' fetal-plane numbers as a separate "
                                  "reference block (turn off for other tasks)")
    level: Literal["frame", "recording"] = Field(
        "frame", description="score frames, or recordings (clip probability = mean over its frames; truth = its "
        "most frequent label): for clip-level labels such as a diagnosis")
    bootstrap: int = Field(1000, ge=0, description="bootstrap replicates (over subjects) for 95% intervals; 0: off")
    confusion_plots: Literal["all", "best", "none"] = Field(
        "all", description="confusion-matrix PNGs: every (init, protocol, fraction), the best one, or none")


class SaliencyConfig(Strict):
    """Gaze-saliency transfer: ground-truth maps, decoder, training and outputs."""

    window_frames: int = Field(2, ge=0, description="gaze of the cached frames within ± this many frames of a "
                               "frame forms its ground truth; frames with no gaze in the window are skipped")
    frame_stride: int = Field(1, ge=1, description="use every n-th cached frame (the protocol: every 8th at 30 fps)")
    clip_frames: int = Field(1, ge=1, description="frames per input clip centred on the frame (1: single frame; "
                             "3-D encoders may want more)")
    sigma_px: float = Field(2.0, gt=0, description="Gaussian σ of the ground truth in cached pixels "
                            "(unless sigma_deg)")
    sigma_deg: float | None = Field(None, gt=0, description="σ in degrees of visual angle (the protocol: about 1); "
                                    "needs screen_width_px, screen_width_mm and distance_mm")
    screen_width_px: int | None = Field(None, gt=0, description="viewing geometry: screen width in pixels")
    screen_width_mm: float | None = Field(None, gt=0, description="viewing geometry: screen width in mm")
    distance_mm: float | None = Field(None, gt=0, description="viewing geometry: eye-to-screen distance in mm")
    display_scale: float = Field(1.0, gt=0, description="screen pixels per source-video pixel, as the "
                                 "sonographer saw the video")
    decoder_channels: int = Field(32, ge=1, description="channels of the upsampling decoder")
    decoder_blocks: int = Field(2, ge=0, description="×2 upsampling blocks before the final resize to the input size")
    freeze_encoder: bool = Field(True, description="true: only the decoder trains; false: fine-tune the encoder too")
    epochs: int = Field(5, ge=1, description="passes over the training frames")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")
    batch_size: int = Field(16, ge=1, description="frames per training batch")
    hflip: bool = Field(True, description="flip half the training frames left-right, with their ground truth")
    n_overlays: int = Field(4, ge=0, description="test frames drawn as frame | prediction | ground truth PNGs")
    inits: list[str] = Field(default_factory=lambda: ["random", "pretrain"],
                             description="pipeline stage: encoders to transfer (random; pretrain = every "
                             "pretrain stage; or a pretrain stage's name); train split → test split")

    @model_validator(mode="after")
    def _geometry_with_degrees(self) -> "SaliencyConfig":
        missing = [k for k in ("screen_width_px", "screen_width_mm", "distance_mm") if getattr(self, k) is None]
        if self.sigma_deg is not None and missing:
            raise ValueError(f"sigma_deg needs the viewing geometry: set {', '.join(missing)} (or use sigma_px)")
        return self


class ExportConfig(Strict):
    """Export a fine-tuned plane classifier (+ its saliency model) for ``usssl predict``."""

    model: str = Field("best", description="best: the highest mean macro F1 of the evaluate stage (linear or "
                       "finetune); or a model tag from finetune/manifest.json, e.g. video_speech-finetune-1")
    saliency: bool = Field(True, description="include the saliency model trained for the same init, when one exists")


class StageEntry(Strict):
    """One ``- <stage>: {...}`` item of ``stages``; exactly one key is set."""

    ingest: IngestConfig | None = None
    pretrain: PretrainConfig | None = None
    finetune: FinetuneConfig | None = None
    evaluate: EvaluateConfig | None = None
    saliency: SaliencyConfig | None = None
    export: ExportConfig | None = None

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
    output_dir: str = Field("runs/pipeline", description="everything the pipeline writes goes here")
    seed: int = Field(0, description="seeds every random draw (data, models, splits of training)")
    data: DataConfig = Field(default_factory=DataConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    stages: list[StageEntry] = Field(default_factory=list)

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
        names = self.pretrain_names()
        if len(set(names)) != len(names):
            raise ValueError(f"stages: pretrain stages need distinct names (got {names}); set pretrain.name")
        fine = self.stage("finetune")
        known = {"random", "pretrain", *names}
        for kind, body in (("finetune", fine), ("saliency", self.stage("saliency"))):
            allowed = known | {"supervised"} if kind == "finetune" else known
            for init in body.inits if body is not None else []:
                if init not in allowed:
                    raise ValueError(f"{kind}.inits: unknown init {init!r}; choose from {sorted(allowed)}")
        for e in self.stages:
            fold = e.body.exclude_fold if e.kind == "pretrain" else None
            if fold is not None and (fine is None or fine.cv != "kfold" or fold >= fine.folds):
                raise ValueError(f"pretrain.exclude_fold: {fold} needs a finetune stage with cv: kfold and "
                                 f"more than {fold} folds")
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


# ----------------------------------------------------------------------------- loading
def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a pipeline YAML, apply ``key.path=value`` overrides and validate.

    Raises:
        ConfigError: the file is missing or not YAML, an override is malformed, or validation
            fails; the message names the file, the key path and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: pipeline file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    for item in overrides or []:
        apply_override(raw, item, source=str(path))
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None


def apply_override(raw: dict, item: str, source: str = "--set") -> None:
    """Set ``a.b[1].c=value`` (value parsed as YAML) in a raw config mapping, in place.

    A first part that names a stage (``pretrain.max_epochs=2``) addresses the first stage of
    that kind.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, text = item.split("=", 1)
    value = yaml.safe_load(text) if text.strip() else None
    parts = _split_key(key)
    if not parts:
        raise ConfigError(f"--set {item!r}: empty key")
    stages = raw.get("stages")
    if isinstance(stages, list):  # normalise "- ingest" and "- ingest:" to {"ingest": {}}
        for i, entry in enumerate(stages):
            if isinstance(entry, str) and entry in STAGE_NAMES:
                stages[i] = {entry: {}}
            elif isinstance(entry, dict) and len(entry) == 1 and next(iter(entry.values())) is None:
                stages[i] = {next(iter(entry)): {}}
    if parts[0] in STAGE_NAMES:
        stages = raw.get("stages") or []
        for i, entry in enumerate(stages):
            if isinstance(entry, dict) and parts[0] in entry:
                parts = ["stages", i, *parts]
                break
        else:
            raise ConfigError(f"--set {key}: the pipeline {source} has no '{parts[0]}' stage")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ConfigError(f"--set {key}: no item [{part}] at {_join(parts[:depth])}")
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {_join(parts[:depth])} is not a mapping")
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ConfigError(f"--set {key}: no item [{last}]")
        node[last] = value
    else:
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {_join(parts[:-1])} is not a mapping")
        node[last] = value


def _split_key(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for token in key.replace("[", ".").replace("]", "").split("."):
        if token == "":
            continue
        parts.append(int(token) if token.isdigit() else token)
    return parts


def _join(loc: tuple | list) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The config model class that owns the key at ``loc`` (ints are list positions)."""
    model: type[BaseModel] | None = PipelineConfig
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _first_model(field.annotation)
    return model


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: ``file: key.path: what was wrong (did you mean ...)``."""
    lines = []
    seen = set()
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        where = _join(loc)
        if err["type"] == "extra_forbidden":
            model = _model_at(loc)
            hint = ""
            if model is not None:
                close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
                if close:
                    hint = f" (did you mean '{close[0]}'?)"
                else:
                    hint = f" (valid keys: {', '.join(model.model_fields)})"
            message = f"unknown key{hint}"
        elif err["type"] == "literal_error":
            message = f"got {err.get('input')!r}; expected {err['ctx']['expected']}"
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = f"{err['msg']} (got {err.get('input')!r})"
        line = f"{source}: {where}: {message}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return "\n".join(lines)


def to_yaml(cfg: PipelineConfig) -> str:
    """The resolved config as YAML (what MLflow stores as ``config.yaml``)."""
    raw = cfg.model_dump(mode="json", exclude_none=False)
    raw["stages"] = [{kind: body for kind, body in stage.items() if body is not None} for stage in raw["stages"]]
    return yaml.safe_dump(raw, sort_keys=False)  # loads back: load_config(file) gives the same config


def flatten(cfg: PipelineConfig) -> dict[str, str]:
    """Flattened ``key.path -> value`` params for MLflow; stages keyed by their kind."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = str(value)

    dumped = cfg.model_dump(mode="json")
    stages = dumped.pop("stages")
    walk("", dumped)
    for i, entry in enumerate(stages):
        kind = next(k for k, v in entry.items() if v is not None)
        walk(f"stages.{i}.{kind}", entry[kind])
    return out


def reference_markdown() -> str:
    """Every config key with its type, default and description, as Markdown (docs/configuration.md)."""
    lines = ["# Pipeline YAML reference", "",
             "Generated from `usssl/config.py` by `usssl validate --reference`; every key below is checked, and",
             "an unknown key is an error that names it and suggests the closest valid one.", ""]

    def section(title: str, model: type[BaseModel]) -> None:
        lines.extend([f"## `{title or '(top level)'}`", "", ((model.__doc__ or "").strip().splitlines() or [""])[0], "",
                      "| key | type | default | meaning |", "|---|---|---|---|"])
        nested = []
        for name, field in model.model_fields.items():
            sub = _first_model(field.annotation)
            ann = field.annotation
            kind = sub.__name__ if sub else getattr(ann, "__name__", None) if isinstance(ann, type) else None
            kind = kind or str(ann).replace("typing.", "")
            if name == "stages":
                kind, sub = "list of stages", None
            default = field.get_default(call_default_factory=True)
            shown = "see below" if isinstance(default, BaseModel) else repr(default)
            lines.append(f"| `{name}` | {kind.replace('|', 'or')} | {shown.replace('|', 'or')} | "
                         f"{(field.description or '').replace('|', 'or')} |")
            if sub is not None and sub is not StageEntry:
                nested.append((f"{title}.{name}" if title else name, sub))
        lines.append("")
        for child_title, child in nested:
            section(child_title, child)

    section("", PipelineConfig)
    for kind in STAGE_NAMES:
        section(f"stages[].{kind}", _first_model(StageEntry.model_fields[kind].annotation))
    return "\n".join(lines) + "\n"

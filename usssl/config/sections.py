"""Global sections of a pipeline YAML (data, tracking, trainer) and the shared building blocks
(optimizer, encoder) that several stages use."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from usssl.config.base import MAX_EPOCHS, PATH, SEED_MAX, Strict

FROM_CWD = " (a relative path is read from the working directory usssl runs in, not from the YAML's folder)"


# ----------------------------------------------------------------------------- data
class SynthConfig(Strict):
    """The built-in synthetic corpus, generated when ``data.sources`` is empty."""

    subjects: int = Field(12, ge=3, le=10_000, description="number of synthetic subjects (one scan each)")
    seed: int = Field(0, ge=0, le=SEED_MAX)
    duration_s: float = Field(40.0, gt=1.0, le=3600.0, description="length of each scan in seconds")
    voice: Literal["builtin", "espeak"] = "builtin"
    size: tuple[int, int] = Field((160, 160), description="frame height, width in pixels: even, 48 … 2048")
    naming_fraction: float = Field(1.0, ge=0, le=1, description="how often a spoken word names the plane on "
                                   "screen (1: the speech is a label channel); the others: see unnamed")
    unnamed: Literal["filler", "silence"] = Field("filler", description="the words that do not name the plane: "
                                                   "filler words (naming no plane), or silence")

    @field_validator("size")
    @classmethod
    def _even_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        if min(size) < 48 or max(size) > 2048 or size[0] % 2 or size[1] % 2:
            raise ValueError(f"frame height and width must be even numbers of pixels in 48 … 2048, got {list(size)}")
        return size


class DataConfig(Strict):
    """Where the recordings come from and where the cache goes."""

    sources: list[str] = Field(default_factory=list, description="folders or files to ingest; empty: the "
                               "synthetic corpus" + FROM_CWD, json_schema_extra=PATH)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    cache_dir: str | None = Field(None, description="default: <output_dir>/cache", json_schema_extra=PATH)
    labels_csv: str | None = Field(None, description="per-frame labels (video, frame, plane) or one label per "
                                   "recording (recording, label)", json_schema_extra=PATH)
    gaze_csv: str | None = Field(None, description="gaze: video, frame, x, y (pixels)", json_schema_extra=PATH)
    subjects_csv: str | None = Field(None, description="video → patient_id (hashed on ingest)", json_schema_extra=PATH)
    subject_per_recording: bool = Field(
        False, description="with a subjects table: a recording without a row becomes its own subject (a DICOM "
        "takes its header's patient ID); false: such a recording is an error")
    allow_unmatched_labels: bool = Field(
        False, description="label/gaze rows that name no recording: a warning and CACHE/unmatched_table_rows.csv; "
        "false: an error listing them")


class TrackingConfig(Strict):
    """MLflow tracking. ``uri`` null means ``sqlite:///<output_dir>/mlflow.db``;
    the environment variable ``MLFLOW_TRACKING_URI`` overrides both."""

    uri: str | None = Field(None, description="MLflow tracking URI (null: sqlite:///<output_dir>/mlflow.db)",
                            json_schema_extra=PATH)
    experiment: str = Field("usssl", description="the MLflow experiment, used when the YAML sets it; unset: the "
                            "pipeline's `name`; the environment variable MLFLOW_EXPERIMENT_NAME overrides both")
    enabled: bool = True
    log_checkpoints: bool = True


class TrainerConfig(Strict):
    """Lightning Trainer settings shared by every training stage."""

    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = Field(
        "cpu", description="checked against the machine when a run starts (`usssl doctor` lists its GPUs)")
    devices: int | str | list[int] = Field(1, description="number of devices (1, 2, …), -1 or 'auto' (all), "
                                          "or device indices such as '0,1' or [0, 1]")
    num_nodes: int = Field(1, ge=1, le=10_000)
    strategy: str = "auto"
    precision: Literal["32-true", "32", "bf16-mixed", "16-mixed", "bf16-true"] = "32-true"
    num_workers: int = Field(0, ge=0, le=1024, description="DataLoader worker processes")
    log_every_n_steps: int = Field(5, ge=1)
    deterministic: bool = False
    gradient_clip_val: float | None = Field(5.0, ge=0)
    progress: bool = True

    @field_validator("devices")
    @classmethod
    def _device_count(cls, devices: int | str | list[int]) -> int | str | list[int]:
        if isinstance(devices, list):
            ok = bool(devices) and all(0 <= d < 1024 for d in devices) and len(set(devices)) == len(devices)
        elif isinstance(devices, int):
            ok = devices == -1 or 1 <= devices <= 1024
        else:
            text = devices.strip().replace(" ", "")
            ok = text in ("auto", "-1") or bool(re.fullmatch(r"[1-9][0-9]{0,3}|([0-9]{1,4},)+[0-9]{0,4}", text))
        if not ok:
            raise ValueError(f"got {devices!r}; expected a number of devices (1, 2, …), -1 or 'auto' (all of them), "
                             "or distinct device indices such as '0,1' or [0, 1]")
        return devices


class OptimizerConfig(Strict):
    """The optimizer of a training stage (``momentum`` is used by SGD only)."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["none", "step", "multistep", "cosine"] = Field("none", description="per-epoch lr schedule")
    step_epochs: int = Field(20, ge=1, le=MAX_EPOCHS, description="step: epochs between decays")
    milestones: list[Annotated[int, Field(ge=1, le=MAX_EPOCHS)]] = Field(
        default_factory=lambda: [20, 35], description="multistep: decay epochs")
    gamma: float = Field(0.1, gt=0, le=1, description="step/multistep: lr factor at each decay")
    cosine_epochs: int = Field(100, ge=1, le=MAX_EPOCHS, description="cosine: epochs to anneal to 0")


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
    clip_frames: int = Field(
        1, ge=1, le=256, description="frames of the clip every downstream task (plane detection, retrieval) reads "
        "around a labelled frame, centred on it, edges repeated; 1: the frame alone. Recorded with the encoder, so "
        "each encoder is read the way it was pretrained (TCGL: 16)")
    motion_emphasis: bool = Field(
        False, description="subtract each input clip's temporal mean before the encoder, in pretraining and every "
        "downstream task (TCGL, Liu et al. TIP 2022); needs clip_frames >= 2")

    @model_validator(mode="after")
    def _motion_needs_clip(self) -> "EncoderConfig":
        if self.motion_emphasis and self.clip_frames < 2:
            raise ValueError("motion_emphasis: true subtracts the clip's temporal mean, which leaves nothing of a "
                             "single frame; set clip_frames to at least 2 (TCGL: 16)")
        return self



"""Global sections of a pipeline YAML (data, tracking, trainer) and the shared building blocks
(optimizer, encoder) that several stages use."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from usssl.config.base import PATH, Strict


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

    sources: list[str] = Field(default_factory=list, description="folders or files to ingest", json_schema_extra=PATH)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    cache_dir: str | None = Field(None, description="default: <output_dir>/cache", json_schema_extra=PATH)
    labels_csv: str | None = Field(None, description="per-frame labels: video, frame, plane", json_schema_extra=PATH)
    gaze_csv: str | None = Field(None, description="gaze: video, frame, x, y (pixels)", json_schema_extra=PATH)
    subjects_csv: str | None = Field(None, description="video → patient_id (hashed on ingest)", json_schema_extra=PATH)


class TrackingConfig(Strict):
    """MLflow tracking. ``uri`` null means ``sqlite:///<output_dir>/mlflow.db``;
    the environment variable ``MLFLOW_TRACKING_URI`` overrides both."""

    uri: str | None = Field(None, description="MLflow tracking URI (null: sqlite:///<output_dir>/mlflow.db)",
                            json_schema_extra=PATH)
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



"""The settings of each pipeline stage (``- ingest: {...}``, ``- pretrain: {...}``, …)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, create_model, field_validator, model_validator

from usssl.config.base import MAX_BATCH, MAX_EPOCHS, MAX_PER_EPOCH, MAX_PIXELS, MAX_STEPS, SEED_MAX, Strict
from usssl.config.methods import METHOD_SETTINGS, SpeechConfig
from usssl.config.sections import EncoderConfig, OptimizerConfig


class SplitConfig(Strict):
    """Subject-level split fractions (never by frame or clip)."""

    val: float = Field(0.0, ge=0.0, lt=1.0)
    test: float = Field(0.34, gt=0.0, lt=1.0)
    seed: int = Field(0, ge=0, le=SEED_MAX)


class IngestConfig(Strict):
    """Read recordings, crop to the imaging region, resample, and write the cache."""

    size: tuple[int, int] = Field((64, 64), description=f"cached frame height, width in pixels (4 … {MAX_PIXELS})")
    fps: float | None = Field(15.0, gt=0, le=1000, description="cached frame rate; null keeps the source rate")
    audio: bool = Field(True, description="keep the narration (false drops it: it may contain names)")
    audio_rate: int = Field(16000, ge=8000, le=192_000)
    crop: Literal["auto", "none"] | tuple[int, int, int, int] = Field(
        "auto", description="'auto' (ultrasound regions or motion), 'none', or [x0, y0, x1, y1]"
    )
    drop_frozen: bool = Field(False, description="drop frozen/duplicate frames (always flagged in flags.npy bit 0)")
    drop_doppler: bool = Field(False, description="drop colour-Doppler frames (always flagged in flags.npy bit 1)")
    split: SplitConfig = Field(default_factory=SplitConfig)
    workers: int = Field(2, ge=1, le=1024)
    overwrite: bool = False

    @field_validator("size")
    @classmethod
    def _frame_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        if not all(4 <= side <= MAX_PIXELS for side in size):
            raise ValueError(f"height and width must be 4 … {MAX_PIXELS} pixels, got {list(size)}")
        return size

    @field_validator("crop")
    @classmethod
    def _crop_box(cls, crop: Any) -> Any:
        if not isinstance(crop, str):
            x0, y0, x1, y1 = crop
            if not (0 <= x0 < x1 and 0 <= y0 < y1):
                raise ValueError(f"a crop box is [x0, y0, x1, y1] in source pixels with 0 <= x0 < x1 and "
                                 f"0 <= y0 < y1, got {list(crop)}")
        return crop


class PretrainBase(Strict):
    """Self-supervised pretraining on the training subjects only (the settings every method shares;
    ``PretrainConfig`` adds one ``<method>: {...}`` block per registered method)."""

    method: str = Field("video_speech", description="the self-supervised method (see METHOD_SETTINGS)")
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    speech: SpeechConfig = Field(default_factory=SpeechConfig)
    temperature: float = Field(0.1, ge=1e-3, le=100, description="softmax temperature of the contrastive loss")
    projection_dim: int = Field(64, ge=8, le=65_536)
    max_epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    max_steps: int = Field(-1, ge=-1, le=MAX_STEPS, description="stop after this many optimizer steps; -1: no limit")
    batch_size: int = Field(64, ge=2, le=MAX_BATCH, description="items per step on each device; checked against "
                            "the training data when pretraining starts (an epoch needs at least one full batch)")
    pairs_per_epoch: int | None = Field(
        2048, ge=16, le=MAX_PER_EPOCH, description="pairs drawn per epoch; null: K per high-affinity interval"
    )
    augment: bool = Field(True, description="temporally consistent flip/affine/gamma on the video")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$",
                             description="name of this pretrained encoder (default: the method); needed "
                             "to tell several pretrain stages apart in finetune.inits")
    shared: bool = Field(
        False, description="finetune cv: kfold: false (strictly inductive) pretrains once per fold and seed on "
        "that fold's training and validation subjects; true pretrains once on the ingest split's training "
        "subjects, which may hold other folds' test subjects, and every table then says 'transductive'")
    exclude_fold: int | None = Field(
        None, ge=0, description="pretrain once on every subject outside this fold of finetune's k folds (with "
        "shared: true, or with finetune.run_folds: [this fold]); null: per fold, or the ingest split")

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, steps: int) -> int:
        if steps == 0:
            raise ValueError("0 steps would train nothing; use -1 (no step limit) or a positive number")
        return steps


METHOD_HELP = {"video_speech": "Jiao MICCAI 2020", "order_transform": "Jiao ISBI 2020", "cvrl": "Qian CVPR 2021",
               "frame_contrastive": "SimCLR frames, Mo NeurIPS 2021",
               "tcgl": "Liu TIP 2022"}


def build_pretrain_config(settings: dict[str, type[Strict]] | None = None) -> type[PretrainBase]:
    """``PretrainConfig`` for the methods of ``settings`` (default: ``METHOD_SETTINGS``): ``method`` is
    one of their names and each gets its settings block under its own name."""
    settings = METHOD_SETTINGS if settings is None else settings
    names = tuple(settings)
    described = ", ".join(f"{n} ({METHOD_HELP[n]})" if n in METHOD_HELP else n for n in names)
    fields: dict[str, Any] = {"method": (Literal[names], Field(names[0], description=described))}
    fields |= {name: (cls, Field(default_factory=cls)) for name, cls in settings.items()}
    return create_model("PretrainConfig", __base__=PretrainBase, __doc__=PretrainBase.__doc__,
                        __module__=__name__, **fields)


PretrainConfig = build_pretrain_config()


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
    max_epochs: int = Field(20, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(64, ge=2, le=MAX_BATCH)
    samples_per_epoch: int = Field(
        1024, ge=16, le=MAX_PER_EPOCH, description="class-balanced draws per fine-tuning epoch: planes equally, plus one "
        "background frame per plane frame when the classes include 'background'")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    encoder_lr_scale: float = Field(1.0, gt=0, le=1, description="fine-tune: encoder lr = lr × this")
    augment: bool = Field(True, description="protocol augmentation: flip, ±10° rotation, zoom, gamma")
    linear_epochs: int = Field(100, ge=1, le=MAX_EPOCHS, description="epochs of the linear probe on frozen features (the most; "
                               "with early_stopping the best on validation, checked every 10)")
    val_fraction: float = Field(
        0.25, ge=0, lt=1, description="share of each fold's training subjects held out (by subject, stratified) "
        "for validation: every choice (epochs, lr, the exported recipe) is made on it, never on test; the "
        "ingest split's val subjects are used instead when it has some; 0: no selection")
    early_stopping: bool = Field(True, description="keep the epoch with the best validation macro F1 "
                                 "(finetune: every epoch; linear: every 10 epochs)")
    lr_grid: list[float] = Field(
        default_factory=list, description="finetune protocol: learning rates tried, the best on validation kept "
        "(empty: optimizer.lr only)")
    knn_k: int = Field(20, ge=1, description="knn: neighbours that vote")
    knn_temperature: float = Field(0.07, ge=1e-3, le=100, description="knn: vote weight exp(cosine / τ)")

    @model_validator(mode="after")
    def _check(self) -> "FinetuneConfig":
        for f in self.label_fractions:
            if not 0.0 < f <= 1.0:
                raise ValueError(f"label fraction {f} must be in (0, 1]")
        for f in self.run_folds or []:
            if not 0 <= f < self.folds:
                raise ValueError(f"run_folds: fold {f} does not exist (folds are 0..{self.folds - 1})")
        if any(not lr > 0 for lr in self.lr_grid):
            raise ValueError(f"lr_grid: learning rates must be > 0, got {self.lr_grid}")
        return self


class EvaluateConfig(Strict):
    """Score every fine-tuned model on its held-out subjects and write the report."""

    frame_stride: int = Field(1, ge=1)
    title: str = Field("Standard-plane detection", description="the report's heading (the task)")
    paper_reference: bool = Field(True, description="append the papers' fetal-plane numbers as a separate "
                                  "reference block (turn off for other tasks)")
    level: Literal["auto", "frame", "recording"] = Field(
        "auto", description="score frames, or recordings (clip probability = mean over its frames; truth = its "
        "most frequent label): for clip-level labels such as a diagnosis; auto: recording when the labels came "
        "as one per recording (a recording,label table), else frame")
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
    epochs: int = Field(5, ge=1, le=MAX_EPOCHS, description="passes over the training frames")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")
    batch_size: int = Field(16, ge=1, le=MAX_BATCH, description="frames per training batch")
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


class LocaliseConfig(Strict):
    """Label-free anatomy localisation with ContraCAM (Mo et al., NeurIPS 2021; METHODS.md §6).

    Writes per-frame masks and boxes (``localise/<init>/objects/<shard>.npz``, the input of
    ``pretrain.frame_contrastive.objects_from``), ``boxes.csv`` and overlay PNGs; scores them where
    the cache holds anatomy masks.
    """

    inits: list[str] = Field(default_factory=lambda: ["pretrain"],
                             description="encoders to explain: random (no projector), pretrain (every pretrain "
                             "stage) or a pretrain stage's name; a frame_contrastive encoder brings its projector")
    split: Literal["train", "val", "test", "all"] = Field(
        "test", description="the ingest split whose recordings are localised (all: every recording, e.g. to "
        "give frame_contrastive's object_crop maps of its training frames)")
    frame_stride: int = Field(4, ge=1, description="localise every n-th cached frame")
    batch_size: int = Field(32, ge=2, le=MAX_BATCH, description="frames scored together (each frame's negatives)")
    iterations: int = Field(10, ge=1, le=50, description="refinement iterations T for the boxes (paper: 10)")
    mask_iterations: int = Field(1, ge=1, le=50, description="refinement iterations T for the masks (paper: 1)")
    restrict: bool = Field(True, description="restrict the maps to the imaging region (otherwise the fan edge "
                           "and the black padding dominate)")
    expand_resolution: bool = Field(False, description="stride 1 in the encoder's last stage: 2× finer maps")
    threshold: float = Field(0.5, gt=0, lt=1, description="boxes: pixels above this × the map's maximum (paper: 0.5)")
    min_area: float = Field(0.01, ge=0, lt=1, description="boxes: drop components whose box covers less of the "
                            "frame (paper: 0.01)")
    margin: float = Field(0.2, ge=0, le=1, description="boxes: widened by this fraction of their size per side "
                          "(paper: 0.2)")
    n_overlays: int = Field(8, ge=0, description="frames drawn as frame | map + boxes PNGs per init")

    @model_validator(mode="after")
    def _iterations(self) -> "LocaliseConfig":
        if self.mask_iterations > self.iterations:
            raise ValueError(f"mask_iterations ({self.mask_iterations}) must be <= iterations ({self.iterations}): "
                             "the masks are taken along the boxes' refinement")
        return self


class RetrievalConfig(Strict):
    """Clip retrieval with each frozen encoder (``usssl/downstream/retrieval.py``): queries from each fold's
    test subjects, the gallery from its training subjects, cosine nearest neighbours, Recall@k."""

    inits: list[str] = Field(default_factory=lambda: ["random", "pretrain"],
                             description="encoders to score: random; pretrain (every pretrain stage) or a pretrain "
                             "stage's name; per fold and seed, the encoder that never saw the fold's test subjects")
    clip_frames: int = Field(16, ge=1, le=256, description="frames per query / gallery clip, centred on a labelled "
                             "frame whose label the clip takes (TCGL: 16)")
    frame_stride: int = Field(4, ge=1, description="a clip centred on every n-th labelled cached frame")
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10], description="Recall@k for these k; a k above a "
                          "quarter of the gallery is left out (and said so)")
    exclude_background: bool = Field(True, description="leave out clips whose centre frame is 'background' "
                                     "(most of a scan: they would dominate Recall@k)")
    recording_clips: int = Field(10, ge=0, description="recording-level variant: features averaged over this many "
                                 "uniformly spaced clips per recording, for recordings with one label; 0: off")

    @field_validator("ks")
    @classmethod
    def _ks(cls, ks: list[int]) -> list[int]:
        if not ks or any(k < 1 for k in ks):
            raise ValueError(f"give at least one k >= 1, got {ks}")
        return ks


class ExportConfig(Strict):
    """Export a fine-tuned plane classifier (+ its saliency model) for ``usssl predict``."""

    model: str = Field("best", description="best: the recipe (init, protocol, label fraction; linear or finetune) "
                       "with the highest mean *validation* macro F1, re-run on all subjects (refit); or a model tag "
                       "from finetune/manifest.json, e.g. video_speech-finetune-1, exported as fitted")
    refit: bool = Field(True, description="best: re-run the chosen recipe once on every subject (its own "
                        "pretraining included, epochs chosen on an inner validation split) and export that model; "
                        "false: export the first fold's model of the recipe")
    saliency: bool = Field(True, description="include the saliency model trained for the same init (the first "
                           "fold and seed's), when one exists")



"""The settings of each self-supervised method, one class per method, and their registry.

``METHOD_SETTINGS`` maps a ``pretrain.method`` name to its settings class; ``PretrainConfig`` gets
one field of that name per entry (``pretrain.cvrl: {...}``), built from this table, so adding a
method's settings is one class here and one line in the table (its module is registered in
``usssl/methods/__init__.py``). The encoder, optimizer and ``projection_dim`` stay in
``PretrainConfig``. Where a paper does not fix a value the field says so ("ours").

    >>> OrderTransformConfig(variant="disentangled", max_rotation_deg=20)
    >>> CVRLConfig(clip_frames=8, stride=2)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from usssl.config.base import MAX_PER_EPOCH, MAX_PIXELS, PATH, Strict


class SpeechConfig(Strict):
    """Speech windows and their encoder (a spectrogram CNN, or wav2vec2 / HuBERT from a local folder)."""

    encoder: Literal["tiny_spec", "se_resnext50", "se_resnext50_half", "wav2vec2", "hubert"] = "tiny_spec"
    pretrained_path: str | None = Field(None, description="wav2vec2/hubert: local save_pretrained folder (a "
                                         "relative path is read from the working directory)", json_schema_extra=PATH)
    freeze: bool | int = Field(True, description="wav2vec2/hubert: true, false, or N top layers trainable")
    window_s: float = Field(0.6, gt=0, description="speech window length (paper: 0.6 s)")
    resample_to: int | None = Field(None, ge=8000, le=192_000, description="resample speech first (paper: 24000 Hz)")
    n_fft: int = Field(256, ge=32, description="FFT size (paper: 510 → 256 frequency bands)")
    hop_ms: float = Field(5.0, gt=0)
    win_ms: float = Field(10.0, gt=0)
    spec_size: tuple[int, int] = Field((64, 64), description=f"spectrogram resized to F x T' (8 … {MAX_PIXELS} each)")
    interval_frames: int = Field(30, ge=1, description="frames per clip interval T (paper: 60 at 30 fps)")
    affinity_threshold: float = Field(0.5, ge=0, le=1, description="high affinity: speech fraction >=")
    pairs_per_interval: int = Field(2, ge=1, description="K pair groups per high-affinity interval (paper: 2)")
    hard_negative_range: int = Field(5, ge=2, description="D: hard negatives from intervals T+δ, 0<|δ|<D")
    low_affinity_share: float = Field(
        0.25, ge=0, lt=1, description="share of pairs drawn from low-affinity intervals (noise, silence; the "
        "gate drops them from the cross-modal terms, self-paced admits them last); 0: high-affinity only")
    vad: Literal["energy", "silero"] = Field(
        "energy", description="voice activity: energy (the paper's, speech/vad.py) or silero (the silero-vad "
        "model inside its wheel, offline; better in noise, slower)")

    @field_validator("spec_size")
    @classmethod
    def _spec_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        if not all(8 <= side <= MAX_PIXELS for side in size):
            raise ValueError(f"both sides must be 8 … {MAX_PIXELS}, got {list(size)}")
        return size

    @model_validator(mode="after")
    def _pretrained_needs_path(self) -> "SpeechConfig":
        if self.encoder in ("wav2vec2", "hubert") and not self.pretrained_path:
            raise ValueError(f"encoder '{self.encoder}' needs pretrained_path: a local folder saved with "
                             "save_pretrained (usssl never downloads weights)")
        return self


class VideoSpeechConfig(Strict):
    """The video–speech losses (Jiao et al., MICCAI 2020): L = α·L_cls + β·L_cont + γ·L_ord."""

    contrastive: Literal["infonce", "infonce_hard", "eq2_clamped"] = Field(
        "infonce_hard", description="infonce: symmetric CLIP-style (no hard pairs); infonce_hard: the positive "
        "and the hard positive over the batch + the hard negative (safe Eq. 2); eq2_clamped: Eq. 2 with the "
        "hard positive, continued linearly where its numerator would be <= 0")
    normalize: bool = Field(True, description="L2-normalise embeddings (the paper: raw dot products; then "
                            "set pretrain.temperature: 1 for the paper's 'no temperature')")
    alpha: float = Field(1.0, ge=0, description="weight of L_cls, the 2-way correspondence classifier")
    beta: float = Field(1.0, ge=0, description="weight of L_cont")
    gamma: float = Field(1.0, ge=0, description="weight of L_ord, 4-frame order (12 classes) on all intervals")
    order_stride: int = Field(4, ge=1, description="cached frames between the 4 frames of the order clip")
    order_grid: int = Field(
        4, ge=0, le=8, description="L_ord: each frame's feature is the encoder's last map pooled to grid × grid "
        "(ours, as order_transform: a global pool is blind to the probe motion); 0: the pooled encoder output")
    order_pairs: bool = Field(True, description="L_ord: the head sees every frame pair as [g_i − g_j, "
                              "abs(g_i − g_j)] through one shared layer (ours); false: frames concatenated")
    order_branch_dim: int = Field(256, ge=8, description="width of the order head's layers")
    self_paced: Literal["gate", "none", "spl_hard", "spl_linear"] = Field(
        "gate", description="gate: cross-modal terms on high-affinity pairs only (the paper); none: every "
        "sampled pair counts (the ablation without affinity); spl_*: pairs admitted in order of affinity × "
        "easiness, a growing fraction of each batch (ours)")
    pace_start_fraction: float = Field(0.5, gt=0, le=1, description="spl: fraction of each batch's pairs "
                                       "admitted at the start")
    pace_growth: float = Field(1.3, ge=1, description="spl: the admitted fraction is multiplied by this every "
                               "epoch, up to 1")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        if isinstance(data, dict) and "pace_start" in data:
            raise ValueError("pace_start was renamed pace_start_fraction: the pace is now the fraction of each "
                             "batch's pairs admitted at the start (0 … 1, e.g. 0.5), not a loss value")
        return data

    @model_validator(mode="after")
    def _check(self) -> "VideoSpeechConfig":
        if self.contrastive == "infonce" and not self.normalize:
            raise ValueError("contrastive 'infonce' always L2-normalises; set normalize: true, or use "
                             "infonce_hard / eq2_clamped for raw dot products")
        if self.alpha == self.beta == self.gamma == 0:
            raise ValueError("alpha, beta and gamma are all 0: nothing to learn")
        return self


class OrderTransformConfig(Strict):
    """Clip order + affine transform pretext (Jiao, Droste, Drukker, Papageorghiou, Noble, ISBI 2020).

    Affine ranges are symmetric (± the maximum) except ``scale_range``; the paper does not state
    them, nor the norm of L_trans, so every one is a field with a sensible default (ours).
    """

    variant: Literal["siamese", "disentangled"] = Field(
        "siamese", description="siamese: two branches with partly shared weights (shared_depth), the order branch "
        "on the shuffled clip, the transform branch on the original and the transformed clip; disentangled: one "
        "network reads the order from a shuffled and transformed clip and τ from it and its untransformed copy")
    shared_depth: int | None = Field(
        None, ge=0, description="siamese: encoder stages (after the stem) the two branches share; the later stages "
        "are the order branch's own (shared trunk + order stages = the encoder that transfers downstream) and a "
        "copy of them is the transform branch's; null: every stage but the last (the paper shares part of the "
        "network and does not say which part)")
    clip_frames: int = Field(4, ge=2, le=6, description="frames per clip; n!/2 order classes (paper: 4 → 12)")
    frame_stride: int = Field(8, ge=1, description="temporal down-sampling between clip frames (paper: 8 at 30 fps)")
    fusion: Literal["frames", "clip"] = Field(
        "frames", description="order features: 'frames' encodes each frame and concatenates them in clip order "
        "(works with 2-D encoders); 'clip' encodes the whole clip at once (needs a 3-D encoder)")
    order_grid: int = Field(
        4, ge=0, le=8, description="each frame's order feature is the encoder's last map average-pooled to a grid × "
        "grid map and flattened, so it keeps where the anatomy is (ours: the global pool discards the few-pixel "
        "probe motion that orders the frames), in both variants; 0: the pooled encoder output")
    order_pairs: bool = Field(
        True, description="fusion 'frames': the order head sees every frame pair through one shared layer on "
        "[g_i − g_j, abs(g_i − g_j)] (after Lee et al., ICCV 2017, pairwise features); false: frames concatenated")
    max_translation: float = Field(0.1, ge=0, lt=0.5, description="translation drawn in ± this fraction of W and H")
    scale_range: tuple[float, float] = Field((0.8, 1.2), description="isotropic scale drawn uniformly in [min, max]")
    max_rotation_deg: float = Field(15.0, ge=0, lt=90, description="rotation drawn in ± this many degrees")
    max_shear_deg: float = Field(10.0, ge=0, lt=45, description="horizontal shear angle drawn in ± this many degrees")
    border: Literal["mask", "none"] = Field(
        "mask", description="mask: every view the encoder sees is zeroed outside the region that all τ within the "
        "ranges fill from inside the frame (methods/affine.py: valid_region; 22% of the frame at the default "
        "ranges), so the zero-padded corners of τ(clip) cannot give τ away (ours); none: the corners stay visible")
    crop: float = Field(1.0, gt=0, le=1, description="fraction of H and W kept from the centre of every view, after "
                        "the border mask (ours)")
    loss_norm: Literal["l1", "l2"] = Field(
        "l2", description="L_trans on range-normalised parameters: l1 = mean |τ̂−τ|, l2 = mean (τ̂−τ)²")
    order_weight: float = Field(1.0, ge=0, description="weight of L_ord (paper: 1)")
    transform_weight: float = Field(1.0, ge=0, description="weight of L_trans (paper: 1)")
    branch_dim: int = Field(256, ge=8, description="width of each task branch's layers on top of the shared encoder")

    @model_validator(mode="after")
    def _check_ranges(self) -> "OrderTransformConfig":
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < min <= max, got {list(self.scale_range)}")
        if self.order_weight == 0 and self.transform_weight == 0:
            raise ValueError("order_weight and transform_weight are both 0: nothing to learn")
        if self.variant == "disentangled" and self.shared_depth is not None:
            raise ValueError("shared_depth applies to variant 'siamese' only (the disentangled network is one "
                             "branch); remove it or set variant: siamese")
        return self


def check_view_ranges(cfg) -> None:
    """The two-view augmentation ranges of CVRL and the frame-level method: each (min, max) of
    ``crop_area``, ``crop_aspect``, ``blur_sigma`` with 0 < min <= max, and ``crop_area`` max <= 1."""
    for name in ("crop_area", "crop_aspect", "blur_sigma"):
        lo, hi = getattr(cfg, name)
        if not 0 < lo <= hi:
            raise ValueError(f"{name} must satisfy 0 < min <= max, got [{lo}, {hi}]")
    if cfg.crop_area[1] > 1:
        raise ValueError(f"crop_area max must be <= 1, got {cfg.crop_area[1]}")


class CVRLConfig(Strict):
    """CVRL (Qian et al., CVPR 2021): two clips of one video, NT-Xent over the global batch.

    Augmentation follows the paper's temporally consistent recipe adapted to grayscale ultrasound:
    saturation, hue and the grayscale conversion have no meaning on one channel and are replaced by
    a gamma jitter (ours). Two departures, both measured on the synthetic corpus at 64×64:

    - the intensity jitter is ±25% (brightness, contrast, gamma; the ultrasound downstream protocol's
      range) instead of the paper's 0.8 for RGB: B-mode frames are dark (mean ≈ 0.1) and their
      echogenicity is the content; at 0.8 the two views of a clip differ more in global intensity
      than different clips do, the encoder cannot find the shared anatomy and the projections
      collapse (NT-Xent stays at ln(2B − 1));
    - the gap between the two clips is capped at ``max_gap_s`` (``data/clips.py``).
    """

    clip_frames: int = Field(16, ge=1, description="frames per clip n (paper: 16)")
    stride: int = Field(2, ge=1, description="temporal stride between clip frames (paper: 2)")
    temperature: float = Field(0.1, ge=1e-3, le=100, description="NT-Xent temperature τ (paper: 0.1)")
    head_layers: int = Field(3, ge=0, description="hidden [Linear, BN, ReLU] blocks of the MLP head (paper: 3)")
    head_hidden_dim: int | None = Field(
        None, ge=8, description="width of the head's hidden layers; null: the encoder's out_dim (paper: 2048)")
    pairs_per_epoch: int = Field(2048, ge=2, le=MAX_PER_EPOCH, description="clip pairs drawn per epoch")
    max_gap_s: float | None = Field(
        2.0, ge=0, description="largest gap between the two clips' starts in seconds; P(Δ) ∝ G − Δ below it "
        "(ours: a scan changes plane every few seconds, the paper's 10 s videos do not); null: whole recording")
    crop_area: tuple[float, float] = Field((0.3, 1.0), description="random resized crop: area fraction range")
    crop_aspect: tuple[float, float] = Field((0.5, 2.0), description="random resized crop: aspect ratio range")
    flip_p: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    jitter_p: float = Field(0.8, ge=0, le=1, description="probability of the intensity jitter (paper: 0.8)")
    brightness: float = Field(0.25, ge=0, lt=1, description="brightness factor drawn in [1−b, 1+b] (paper, on "
                              "RGB: 0.8; ours: ±25% as the ultrasound downstream protocol, see the class docstring)")
    contrast: float = Field(0.25, ge=0, lt=1,
                            description="contrast factor drawn in [1−c, 1+c] (paper: 0.8; ours: 0.25)")
    gamma: float = Field(0.25, ge=0, description="gamma drawn log-uniformly in [1/(1+g), 1+g] (ours, for hue)")
    blur_p: float = Field(0.5, ge=0, le=1, description="probability of a Gaussian blur (paper: 0.5)")
    blur_sigma: tuple[float, float] = Field(
        (0.1, 2.0), description="blur σ range in pixels at 224 px, scaled with the frame size (paper: 0.1–2)")
    sync_batchnorm: bool = Field(
        True, description="under DDP on GPUs, BatchNorm in encoder and head uses the global batch's statistics "
        "(SyncBatchNorm, as the official code's use_sync_bn); CPU/gloo runs keep plain BatchNorm and log it")
    warmup_epochs: float = Field(
        0.0, ge=0, description="linear learning-rate warm-up from 0 over this many epochs, per step, before the "
        "optimizer's schedule (official: 5 epochs; 0: none)")
    decay_bn_bias: bool = Field(
        False, description="apply the optimizer's weight decay to BatchNorm and bias parameters too (the official "
        "code decays conv and linear kernels only)")

    @model_validator(mode="after")
    def _check_ranges(self) -> "CVRLConfig":
        check_view_ranges(self)
        return self


class FrameContrastiveConfig(Strict):
    """Frame-level SimCLR (Chen et al., ICML 2020), the encoder ContraCAM explains (Mo et al., NeurIPS 2021).

    Two views of one cached frame, NT-Xent, an MLP projector. The view augmentation is CVRL's (same
    field names, ±25% intensity jitter for B-mode, see ``CVRLConfig``). ``object_crop`` and
    ``bg_mixup`` need ``objects_from``: the ``objects/`` folder a ``localise`` stage wrote.
    """

    frame_stride: int = Field(1, ge=1, description="draw from every n-th cached frame")
    frames_per_epoch: int = Field(2048, ge=2, le=MAX_PER_EPOCH, description="frames drawn per epoch")
    temperature: float = Field(0.1, ge=1e-3, le=100, description="NT-Xent temperature τ (SimCLR: 0.1–0.5)")
    head_layers: int = Field(1, ge=0, description="hidden [Linear, BN, ReLU] blocks of the projector (SimCLR: 1)")
    head_hidden_dim: int | None = Field(None, ge=8, description="projector width; null: the encoder's out_dim")
    crop_area: tuple[float, float] = Field((0.3, 1.0), description="random resized crop: area fraction range")
    crop_aspect: tuple[float, float] = Field((0.5, 2.0), description="random resized crop: aspect ratio range")
    flip_p: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    jitter_p: float = Field(0.8, ge=0, le=1, description="probability of the intensity jitter")
    brightness: float = Field(0.25, ge=0, lt=1, description="brightness factor in [1−b, 1+b] (ours, as CVRL)")
    contrast: float = Field(0.25, ge=0, lt=1, description="contrast factor in [1−c, 1+c]")
    gamma: float = Field(0.25, ge=0, description="gamma drawn log-uniformly in [1/(1+g), 1+g]")
    blur_p: float = Field(0.5, ge=0, le=1, description="probability of a Gaussian blur")
    blur_sigma: tuple[float, float] = Field((0.1, 2.0), description="blur σ range in pixels at 224 px")
    objects_from: str | None = Field(None, description="folder of per-recording object maps (<shard>.npz) from a "
                                     "localise stage (its objects/ folder); needed by object_crop and bg_mixup",
                                     json_schema_extra=PATH)
    object_crop: bool = Field(False, description="crop each frame to its ContraCAM box before the two views (Mo et al.)")
    bg_mixup: bool = Field(False, description="query view = mask·frame + (1 − mask)·another frame's background (Mo et al.)")
    bg_threshold: float = Field(0.2, ge=0, le=1, description="bg_mixup: the mask is cut here to find the object (paper: 0.2)")
    bg_p: float = Field(0.4, ge=0, le=1, description="bg_mixup: probability of making a frame's background (paper: 0.4)")
    bg_queue: int = Field(50, ge=1, description="bg_mixup: FIFO of recent backgrounds used as fallback (paper: 50)")

    @model_validator(mode="after")
    def _check(self) -> "FrameContrastiveConfig":
        check_view_ranges(self)
        if (self.object_crop or self.bg_mixup) and not self.objects_from:
            raise ValueError("object_crop and bg_mixup need objects_from: the objects/ folder of a localise stage")
        return self


class TCGLConfig(Strict):
    """TCGL (Liu, Wang, Liu, Lan, Lin, IEEE TIP 2022): 3 shuffled snippets, intra- and inter-snippet graphs
    with GRACE-style contrast, and adaptive snippet order prediction; L = mean(L_intra) + L_inter + L_order.

    Motion emphasis (each clip minus its temporal mean) is a property of the encoder, not of this block:
    ``pretrain.encoder.motion_emphasis: true``, with ``pretrain.encoder.clip_frames`` (16) the clip every
    downstream task then reads around a labelled frame, so the encoder is used the way it was pretrained.
    """

    snippet_frames: int = Field(16, ge=2, le=256, description="frames per snippet L (paper: 16)")
    gap_frames: int = Field(8, ge=0, le=256, description="sampled frames between two snippets (paper: 8)")
    stride: int = Field(1, ge=1, description="cached frames between sampled frames; a recording too short for it "
                        "is sampled at the largest stride that fits, down to 1, and skipped below that (counted)")
    sub_clips: int = Field(4, ge=2, description="nodes of the intra-snippet graph: the snippet cut into this "
                           "many sub-clips of snippet_frames / sub_clips frames, chained 0-1-2-3 (paper: 4)")
    reverse_equivalent: bool = Field(
        False, description="3 order classes, a permutation and its reverse being one (ours: a probe sweep can run "
        "either way); false: the paper's 3! = 6")
    tuples_per_epoch: int = Field(1024, ge=2, le=MAX_PER_EPOCH, description="snippet tuples drawn per epoch")
    temperature: float = Field(0.5, ge=1e-3, le=100, description="GRACE temperature τ (paper: 0.5)")
    feature_mask_p: float = Field(0.1, ge=0, lt=1, description="second view: feature columns zeroed with "
                                  "this probability (paper: 0.1)")
    edge_drop_p: float = Field(0.2, ge=0, le=1, description="second view: each edge dropped with this "
                               "probability, self-loops kept (paper: 0.2)")
    in_batch_negatives: bool = Field(
        False, description="GRACE negatives from every node of the batch's graphs (ours: a graph has only 3-4 "
        "nodes); false: only the other nodes of the same graph, both views (the paper)")
    graph_dim: int | None = Field(None, ge=8, description="GCN output and projection width; null: the encoder's "
                                  "out_dim (paper: 512)")
    order_hidden: int = Field(512, ge=8, description="hidden layer of the order head (paper: 512)")
    order_dropout: float = Field(0.5, ge=0, lt=1, description="dropout before the order classifier (paper: 0.5)")
    se_reduction: int = Field(6, ge=1, description="SE gate: squeeze to concatenated width / this (paper: 6)")
    intra_weight: float = Field(1.0, ge=0, description="weight of mean(L_intra) over the snippets (paper: 1)")
    inter_weight: float = Field(1.0, ge=0, description="weight of L_inter (paper: 1)")
    order_weight: float = Field(1.0, ge=0, description="weight of L_order (paper: 1)")

    @model_validator(mode="after")
    def _check(self) -> "TCGLConfig":
        if self.snippet_frames % self.sub_clips:
            raise ValueError(f"snippet_frames ({self.snippet_frames}) must be a multiple of sub_clips "
                             f"({self.sub_clips}): the snippet is cut into equal sub-clips")
        if self.intra_weight == self.inter_weight == self.order_weight == 0:
            raise ValueError("intra_weight, inter_weight and order_weight are all 0: nothing to learn")
        return self


METHOD_SETTINGS: dict[str, type[Strict]] = {
    "video_speech": VideoSpeechConfig,  # Jiao et al., MICCAI 2020
    "order_transform": OrderTransformConfig,  # Jiao et al., ISBI 2020
    "cvrl": CVRLConfig,  # Qian et al., CVPR 2021
    "frame_contrastive": FrameContrastiveConfig,  # SimCLR frames for ContraCAM (Mo et al., NeurIPS 2021)
    "tcgl": TCGLConfig,  # Liu et al., IEEE TIP 2022
}
"""``pretrain.method`` → its settings class (also the ``pretrain.<method>`` key of those settings)."""

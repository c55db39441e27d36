"""Cross-modal video–speech contrastive pretraining.

Jiao, Cai, Alsharid, Drukker, Papageorghiou, Noble. *Self-supervised Contrastive Video-Speech
Representation Learning for Ultrasound.* MICCAI 2020. A frame encoder and a spectrogram encoder
(same family, separate weights) are trained so that a frame and the sonographer's speech at that
moment embed close together and apart from the other pairs of the batch.

L = α·L_cls + β·L_cont + γ·L_ord (paper Sec. 2.3, α = β = γ = 1):

- L_cont: the hard-negative contrastive loss of Eq. 2 in a numerically safe form, with the hard
  positive (same interval, another time) as a second positive
  (``self_paced.video_speech_contrastive``; default ``infonce_hard``), or the symmetric InfoNCE;
- L_cls: cross-entropy of a 2-way "do these correspond?" classifier on the concatenated projected
  embeddings: (v, s) and (v, s⁺) are positives (half an example each, ours), (v, s') with s' the
  hard negative the negative;
- L_ord: 4-frame order prediction, 12 classes, on a clip from any interval of any training scan
  (video only), from grid-pooled frame features through a pairwise-difference head
  (``methods/order_heads.py``).

The cross-modal terms count only high-affinity pairs (the paper's gate, ``self_paced: gate``): a
low-affinity pair has weight 0 and (in the hard forms) its speech is no negative of the others; the
dataset draws a share ``speech.low_affinity_share`` of such pairs, which still feed L_ord. ``none``
counts every sampled pair (the ablation without affinity); ``spl_*`` admits pairs in order of
affinity × easiness, a fraction of the batch that grows every epoch (our extension). Each level's share of
L_cont is logged (``contrastive_high``, ``contrastive_low``).

    >>> module = VideoSpeechModule(cfg.stage("pretrain"), audio_rate=16000)
    >>> loss = module.training_step(batch, 0)   # logs train/contrastive, cls, order_ce, pace…
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from usssl.config import PretrainConfig
from usssl.engine.optim import configure_optimization
from usssl.data.augment import ClipAugment
from usssl.methods.losses import info_nce
from usssl.methods.order import sample_orders, shuffle_frames
from usssl.methods.order_heads import PairwiseOrderHead, frame_grid_features, map_channels
from usssl.methods.self_paced import SelfPacedWeights, video_speech_contrastive
from usssl.models.encoders import build_encoder, build_speech_encoder
from usssl.models.heads import mlp
from usssl.speech.frontend import LogSpectrogram


ORDER_FRAMES = 4  # the paper's order task: 4 frames, 4!/2 = 12 classes


class _Resample(nn.Module):
    """(B, N) at ``rate`` → (B, N') at ``target`` (identity when equal)."""

    def __init__(self, rate: int, target: int) -> None:
        super().__init__()
        self.rate, self.target = rate, target

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if self.rate == self.target:
            return audio
        import torchaudio.functional as AF

        return AF.resample(audio, self.rate, self.target)


class VideoSpeechModule(L.LightningModule):
    """Video encoder + speech encoder + projection heads, trained with gated InfoNCE.

    Args:
        cfg: the pretrain stage's config.
        audio_rate: sample rate of the cached audio in Hz.

    Attributes:
        encoder: the video encoder that transfers downstream, ``(B, C, T, H, W) -> (B, D)``.
    """

    def __init__(self, cfg: PretrainConfig, audio_rate: int) -> None:
        super().__init__()
        self.save_hyperparameters({"cfg": cfg.model_dump(mode="json"), "audio_rate": audio_rate})
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder)
        sp = cfg.speech
        if sp.encoder in ("wav2vec2", "hubert"):  # raw 16 kHz audio in, pooled embedding out
            from usssl.speech.pretrained import load_speech_model

            self.speech_encoder = load_speech_model(sp.encoder, sp.pretrained_path, freeze=sp.freeze)
            self.frontend = _Resample(audio_rate, 16000)
        else:
            self.speech_encoder = build_speech_encoder(sp.encoder, cfg.encoder.width, cfg.encoder.dim)
            self.frontend = LogSpectrogram(audio_rate, sp.n_fft, sp.win_ms, sp.hop_ms, sp.spec_size,
                                           resample_to=sp.resample_to)
        self.video_head = mlp(self.encoder.out_dim, self.encoder.out_dim, cfg.projection_dim, batch_norm=False)
        self.speech_head = mlp(self.speech_encoder.out_dim, self.speech_encoder.out_dim, cfg.projection_dim, batch_norm=False)
        self.augment = ClipAugment() if cfg.augment else None
        vs = cfg.video_speech
        d = cfg.projection_dim
        # fusion of g_v and g_s → "do these correspond?" (L_cls)
        self.correspondence = mlp(2 * d, d, 2, batch_norm=False)
        grid = vs.order_grid
        feature_dim = map_channels(self.encoder, "pretrain.video_speech.order_grid") * grid**2 if grid \
            else self.encoder.out_dim
        self.order_head = PairwiseOrderHead(feature_dim, ORDER_FRAMES, vs.order_branch_dim, vs.order_pairs)  # 12 classes
        self.pacer = SelfPacedWeights(vs.pace_start_fraction, vs.pace_growth,
                                      "linear" if vs.self_paced == "spl_linear" else "hard")

    def _standardise(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) in [0, 1] → augmented (training) and roughly standardised."""
        if self.training and self.augment is not None:
            video = self.augment(video)
        return (video - 0.5) / 0.25

    def embed_speech(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, n_samples) → projected speech embedding (B, projection_dim)."""
        return self.speech_head(self.speech_encoder(self.frontend(audio)))

    def embed(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected video and speech embeddings, each (B, projection_dim)."""
        z_video = self.video_head(self.encoder(self._standardise(batch["video"])))
        return z_video, self.embed_speech(batch["audio"])

    def order_loss(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L_ord on (B, 1, 4, H, W) clips in time order: shuffle, encode each frame, classify."""
        perms, labels = sample_orders(clip.shape[0], ORDER_FRAMES, device=clip.device)
        shuffled = shuffle_frames(self._standardise(clip), perms)  # (B, 1, 4, H, W)
        logits = self.order_head(frame_grid_features(self.encoder, shuffled, self.cfg.video_speech.order_grid))
        return F.cross_entropy(logits, labels), (logits.argmax(1) == labels).float().mean()

    def pair_weights(self, per_pair: torch.Tensor, affinity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) per-pair weights of the cross-modal terms and (B,) the high-affinity gate.

        gate: the gate itself (the paper); none: 1 for every pair; spl_*: the pacer on affinity × easiness.
        """
        gate = (affinity >= self.cfg.speech.affinity_threshold).to(per_pair.dtype)  # (B,) the paper's gate
        mode = self.cfg.video_speech.self_paced
        if mode == "gate":
            return gate, gate
        if mode == "none":
            return torch.ones_like(gate), gate
        return self.pacer(per_pair.detach(), affinity), gate

    def correspondence_loss(self, z_video, z_speech, z_pos, z_neg, weight, neg_valid) -> torch.Tensor:
        """L_cls: (v, s) and (v, s⁺) labelled 1 (half an example each), (v, s') labelled 0; weighted mean."""
        pairs = torch.cat([torch.cat([z_video, z], 1) for z in (z_speech, z_pos, z_neg)])  # (3B, 2d)
        ce = F.cross_entropy(self.correspondence(pairs), torch.cat([torch.ones(2 * len(weight)),
                             torch.zeros(len(weight))]).long().to(z_video.device), reduction="none")
        ce_s, ce_pos, ce_neg = ce.view(3, -1)  # (B,) each
        per_row = 0.5 * (ce_s + ce_pos) + neg_valid * ce_neg
        return (weight * per_row).sum() / (weight * (1 + neg_valid)).sum().clamp_min(1e-8)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        vs = self.cfg.video_speech
        z_video, z_speech = self.embed(batch)  # (B, d) each
        size = z_video.shape[0]
        affinity = batch["affinity"]
        neg_valid = batch.get("hard_neg_valid", torch.ones(size, device=z_video.device)).to(z_video.dtype)
        hard = vs.contrastive != "infonce"
        z_pos = self.embed_speech(batch["audio_hard_pos"]) if hard or vs.alpha > 0 else None
        z_neg = self.embed_speech(batch["audio_hard_neg"]) if hard or vs.alpha > 0 else None
        keep = (affinity >= self.cfg.speech.affinity_threshold) if vs.self_paced == "gate" else None
        if vs.contrastive == "infonce":
            per_pair = info_nce(z_video, z_speech, self.cfg.temperature, reduction="none")
        else:
            per_pair = video_speech_contrastive(z_video, z_speech, z_neg, vs.contrastive, self.cfg.temperature,
                                                vs.normalize, y_pos=z_pos, neg_valid=neg_valid, keep=keep)
        weight, gate = self.pair_weights(per_pair, affinity)
        norm = weight.sum().clamp_min(1e-8)
        contrastive = (per_pair * weight).sum() / norm
        loss = vs.beta * contrastive
        terms = {"contrastive": contrastive}
        with torch.no_grad():  # what each affinity level contributed to L_cont (they sum to it)
            terms["contrastive_high"] = (per_pair * weight * gate).sum() / norm
            terms["contrastive_low"] = (per_pair * weight * (1 - gate)).sum() / norm
        if vs.alpha > 0:
            terms["cls"] = self.correspondence_loss(z_video, z_speech, z_pos, z_neg, weight, neg_valid)
            loss = loss + vs.alpha * terms["cls"]
        if vs.gamma > 0 and "order_clip" in batch:  # video-only, every interval
            terms["order_ce"], terms["order_acc"] = self.order_loss(batch["order_clip"])
            loss = loss + vs.gamma * terms["order_ce"]
        with torch.no_grad():
            terms["embedding_std"] = F.normalize(z_video, dim=-1).std(dim=0).mean()
            terms["affinity_high"] = gate.mean()
            terms["pairs_admitted"] = (weight > 0).float().mean()
            terms["pace"] = self.pacer.pace
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        for name, value in terms.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=size)
        return loss

    def on_train_epoch_end(self) -> None:
        if self.cfg.video_speech.self_paced.startswith("spl"):
            self.pacer.step_epoch()

    def configure_optimizers(self) -> dict:
        return configure_optimization(self.parameters(), self.cfg.optimizer)


def make_dataset(cache, shards: list[str], split: str | None, cfg: PretrainConfig, seed: int):
    """(AudioVisualDataset of ``shards``, data metrics): the registry's dataset for this method."""
    from usssl.data.datasets import AudioVisualDataset

    sp = cfg.speech
    dataset = AudioVisualDataset(cache, shards, split=split, window_s=sp.window_s,
                                 interval_frames=sp.interval_frames,
                                 affinity_threshold=sp.affinity_threshold,
                                 pairs_per_epoch=cfg.pairs_per_epoch, pairs_per_interval=sp.pairs_per_interval,
                                 hard_negative_range=sp.hard_negative_range, seed=seed,
                                 order_frames=4 if cfg.video_speech.gamma > 0 else 0,
                                 order_stride=cfg.video_speech.order_stride, vad=sp.vad,
                                 low_affinity_share=sp.low_affinity_share)
    metrics = {"data/high_affinity_interval_fraction": dataset.n_high_affinity / max(dataset.n_intervals, 1),
               "data/low_affinity_pair_share": dataset.low_share,
               "data/n_speech_frames": sum(s.frames.size for s in dataset.speech)}
    return dataset, metrics


def make_module(cfg: PretrainConfig, cache) -> VideoSpeechModule:
    """The registry's LightningModule for this method (speech at the cache's audio rate)."""
    return VideoSpeechModule(cfg, audio_rate=int(cache.settings["audio_rate"]))

"""Cross-modal video–speech contrastive pretraining.

Jiao, Cai, Alsharid, Drukker, Papageorghiou, Noble. *Self-supervised Contrastive Video-Speech
Representation Learning for Ultrasound.* MICCAI 2020. A frame encoder and a spectrogram encoder
(same family, separate weights) are trained so that a frame and the sonographer's speech at that
moment embed close together and apart from the other pairs of the batch.

This first version uses the symmetric InfoNCE (``losses.info_nce``) with temperature on projected,
L2-normalised embeddings, gated by affinity (only pairs from high-affinity intervals contribute,
the paper's two-level gate). The paper's Eq. 2 with a hard negative, the correspondence classifier
(L_cls) and the order task (L_ord) come with the pretraining-methods issue.

    >>> module = VideoSpeechModule(cfg.stage("pretrain"), audio_rate=16000)
    >>> out = module.training_step(batch, 0)          # logs train/contrastive, train/affinity_high…
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from usssl.config import PretrainConfig
from usssl.engine.optim import configure_optimization
from usssl.data.transforms import ClipAugment
from usssl.methods.losses import info_nce
from usssl.models.encoders import build_encoder, build_speech_encoder
from usssl.speech.frontend import LogSpectrogram


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


def projection_head(in_dim: int, out_dim: int) -> nn.Module:
    """MLP projection h: one hidden layer with a nonlinearity (the paper's head)."""
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))


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
        self.video_head = projection_head(self.encoder.out_dim, cfg.projection_dim)
        self.speech_head = projection_head(self.speech_encoder.out_dim, cfg.projection_dim)
        self.augment = ClipAugment() if cfg.augment else None

    def embed(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected video and speech embeddings, each (B, projection_dim)."""
        video = batch["video"]  # (B, C, T, H, W) in [0, 1]
        if self.training and self.augment is not None:
            video = self.augment(video)
        video = (video - 0.5) / 0.25  # roughly standardised
        spec = self.frontend(batch["audio"])  # (B, 1, F, T'), or (B, N) 16 kHz for wav2vec2/HuBERT
        return self.video_head(self.encoder(video)), self.speech_head(self.speech_encoder(spec))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        z_video, z_speech = self.embed(batch)
        gate = (batch["affinity"] >= self.cfg.speech.affinity_threshold).float()  # (B,)
        contrastive = info_nce(z_video, z_speech, self.cfg.temperature, weight=gate)
        loss = contrastive  # the cls and order terms join here in the methods issue
        with torch.no_grad():
            emb_std = torch.nn.functional.normalize(z_video, dim=-1).std(dim=0).mean()
        size = batch["video"].shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train/contrastive", contrastive, on_step=True, on_epoch=True, batch_size=size)
        self.log("train/affinity_high", gate.mean(), on_step=True, on_epoch=True, batch_size=size)
        self.log("train/embedding_std", emb_std, on_step=True, on_epoch=True, batch_size=size)
        return loss

    def configure_optimizers(self) -> dict:
        return configure_optimization(self.parameters(), self.cfg.optimizer)

"""The saliency network: an encoder's feature map and a small upsampling map decoder.

    >>> model = SaliencyModel(build_encoder(EncoderConfig()), freeze_encoder=True)
    >>> model(torch.rand(2, 1, 1, 32, 32)).sum(dim=(1, 2))   # tensor([1., 1.])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SaliencyModel(nn.Module):
    """Encoder ``feature_map`` + a small upsampling decoder → a saliency map at the input size.

    Decoder: 1×1 conv to ``channels``, ``blocks`` × [bilinear ×2, 3×3 conv, ReLU], 1×1 conv to one
    logit per pixel, bilinear resize to (H, W), softmax over the H·W pixels. The papers replace
    the network's last layers by "a 2-D map decoder" without details; this one is ours.

    Args:
        encoder: a video encoder with ``feature_map(x: (B, C, T, H, W)) -> (B, C', h, w)``.
        channels: decoder width.
        blocks: ×2 upsampling blocks.
        freeze_encoder: train the decoder only (the encoder stays in eval mode, no gradients).

    Example:
        >>> model = SaliencyModel(build_encoder(EncoderConfig()), freeze_encoder=True)
        >>> model(torch.rand(2, 1, 1, 32, 32)).sum(dim=(1, 2))   # tensor([1., 1.])
    """

    def __init__(self, encoder: nn.Module, channels: int = 32, blocks: int = 2, freeze_encoder: bool = True) -> None:
        super().__init__()
        if not hasattr(encoder, "feature_map"):
            raise TypeError(f"{type(encoder).__name__} has no feature_map(x) -> (B, C', h, w)")
        self.encoder, self.freeze_encoder = encoder, freeze_encoder
        was_training = encoder.training
        with torch.no_grad():  # C' of the feature map, from a dry run in eval mode (BN stats untouched)
            c_feat = encoder.eval().feature_map(torch.zeros(1, 1, 1, 64, 64)).shape[1]
        encoder.train(was_training)
        layers: list[nn.Module] = [nn.Conv2d(c_feat, channels, 1), nn.ReLU(inplace=True)]
        for _ in range(blocks):
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.decoder = nn.Sequential(*layers, nn.Conv2d(channels, 1, 1))
        if freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> SaliencyModel:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # a frozen encoder keeps its BatchNorm statistics
        return self

    def log_saliency(self, video: torch.Tensor) -> torch.Tensor:
        """video: (B, C, T, H, W) in [0, 1] → log-probabilities over pixels (B, H, W)."""
        b, h, w = video.shape[0], video.shape[-2], video.shape[-1]
        fmap = self.encoder.feature_map((video - 0.5) / 0.25)  # (B, C', h', w'); frozen: no graph kept
        logits = F.interpolate(self.decoder(fmap), size=(h, w), mode="bilinear", align_corners=False)  # (B, 1, H, W)
        return torch.log_softmax(logits.view(b, h * w), dim=1).view(b, h, w)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video: (B, C, T, H, W) in [0, 1] → (B, H, W) non-negative, summing to 1 per item."""
        return self.log_saliency(video).exp()

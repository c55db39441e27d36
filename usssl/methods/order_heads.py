"""Frame-order heads on per-frame grid features, for the order pretexts of both Jiao et al. papers.

Each frame of an n-frame clip is encoded on its own; its feature is the encoder's last feature map
average-pooled to a ``grid`` × ``grid`` map and flattened (``frame_grid_features``), so it keeps
where the anatomy is: the global average pool is nearly blind to the few-pixel probe motion that
orders the frames (measured in ``methods/order_transform.py``: with it the order task stays near
chance). ``PairwiseOrderHead`` maps each frame's feature through one shared branch, then every
frame pair (i < j) through one shared layer on [g_i − g_j, |g_i − g_j|] (after Lee et al., ICCV
2017, pairwise features; the differences are ours), and classifies the concatenated pair features
into the n!/2 order classes (``methods/order.py``).

    >>> head = PairwiseOrderHead(feature_dim=map_channels(encoder) * 4**2, n_frames=4, hidden=256)
    >>> logits = head(frame_grid_features(encoder, shuffled_clip, grid=4))   # (B, 12)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from usssl.errors import ConfigError
from usssl.methods.order import order_classes
from usssl.models.heads import mlp


def map_channels(encoder: nn.Module, key: str = "order_grid") -> int:
    """Channels of ``encoder.feature_map`` (one dry run on a blank 64 × 64 frame, in eval mode).

    Raises:
        ConfigError: the encoder has no ``feature_map`` (``key`` names the setting that needs it).
    """
    if not hasattr(encoder, "feature_map"):
        raise ConfigError(f"{key} needs an encoder with feature_map(); set it to 0 to use the pooled output")
    was_training = encoder.training
    with torch.no_grad():
        channels = encoder.eval().feature_map(torch.zeros(1, 1, 1, 64, 64)).shape[1]
    encoder.train(was_training)
    return channels


def frame_grid_features(encoder: nn.Module, clip: torch.Tensor, grid: int) -> torch.Tensor:
    """clip (B, C, T, H, W) → per-frame features (B, T, C'·g²): each frame's last feature map pooled to
    g × g and flattened (``grid`` 0: the encoder's pooled output per frame, (B, T, D))."""
    b, c, t, h, w = clip.shape
    frames = clip.permute(0, 2, 1, 3, 4).reshape(b * t, c, 1, h, w)  # (B·T, C, 1, H, W)
    if not grid:
        return encoder(frames).view(b, t, -1)  # (B, T, D)
    fmap = F.adaptive_avg_pool2d(encoder.feature_map(frames), grid)  # (B·T, C', g, g)
    return fmap.reshape(b, t, -1)


class PairwiseOrderHead(nn.Module):
    """Per-frame features (B, n, F) in clip position order → order logits (B, n!/2).

    Args:
        feature_dim: F, the per-frame feature size.
        n_frames: n, frames per clip.
        hidden: width of the branch, the pair layer and the classifier's hidden layer.
        pairs: every frame pair through the shared pair layer; false: the n branch outputs concatenated.
    """

    def __init__(self, feature_dim: int, n_frames: int, hidden: int = 256, pairs: bool = True) -> None:
        super().__init__()
        self.pairs = [(i, j) for i in range(n_frames) for j in range(i + 1, n_frames)] if pairs else []
        self.branch = mlp(feature_dim, hidden)  # shared by every frame
        if self.pairs:
            self.pair_fc = mlp(2 * hidden, hidden, batch_norm=False)
        self.classifier = mlp((len(self.pairs) or n_frames) * hidden, hidden, len(order_classes(n_frames)))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        b, n, _ = feats.shape
        g = self.branch(feats.reshape(b * n, -1)).view(b, n, -1)  # (B, n, h)
        if self.pairs:
            i, j = (torch.tensor(k, device=g.device) for k in zip(*self.pairs))
            diff = g[:, i] - g[:, j]  # (B, P, h)
            g = self.pair_fc(torch.cat([diff, diff.abs()], dim=2))  # (B, P, h)
        return self.classifier(g.reshape(b, -1))

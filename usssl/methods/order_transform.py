"""Anatomy-aware pretext: clip order prediction + affine transform regression.

Jiao, Droste, Drukker, Papageorghiou, Noble. *Self-supervised Representation Learning for
Ultrasound Video.* ISBI 2020. From a clip of n frames (paper: 4, every 8th frame):

- **order**: the frames are shuffled and the network classifies the permutation into n!/2
  classes (a permutation and its reverse are one class, ``methods/order.py``); L_ord is the
  cross-entropy;
- **transform**: one affine τ (translation, scale, rotation, shear; ``methods/affine.py``) is
  applied to the whole clip and the network regresses τ's parameters from τ(clip) together with
  the untransformed clip; L_trans = ‖τ̂ − τ‖ on range-normalised parameters (l1 or squared l2:
  the paper states neither the norm nor the ranges);
- L = w_ord · L_ord + w_trans · L_trans (paper: weights 1).

Variants (the paper names them; the split of weights is ours, as the paper does not give it):

- ``siamese``: two branches sharing the ``encoder``, each with its own layers on top — the order
  branch sees the shuffled clip, the transform branch the original and the transformed clip;
- ``disentangled``: one clip is shuffled *and* transformed; a single network sees it with its
  untransformed (equally shuffled) copy and predicts both the order and τ from one fused feature.
  The copy is shuffled the same way so that order cannot be read off by matching frames.

Order features: with ``fusion: frames`` each frame is encoded on its own and the per-frame
features are concatenated in clip order (after Lee et al., ICCV 2017; any 2-D encoder works);
with ``fusion: clip`` a 3-D encoder sees the whole clip. In the Siamese order branch each frame's
feature is the encoder's last feature map pooled to an ``order_grid`` × ``order_grid`` map and
flattened (ours; Lee et al.'s AlexNet fc6 keeps position the same way): the global average pool
is nearly blind to the few-pixel probe motion between frames, and with it the order task stays
at chance although the shortest pixel path through the 4 frames orders 90% of the clips (stride
4 at 15 fps on the synthetic corpus). With ``order_pairs`` the order head sees every frame pair
through one shared layer before the classifier, like Lee et al.'s pairwise feature extraction,
but on [g_i − g_j, |g_i − g_j|] instead of [g_i, g_j] (ours): how far apart two frames are, the
cue that orders a clip, is then given rather than learned. On frozen random-init grid features a
head on concatenated pairs reaches 11% held-out order accuracy after 400 steps, one on
differences 56% (chance 8%). The module draws the permutation and τ itself, so any
dataset of ``video`` clips works (``data/clips.py: ClipDataset``).

    >>> module = OrderTransformModule(cfg.stage("pretrain"))
    >>> loss = module.training_step({"video": clips}, 0)      # clips (B, 1, 4, H, W) in [0, 1]
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from usssl.data.augment import ClipAugment
from usssl.engine.optim import configure_optimization
from usssl.errors import ConfigError, DataError
from usssl.methods.affine import AffineRanges, apply_affine, centre_crop, normalise_params, sample_affine
from usssl.methods.order import order_classes, sample_orders, shuffle_frames
from usssl.models.encoders import FrameEncoder, build_encoder
from usssl.models.heads import mlp


class OrderTransformModule(L.LightningModule):
    """Order classification + transform regression on a shared encoder.

    Args:
        cfg: the pretrain stage's config (``.encoder``, ``.optimizer``, ``.augment``,
            ``.order_transform``).
        encoder: optional encoder ``(B, C, T, H, W) -> (B, D)`` to use instead of
            ``build_encoder(cfg.encoder)``.

    Attributes:
        encoder: the encoder that transfers downstream.
    """

    def __init__(self, cfg, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.save_hyperparameters({"cfg": cfg.model_dump(mode="json")})
        self.cfg, ot = cfg, cfg.order_transform
        self.ot = ot
        self.encoder = encoder if encoder is not None else build_encoder(cfg.encoder)
        if ot.fusion == "clip" and isinstance(self.encoder, FrameEncoder):
            raise ConfigError("pretrain.order_transform.fusion: 'clip' needs a 3-D encoder (a 2-D encoder averages "
                              "frames and cannot see their order); use fusion: frames or a 3-D encoder")
        self.ranges = AffineRanges.from_config(ot)
        self.n_classes = len(order_classes(ot.clip_frames))
        d, h, n = self.encoder.out_dim, ot.branch_dim, ot.clip_frames
        self.grid = ot.order_grid if ot.fusion == "frames" and ot.variant == "siamese" else 0
        f = self._map_channels() * self.grid**2 if self.grid else d  # per-frame order feature size
        pairs = ot.fusion == "frames" and ot.order_pairs
        self.pairs = [(i, j) for i in range(n) for j in range(i + 1, n)] if pairs else []
        if self.pairs:  # one shared layer on every frame pair [g_i − g_j, |g_i − g_j|], i < j
            self.pair_fc = mlp(2 * h, h, batch_norm=False)
        order_in = (len(self.pairs) or n) * h if ot.fusion == "frames" else h
        if ot.variant == "siamese":
            self.order_branch = mlp(f, h)  # per frame (or per clip)
            self.transform_branch = mlp(2 * d, h)  # [f(clip), f(τ clip)]
        else:
            self.joint = mlp(2 * d, h)  # [f(x), f(τ x)], shared by both heads
        self.order_head = mlp(order_in, h, self.n_classes)
        self.transform_head = nn.Linear(h, len(self.ranges.bounds()[0]))
        self.augment = ClipAugment() if cfg.augment else None

    # ---------------------------------------------------------------- features
    def _map_channels(self) -> int:
        """Channels of the encoder's last feature map (one dry run on a blank frame, in eval mode)."""
        if not hasattr(self.encoder, "feature_map"):
            raise ConfigError("pretrain.order_transform.order_grid needs an encoder with feature_map(); "
                              "set order_grid: 0 to use its pooled output")
        was_training = self.encoder.training
        with torch.no_grad():
            channels = self.encoder.eval().feature_map(torch.zeros(1, 1, 1, 64, 64)).shape[1]
        self.encoder.train(was_training)
        return channels

    def _frame_grids(self, clips: list[torch.Tensor]) -> list[torch.Tensor]:
        """One pass over all clips (B, C, T, H, W) → per clip (B, T, C'·g²): each frame's feature map
        average-pooled to g × g and flattened."""
        x = torch.cat(clips, dim=0)  # (k·B, C, T, H, W)
        kb, c, t, hh, ww = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(kb * t, c, 1, hh, ww)  # (k·B·T, C, 1, H, W)
        grid = F.adaptive_avg_pool2d(self.encoder.feature_map(frames), self.grid)  # (k·B·T, C', g, g)
        return list(grid.reshape(kb, t, -1).chunk(len(clips), dim=0))

    def _encode(self, clips: list[torch.Tensor], per_frame: bool) -> list[torch.Tensor]:
        """One encoder pass over all clips (B, C, T, H, W) → per clip (B, T, D) or (B, D)."""
        x = torch.cat(clips, dim=0)  # (k·B, C, T, H, W)
        if per_frame:
            kb, c, t, hh, ww = x.shape
            frames = x.permute(0, 2, 1, 3, 4).reshape(kb * t, c, 1, hh, ww)  # (k·B·T, C, 1, H, W)
            feats = self.encoder(frames).view(kb, t, -1)  # (k·B, T, D)
        else:
            feats = self.encoder(x)  # (k·B, D)
        return list(feats.chunk(len(clips), dim=0))

    def _order_logits(self, g: torch.Tensor) -> torch.Tensor:
        """Per-frame order features (B, n, h) in clip position order → logits (B, n!/2): through every
        frame pair (B, n(n−1)/2, h) when ``order_pairs``, else all frames concatenated (B, n·h)."""
        if self.pairs:
            i, j = (torch.tensor(k, device=g.device) for k in zip(*self.pairs))
            diff = g[:, i] - g[:, j]  # (B, P, h)
            g = self.pair_fc(torch.cat([diff, diff.abs()], dim=2))  # (B, P, h)
        return self.order_head(g.reshape(g.shape[0], -1))

    def tasks(self, clip: torch.Tensor, perms: torch.Tensor, params: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both predictions for given draws.

        Args:
            clip: (B, C, n, H, W) standardised clip in its true order.
            perms: (B, n) frame permutations (``order.sample_orders``).
            params: (B, 5) affine parameters (``affine.sample_affine``).

        Returns:
            order logits (B, n!/2), normalised parameter predictions (B, 5), and the clip-level
            encoder features (B, D) of the untransformed clip (for embedding health).
        """
        frames = self.ot.fusion == "frames"
        b, n = clip.shape[0], clip.shape[2]
        shuffled = shuffle_frames(clip, perms)
        if self.ot.variant == "siamese" and self.grid:
            moved = apply_affine(clip, params)
            (f_shuf,) = self._frame_grids([centre_crop(shuffled, self.ot.crop)])  # (B, n, C'·g²)
            f_orig, f_moved = self._encode([centre_crop(v, self.ot.crop) for v in (clip, moved)], True)
            order_feat = self.order_branch(f_shuf.reshape(b * n, -1)).view(b, n, -1)  # (B, n, h)
            f_orig, f_moved = f_orig.mean(1), f_moved.mean(1)
            trans_feat = self.transform_branch(torch.cat([f_orig, f_moved], dim=1))  # (B, h)
            return self._order_logits(order_feat), self.transform_head(trans_feat), f_orig
        if self.ot.variant == "siamese":
            moved = apply_affine(clip, params)
            f_shuf, f_orig, f_moved = self._encode([centre_crop(v, self.ot.crop) for v in (shuffled, clip, moved)],
                                                   frames)
            if frames:  # (B, T, D): order per frame, transform on the time average
                order_logits = self._order_logits(self.order_branch(f_shuf.reshape(b * n, -1)).view(b, n, -1))
                f_orig, f_moved = f_orig.mean(1), f_moved.mean(1)
            else:
                order_logits = self.order_head(self.order_branch(f_shuf))  # (B, h) → (B, n!/2)
            trans_feat = self.transform_branch(torch.cat([f_orig, f_moved], dim=1))  # (B, h)
            return order_logits, self.transform_head(trans_feat), f_orig
        moved = apply_affine(shuffled, params)
        f_x, f_moved = self._encode([centre_crop(v, self.ot.crop) for v in (shuffled, moved)], frames)
        if frames:  # one fused feature per frame pair (x_t, τ x_t)
            g = self.joint(torch.cat([f_x, f_moved], dim=2).reshape(b * n, -1)).view(b, n, -1)  # (B, n, h)
            return self._order_logits(g), self.transform_head(g.mean(1)), f_x.mean(1)
        g = self.joint(torch.cat([f_x, f_moved], dim=1))  # (B, h)
        return self.order_head(g), self.transform_head(g), f_x

    # ---------------------------------------------------------------- training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        video = batch["video"]  # (B, C, n, H, W) in [0, 1]
        if video.shape[2] != self.ot.clip_frames:
            raise DataError(f"clips have {video.shape[2]} frames but pretrain.order_transform.clip_frames is "
                            f"{self.ot.clip_frames}; build the dataset with the same clip_frames")
        if self.training and self.augment is not None:
            video = self.augment(video)  # one draw per clip, before the pretext draws
        clip = (video - 0.5) / 0.25  # roughly standardised
        b = clip.shape[0]
        perms, labels = sample_orders(b, self.ot.clip_frames, device=clip.device)
        params = sample_affine(b, self.ranges, device=clip.device)
        logits, pred, feats = self.tasks(clip, perms, params)
        order_ce = F.cross_entropy(logits, labels)
        target = normalise_params(params, self.ranges)  # (B, 5) in [−1, 1]
        diff = pred - target
        transform_reg = diff.abs().mean() if self.ot.loss_norm == "l1" else diff.pow(2).mean()
        loss = self.ot.order_weight * order_ce + self.ot.transform_weight * transform_reg
        with torch.no_grad():
            order_acc = (logits.argmax(1) == labels).float().mean()
            emb_std = F.normalize(feats, dim=-1).std(dim=0).mean()
        for name, value in (("loss", loss), ("order_ce", order_ce), ("order_acc", order_acc),
                            ("transform_reg", transform_reg), ("embedding_std", emb_std)):
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, prog_bar=name == "loss", batch_size=b)
        return loss

    def configure_optimizers(self) -> dict:
        return configure_optimization(self.parameters(), self.cfg.optimizer)


def make_dataset(cache, shards: list[str], split: str | None, cfg, seed: int):
    """(ClipDataset of ``shards``, no data metrics): the registry's dataset for this method."""
    from usssl.data.clips import ClipDataset

    ot = cfg.order_transform
    return ClipDataset(cache, shards, split, clip_frames=ot.clip_frames, stride=ot.frame_stride,
                       clips_per_epoch=cfg.pairs_per_epoch or 2048, seed=seed), {}


def make_module(cfg, cache) -> OrderTransformModule:
    """The registry's LightningModule for this method."""
    return OrderTransformModule(cfg)

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

Variants (the paper names them; their layers are ours, as the paper gives none):

- ``siamese``: "two branches with partly shared weights". The encoder's stem and first
  ``shared_depth`` stages (default: all but the last) are one trunk; the order branch continues
  through the encoder's own later stages and sees the shuffled clip; the transform branch has its
  own copy of those stages (``transform_tail``) and sees the original and the transformed clip.
  **What transfers** is ``encoder``: the shared trunk plus the order branch's own stages, exactly
  the network the order branch runs; the transform branch's copy is discarded with the heads.
  With ``order_grid`` > 0 the order branch reads the map before the encoder's last linear layer
  (the tiny encoders' ``fc``; the paper backbones have none), which then keeps its random
  initialisation in the transferred encoder (the transform branch trains its own copy).
- ``disentangled``: one clip is shuffled *and* transformed; one network (the whole encoder) reads
  the order from it and τ from it together with its untransformed, equally shuffled copy (so that
  order cannot be read off by matching frames); ``encoder`` is that network.

Both variants have the same heads, so they differ only in what is shared and what each task sees:
per-frame order features are the last feature map average-pooled to ``order_grid`` ×
``order_grid`` and flattened (ours; Lee et al.'s AlexNet fc6 keeps position the same way), one
``order_branch`` layer per frame, then the order head; τ is regressed by ``transform_branch`` and
``transform_head`` from [f(x), f(τ x)], the pooled encoder outputs averaged over frames.

Order features: with ``fusion: frames`` each frame is encoded on its own and the per-frame
features are kept in clip order (after Lee et al., ICCV 2017; any 2-D encoder works; a shuffled
clip's per-frame features are the original's, permuted, so they are computed once); with
``fusion: clip`` a 3-D encoder sees the whole clip. The global average pool is nearly blind to the
few-pixel probe motion between frames: with it the order task stays at chance although the
shortest pixel path through the 4 frames orders 90% of the clips (stride 4 at 15 fps on the
synthetic corpus), hence the grid. With ``order_pairs`` the order head sees every frame pair
through one shared layer before the classifier, like Lee et al.'s pairwise feature extraction,
but on [g_i − g_j, |g_i − g_j|] instead of [g_i, g_j] (ours): how far apart two frames are, the
cue that orders a clip, is then given rather than learned. On frozen random-init grid features a
head on concatenated pairs reaches 11% held-out order accuracy after 400 steps, one on
differences 56% (chance 8%).

Border: τ(clip) is zero-padded, and its black corners alone would give τ away; by default
(``border: mask``) every view is zeroed outside the region that every τ in the ranges fills
(``affine.valid_region``), the same fixed region for every clip, so a blank clip looks the same
under every τ. The module draws the permutation and τ itself, so any dataset of ``video`` clips
works (``data/clips.py: ClipDataset``).

    >>> module = OrderTransformModule(cfg.stage("pretrain"))
    >>> loss = module.training_step({"video": clips}, 0)      # clips (B, 1, 4, H, W) in [0, 1]
"""

from __future__ import annotations

import copy

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from usssl.data.augment import ClipAugment
from usssl.engine.optim import configure_optimization
from usssl.errors import ConfigError, DataError
from usssl.methods.affine import (AffineRanges, apply_affine, centre_crop, normalise_params, sample_affine,
                                  valid_region)
from usssl.methods.encoder_split import pooled, split_encoder, to_map
from usssl.methods.order import order_classes, sample_orders, shuffle_frames
from usssl.models.encoders import FrameEncoder, build_encoder
from usssl.models.heads import mlp


class OrderTransformModule(L.LightningModule):
    """Order classification + transform regression on a (partly) shared encoder.

    Args:
        cfg: the pretrain stage's config (``.encoder``, ``.optimizer``, ``.augment``,
            ``.order_transform``).
        encoder: optional encoder ``(B, C, T, H, W) -> (B, D)`` to use instead of
            ``build_encoder(cfg.encoder)``.

    Attributes:
        encoder: the encoder that transfers downstream (Siamese: the shared trunk + the order
            branch's own stages).
        shared_depth: stages after the stem both branches share (all of them when disentangled).
        transform_tail, transform_fc: Siamese only, the transform branch's own copy of the
            encoder's stages after ``shared_depth`` and of its last linear layer.
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
        self.parts = split_encoder(self.encoder)  # the encoder's own modules (not registered twice)
        n_stages = len(self.parts.stages)
        depth = n_stages if ot.variant == "disentangled" else (
            n_stages - 1 if ot.shared_depth is None else ot.shared_depth)
        if depth > n_stages:
            raise ConfigError(f"pretrain.order_transform.shared_depth: {depth} is more than the encoder's {n_stages} "
                              f"stages; set at most {n_stages} ({n_stages} shares the whole encoder)")
        self.shared_depth = depth
        if ot.variant == "siamese" and depth < n_stages:  # the transform branch's own later stages
            self.transform_tail = copy.deepcopy(nn.Sequential(*self.parts.stages[depth:]))
            self.transform_fc = copy.deepcopy(self.parts.fc)
        self.ranges = AffineRanges.from_config(ot)
        self.n_classes = len(order_classes(ot.clip_frames))
        d, h, n = self.encoder.out_dim, ot.branch_dim, ot.clip_frames
        self.grid = ot.order_grid
        f = self._map_channels() * self.grid**2 if self.grid else d  # per-frame (or per-clip) order feature size
        pairs = ot.fusion == "frames" and ot.order_pairs
        self.pairs = [(i, j) for i in range(n) for j in range(i + 1, n)] if pairs else []
        if self.pairs:  # one shared layer on every frame pair [g_i − g_j, |g_i − g_j|], i < j
            self.pair_fc = mlp(2 * h, h, batch_norm=False)
        order_in = (len(self.pairs) or n) * h if ot.fusion == "frames" else h
        self.order_branch = mlp(f, h)  # per frame (or per clip)
        self.transform_branch = mlp(2 * d, h)  # [f(x), f(τ x)]
        self.order_head = mlp(order_in, h, self.n_classes)
        self.transform_head = nn.Linear(h, len(self.ranges.bounds()[0]))
        self.augment = ClipAugment() if cfg.augment else None

    # ---------------------------------------------------------------- features
    def _map_channels(self) -> int:
        """Channels of the encoder's last feature map (one dry run on a blank frame, in eval mode)."""
        was_training = self.encoder.training
        with torch.no_grad():
            channels = self.encoder.eval().feature_map(torch.zeros(1, 1, 1, 64, 64)).shape[1]
        self.encoder.train(was_training)
        return channels

    def prepare(self, video: torch.Tensor) -> torch.Tensor:
        """A view (B, C, T, H, W) as the encoder sees it: zeroed outside ``affine.valid_region`` (``border:
        mask``), then centre-cropped to ``crop``."""
        if self.ot.border == "mask":
            video = video * valid_region(self.ranges, *video.shape[-2:]).to(video)
        return centre_crop(video, self.ot.crop)

    def _order_feature(self, fmap: torch.Tensor) -> torch.Tensor:
        """Last feature map (N, C', h, w) → order feature (N, C'·g²), or the pooled output (N, D) when g = 0."""
        if self.grid:
            return F.adaptive_avg_pool2d(fmap, self.grid).flatten(1)
        return pooled(self.parts, fmap)

    def _order_logits(self, g: torch.Tensor) -> torch.Tensor:
        """Per-frame order features (B, n, h) in clip position order → logits (B, n!/2): through every
        frame pair (B, n(n−1)/2, h) when ``order_pairs``, else all frames concatenated (B, n·h)."""
        if self.pairs:
            i, j = (torch.tensor(k, device=g.device) for k in zip(*self.pairs))
            diff = g[:, i] - g[:, j]  # (B, P, h)
            g = self.pair_fc(torch.cat([diff, diff.abs()], dim=2))  # (B, P, h)
        return self.order_head(g.reshape(g.shape[0], -1))

    def _transform_map(self, trunk: torch.Tensor) -> tuple[torch.Tensor, nn.Module]:
        """Siamese: the transform branch's last map of trunk features, and its linear layer (its own copies;
        the encoder's when the whole encoder is shared)."""
        if hasattr(self, "transform_tail"):
            return to_map(self.transform_tail(trunk)), self.transform_fc
        return to_map(trunk), self.parts.fc

    def tasks(self, clip: torch.Tensor, perms: torch.Tensor, params: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both predictions for given draws.

        Args:
            clip: (B, C, n, H, W) standardised clip in its true order.
            perms: (B, n) frame permutations (``order.sample_orders``).
            params: (B, 5) affine parameters (``affine.sample_affine``).

        Returns:
            order logits (B, n!/2), normalised parameter predictions (B, 5), and the encoder's
            clip-level features (B, D) of the order branch's input (for embedding health).
        """
        b, n = clip.shape[0], clip.shape[2]
        siamese, frames, parts = self.ot.variant == "siamese", self.ot.fusion == "frames", self.parts
        base = clip if siamese else shuffle_frames(clip, perms)  # the untransformed view
        views = [base, apply_affine(base, params)]  # the transform pair [x, τ x]
        if siamese and not frames:
            views.append(shuffle_frames(clip, perms))  # a 3-D order branch sees the shuffled clip itself
        x = torch.cat([self.prepare(v) for v in views], dim=0)  # (k·B, C, n, H, W)
        k = len(views)
        if frames:  # every frame on its own: (k·B·n, C, H, W), or (k·B·n, C, 1, H, W) for a 3-D encoder
            x = x.transpose(1, 2).reshape(k * b * n, x.shape[1], 1, *x.shape[-2:])
            x = x[:, :, 0] if parts.per_frame else x
        trunk = parts.run(parts.stem(x), 0, self.shared_depth)  # (k·B[·n], ...)
        per, depth, end = (b * n if frames else b), self.shared_depth, len(parts.stages)
        if siamese:  # order: the encoder's own later stages on the shuffled clip (frames: the original's
            # frames, reordered below); transform: its own copy on [x, τ x]
            order_map = to_map(parts.run(trunk[:per] if frames else trunk[2 * per:], depth, end))  # (per, C', h, w)
            t_map, t_fc = self._transform_map(trunk[: 2 * per])
        else:  # one network: the order from τ(shuffled clip), τ from both views
            t_map, t_fc = to_map(parts.run(trunk, depth, end)), parts.fc  # (2·per, C', h, w)
            order_map = t_map[per:]
        g = self.order_branch(self._order_feature(order_map))  # (per, h)
        feats = pooled(parts, order_map)  # (per, D)
        if frames:
            g = g.view(b, n, -1)
            if siamese:  # position t of the shuffled clip shows frame perms[t]
                g = torch.gather(g, 1, perms[:, :, None].expand_as(g))
            logits, feats = self._order_logits(g), feats.view(b, n, -1).mean(1)
        else:
            logits = self.order_head(g)
        t_feat = pooled(parts, t_map, t_fc)  # (2·per, D)
        if frames:
            t_feat = t_feat.view(2 * b, n, -1).mean(1)  # time average: (2B, D)
        f_x, f_moved = t_feat.chunk(2, dim=0)
        pred = self.transform_head(self.transform_branch(torch.cat([f_x, f_moved], dim=1)))  # (B, 5)
        return logits, pred, feats

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

"""Frame-level contrastive learning (SimCLR) with optional object-aware crops and background mixup.

Chen, Kornblith, Norouzi, Hinton. *A Simple Framework for Contrastive Learning of Visual
Representations.* ICML 2020: two augmented views of one image, an MLP projector, NT-Xent against
every other view of the global batch (``losses.nt_xent``, gathered with gradients). This is the
setting ContraCAM explains (Mo et al., NeurIPS 2021, METHODS.md §6; ``downstream/contracam.py``):
single cached frames (no time), the view augmentation of CVRL (``data/augment.py:
ContrastiveClipAugment`` on one-frame clips; ±25% intensity jitter, see ``CVRLConfig``).

With a folder of object maps (``objects_from``: the ``localise`` stage's ``objects/`` folder,
one ``<shard>.npz`` each with ``frames``, ``boxes`` and ``masks``) two options of Mo et al. apply
before the view augmentation (``data/object_aware.py``): ``object_crop`` crops each frame to its
ContraCAM box, ``bg_mixup`` replaces the query view's background by another frame's. Only frames
that have a map are drawn then.

The projector is saved in ``encoder.pt`` (``checkpoint_extras``) so ContraCAM can score with it.

    >>> module = FrameContrastiveModule(cfg.stage("pretrain"))
    >>> loss = module.training_step({"video": frames}, 0)            # frames (B, 1, 1, H, W)
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from usssl.data.augment import ContrastiveClipAugment
from usssl.data.splits import require_split
from usssl.engine.optim import configure_optimization
from usssl.errors import ConfigError
from usssl.methods.losses import nt_xent
from usssl.models.encoders import build_encoder
from usssl.models.heads import mlp


def load_object_maps(folder: str | Path, shard_id: str) -> dict[str, np.ndarray] | None:
    """The ``localise`` stage's object maps of one shard (``frames`` (n,), ``boxes`` (n, 4) px,
    ``masks`` (n, H, W) uint8 0–255), or None when the folder has none for it."""
    path = Path(folder) / f"{shard_id}.npz"
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in ("frames", "boxes", "masks")}


class FrameViewDataset(Dataset):
    """Single frames drawn uniformly from the shards (every ``stride``-th frame), labels unused.

    With ``objects_from`` only frames that have an object map are drawn, and each item also holds
    ``box`` (4,) float pixels and ``mask`` (1, H, W) float in [0, 1]. Draws are deterministic in
    (seed, epoch, index).
    """

    def __init__(self, cache, shard_ids: list[str], split: str | None = "train", stride: int = 1,
                 frames_per_epoch: int = 2048, seed: int = 0, objects_from: str | Path | None = None) -> None:
        require_split(cache, shard_ids, split)
        self.cache, self.seed, self.epoch, self.length = cache, seed, 0, frames_per_epoch
        self.subjects = sorted({cache.shard(s).subject for s in shard_ids})
        self.items: list[tuple[str, int, int]] = []  # (shard, frame, row in its object maps or -1)
        self.maps: dict[str, dict[str, np.ndarray]] = {}
        for shard_id in shard_ids:
            if objects_from is None:
                n = len(cache.shard(shard_id))
                self.items += [(shard_id, int(f), -1) for f in range(0, n, stride)]
                continue
            maps = load_object_maps(objects_from, shard_id)
            if maps is not None:
                self.maps[shard_id] = maps
                self.items += [(shard_id, int(f), row) for row, f in enumerate(maps["frames"])]
        if objects_from is not None and not self.items:
            raise ConfigError(f"pretrain.frame_contrastive.objects_from: {objects_from} holds no object maps "
                              "for the training recordings; run a localise stage first and point at its "
                              "objects/ folder")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length if self.items else 0

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        shard_id, frame, row = self.items[int(rng.integers(len(self.items)))]
        shard = self.cache.shard(shard_id)
        image = torch.from_numpy(np.array(shard.frames[frame], dtype=np.float32) / 255.0)
        item = {"video": image[None, None], "subject": torch.tensor(self.subjects.index(shard.subject)),
                "index": torch.tensor(index)}
        if row >= 0:
            maps = self.maps[shard_id]
            item["box"] = torch.as_tensor(maps["boxes"][row], dtype=torch.float32)
            item["mask"] = torch.from_numpy(maps["masks"][row].astype(np.float32) / 255.0)[None]
        return item


class FrameContrastiveModule(L.LightningModule):
    """Encoder + MLP projector trained with NT-Xent on two views of each frame.

    Args:
        cfg: the pretrain stage's config (``.encoder``, ``.optimizer``, ``.augment``,
            ``.projection_dim``, ``.frame_contrastive``).
        encoder: optional encoder ``(B, C, T, H, W) -> (B, D)`` instead of ``build_encoder(cfg.encoder)``.

    Attributes:
        encoder: the encoder that transfers downstream; head: the projector (kept for ContraCAM).
    """

    def __init__(self, cfg, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.save_hyperparameters({"cfg": cfg.model_dump(mode="json")})
        self.cfg, self.fc = cfg, cfg.frame_contrastive
        self.encoder = encoder if encoder is not None else build_encoder(cfg.encoder)
        self.head_dims = (self.encoder.out_dim, self.fc.head_hidden_dim or self.encoder.out_dim,
                          cfg.projection_dim, self.fc.head_layers)
        self.head = mlp(*self.head_dims[:3], layers=self.head_dims[3])
        self.augment = ContrastiveClipAugment.from_config(self.fc) if cfg.augment else None
        self.mixup = None
        if self.fc.bg_mixup:
            from usssl.data.object_aware import BackgroundMixup

            self.mixup = BackgroundMixup(self.fc.bg_threshold, self.fc.bg_p, self.fc.bg_queue)

    def views(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views (B, 1, 1, H, W) of the batch's frames: object crop, mixup, then augmentation."""
        frames = batch["video"][:, :, 0]  # (B, 1, H, W)
        mask = batch.get("mask")
        if self.fc.object_crop and "box" in batch:
            from usssl.data.object_aware import crop_to_boxes

            if mask is None:
                frames = crop_to_boxes(frames, batch["box"])
            else:
                frames, mask = crop_to_boxes(frames, batch["box"], mask)
        query = frames
        if self.mixup is not None and mask is not None and self.training:
            query = self.mixup(frames, mask)
        a, b = query[:, :, None], frames[:, :, None]
        if self.training and self.augment is not None:
            a, b = self.augment(a), self.augment(b)  # independent draws
        return a, b

    def project(self, video: torch.Tensor) -> torch.Tensor:
        """(N, 1, T, H, W) in [0, 1] → projections (N, projection_dim) (not normalised)."""
        return self.head(self.encoder((video - 0.5) / 0.25))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        a, b = self.views(batch)
        z_a, z_b = self.project(torch.cat([a, b], dim=0)).chunk(2, dim=0)  # one encoder pass
        loss = nt_xent(z_a, z_b, self.fc.temperature)
        with torch.no_grad():
            na, nb = F.normalize(z_a, dim=-1), F.normalize(z_b, dim=-1)
            positive, emb_std = (na * nb).sum(-1).mean(), na.std(dim=0).mean()
        for name, value in (("loss", loss), ("nt_xent", loss), ("positive_cosine", positive),
                            ("embedding_std", emb_std)):
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, prog_bar=name == "loss",
                     batch_size=z_a.shape[0])
        return loss

    def checkpoint_extras(self) -> dict:
        """What ``encoder.pt`` keeps beside the encoder: the projector and its shape (for ContraCAM)."""
        return {"projector": self.head.state_dict(), "projector_dims": list(self.head_dims)}

    def configure_optimizers(self) -> dict:
        return configure_optimization(self.parameters(), self.cfg.optimizer)


def projector_from_meta(meta: dict) -> nn.Module | None:
    """The projector saved by ``checkpoint_extras`` in an encoder checkpoint's meta, or None."""
    if "projector" not in meta:
        return None
    in_dim, hidden, out_dim, layers = meta["projector_dims"]
    head = mlp(in_dim, hidden, out_dim, layers=layers)
    head.load_state_dict(meta["projector"])
    return head


def make_dataset(cache, shards: list[str], split: str | None, cfg, seed: int):
    """(FrameViewDataset of ``shards``, no data metrics): the registry's dataset for this method."""
    fc = cfg.frame_contrastive
    return FrameViewDataset(cache, shards, split, stride=fc.frame_stride, frames_per_epoch=fc.frames_per_epoch,
                            seed=seed, objects_from=fc.objects_from), {}


def make_module(cfg, cache) -> FrameContrastiveModule:
    """The registry's LightningModule for this method."""
    return FrameContrastiveModule(cfg)

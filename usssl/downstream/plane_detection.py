"""Standard-plane detection: label fractions, linear probe and fine-tuning of a transferred encoder.

Both protocols produce the same model shape, a ``PlaneClassifier`` (encoder + one linear layer),
so evaluation treats them alike:

- ``linear``: the encoder is frozen; features of the labelled frames are computed once and a
  class-weighted logistic regression is fitted on standardised features (the standardisation is
  then folded into the linear layer).
- ``finetune``: encoder and head train together with class-balanced sampling (Lightning).

Label fractions are nested (the 10% subset is inside the 100% set) and keep at least one frame of
every class, as in the label-efficiency protocol of METHODS.md §3.

    >>> idx = label_fraction_indices(labels, 0.1, seed=0)
    >>> model = fit_linear_probe(encoder, train_set, n_classes=7)
"""

from __future__ import annotations

import copy
import math

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from usssl.data.augment import ClipAugment
from usssl.downstream.metrics import classification_scores
from usssl.engine.optim import configure_optimization


def label_fraction_indices(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Nested per-class subset: ``ceil(fraction · n_c)`` (at least 1) frames of each class c.

    The per-class order is one seeded permutation, independent of ``fraction``, so smaller
    fractions are subsets of larger ones.

    Args:
        labels: (N,) class index per frame.
        fraction: in (0, 1].

    Returns:
        sorted (M,) positions into ``labels``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    chosen = []
    for c in np.unique(labels):
        members = order[labels[order] == c]  # this class, in the seeded order
        chosen.append(members[: max(1, math.ceil(fraction * members.size))])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


class PlaneClassifier(L.LightningModule):
    """Encoder + linear head over ``n_classes`` planes; ``freeze_encoder`` for the linear protocol.

    Args:
        encoder: ``(B, C, T, H, W) -> (B, D)`` with ``out_dim``.
        n_classes: number of classes (planes + background).
        optimizer: an ``OptimizerConfig`` (used by ``finetune``).
        class_weights: optional (n_classes,) weights for the cross-entropy.
        encoder_lr_scale: the encoder's learning rate is the head's times this.
        augment: apply the protocol's augmentation (``ClipAugment``) to training batches.
    """

    def __init__(self, encoder: nn.Module, n_classes: int, optimizer=None, freeze_encoder: bool = False,
                 class_weights: torch.Tensor | None = None, encoder_lr_scale: float = 1.0,
                 augment: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, n_classes)
        self.optimizer_cfg = optimizer
        self.freeze_encoder = freeze_encoder
        self.encoder_lr_scale = encoder_lr_scale
        self.augment = ClipAugment() if augment else None
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.ones(n_classes))
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video: (B, C, T, H, W) in [0, 1] → logits (B, n_classes)."""
        return self.head(self.encoder((video - 0.5) / 0.25))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.freeze_encoder:
            self.encoder.eval()
        video = batch["video"]
        if self.augment is not None:
            video = self.augment(video)
        logits = self(video)
        loss = F.cross_entropy(logits, batch["label"], weight=self.class_weights)
        acc = (logits.argmax(dim=1) == batch["label"]).float().mean()
        size = batch["video"].shape[0]
        self.log("train/ce", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train/accuracy", acc, on_step=True, on_epoch=True, batch_size=size)
        return loss

    def configure_optimizers(self) -> dict:
        groups = [{"params": list(self.head.parameters())}]
        if not self.freeze_encoder:
            groups.append({"params": list(self.encoder.parameters()),
                           "lr": self.optimizer_cfg.lr * self.encoder_lr_scale})
        return configure_optimization(groups, self.optimizer_cfg)


@torch.no_grad()
def extract_features(encoder: nn.Module, dataset: Dataset, batch_size: int = 128) -> torch.Tensor:
    """(N, D) embeddings of every item of ``dataset`` (encoder in eval mode)."""
    encoder.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    feats = [encoder((batch["video"] - 0.5) / 0.25) for batch in loader]
    return torch.cat(feats) if feats else torch.zeros(0, encoder.out_dim)


@torch.no_grad()
def predict(model: PlaneClassifier, dataset: Dataset, batch_size: int = 128) -> np.ndarray:
    """(N, n_classes) softmax probabilities for every item of ``dataset``."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    probs = [torch.softmax(model(batch["video"]), dim=1) for batch in loader]
    return torch.cat(probs).numpy() if probs else np.zeros((0, model.head.out_features))


def balanced_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """(n_classes,) inverse-frequency weights, mean 1 over the classes present."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    w = w / w[counts > 0].mean()
    return torch.tensor(w, dtype=torch.float32)


def macro_f1(model: nn.Module, dataset: Dataset, labels: np.ndarray, n_classes: int) -> float:
    """Macro F1 of ``model``'s predictions on ``dataset`` (``usssl.downstream.metrics``'s rule)."""
    return classification_scores(labels, predict(model, dataset).argmax(1), n_classes)["f1"]


def fit_linear_probe(encoder: nn.Module, dataset: Dataset, labels: np.ndarray, n_classes: int,
                     epochs: int = 100, lr: float = 0.05, weight_decay: float = 1e-4, seed: int = 0,
                     val: tuple[Dataset, np.ndarray] | None = None, eval_every: int = 10) -> PlaneClassifier:
    """Logistic regression on frozen, standardised features (full batch, Adam).

    With ``val`` (a dataset and its labels, from validation subjects) the head is scored every
    ``eval_every`` epochs and the one with the best validation macro F1 is kept (early stopping
    on validation, never on test).

    Returns a ``PlaneClassifier`` whose head has the standardisation folded in, so it runs on
    raw encoder features like a fine-tuned model; ``model.selection`` is ``{"epoch", "val_f1"}``
    (val_f1 NaN without ``val``); ``model.curves`` maps ``train/ce`` (every epoch) and ``val/macro_f1``
    (in %, every ``eval_every`` epochs) to ``[(epoch, value), ...]``.
    """
    torch.manual_seed(seed)
    feats = extract_features(encoder, dataset)  # (N, D)
    mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)
    x = (feats - mean) / std
    y = torch.as_tensor(labels, dtype=torch.long)
    weights = balanced_weights(labels, n_classes)
    head = nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    x_val = None if val is None or len(val[1]) == 0 else (extract_features(encoder, val[0]) - mean) / std
    best = {"epoch": epochs, "val_f1": float("nan")}
    best_state = None
    curves: dict[str, list[tuple[int, float]]] = {"train/ce": [], "val/macro_f1": []}
    for epoch in range(1, epochs + 1):
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y, weight=weights)
        loss.backward()
        opt.step()
        curves["train/ce"].append((epoch, float(loss.detach())))
        if x_val is not None and (epoch % eval_every == 0 or epoch == epochs):
            with torch.no_grad():
                f1 = classification_scores(val[1], head(x_val).argmax(1).numpy(), n_classes)["f1"]
            curves["val/macro_f1"].append((epoch, 100 * f1))
            if best_state is None or f1 > best["val_f1"]:
                best, best_state = {"epoch": epoch, "val_f1": f1}, copy.deepcopy(head.state_dict())
    if best_state is not None:
        head.load_state_dict(best_state)
    model = PlaneClassifier(encoder, n_classes, freeze_encoder=True)
    model.selection, model.curves = best, {k: v for k, v in curves.items() if v}
    with torch.no_grad():  # W·((f − μ)/σ) + b  =  (W/σ)·f + (b − W·μ/σ)
        model.head.weight.copy_(head.weight / std)
        model.head.bias.copy_(head.bias - (head.weight * (mean / std)).sum(1))
    return model


class KeepBestOnValidation(L.Callback):
    """Early stopping on validation for the ``finetune`` protocol: after every training epoch the
    model is scored on the validation subjects (macro F1) and, at the end of training, the weights
    of the best epoch are restored. ``selection`` is then ``{"epoch", "val_f1"}``; ``history`` holds
    every epoch's ``(epoch, val_f1)``.

    Args:
        dataset, labels: validation frames and their classes; n_classes: classes.
    """

    def __init__(self, dataset: Dataset, labels: np.ndarray, n_classes: int) -> None:
        self.dataset, self.labels, self.n_classes = dataset, labels, n_classes
        self.selection = {"epoch": 0, "val_f1": float("nan")}
        self.history: list[tuple[int, float]] = []
        self.best_state: dict | None = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        f1 = macro_f1(pl_module, self.dataset, self.labels, self.n_classes)
        pl_module.train()
        self.history.append((trainer.current_epoch + 1, f1))
        if self.best_state is None or f1 > self.selection["val_f1"]:
            self.selection = {"epoch": trainer.current_epoch + 1, "val_f1": f1}
            self.best_state = copy.deepcopy(pl_module.state_dict())

    def on_train_end(self, trainer, pl_module) -> None:
        if self.best_state is not None:
            pl_module.load_state_dict(self.best_state)


def epoch_weights(labels: np.ndarray, background: int | None = None) -> np.ndarray:
    """(N,) sampling weights for a class-balanced epoch (Droste et al., IPMI 2019).

    Every plane class present is drawn equally often; when ``background`` is a class index, one
    background image is drawn per plane image, so half an epoch is background. Without a
    background class every class present is drawn equally.
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]  # each class present gets total mass 1
    planes = [c for c in np.unique(labels) if c != background]
    if background is not None and (labels == background).any() and planes:
        weights = np.where(labels == background, weights * len(planes), weights)  # background mass = all planes
    return weights / weights.sum()


def balanced_loader(dataset: Dataset, labels: np.ndarray, batch_size: int, samples_per_epoch: int,
                    seed: int = 0, background: int | None = None) -> DataLoader:
    """A loader of ``samples_per_epoch`` class-balanced draws (with replacement; see ``epoch_weights``)."""
    weights = epoch_weights(labels, background)
    sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), samples_per_epoch,
                                    replacement=True, generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=False)


class KNNClassifier(nn.Module):
    """k-nearest-neighbour vote on frozen, L2-normalised encoder features (the ``knn`` protocol).

    The k most cosine-similar labelled frames vote with weight exp(s / τ) (Wu et al., CVPR 2018);
    ``forward`` returns the log of the normalised votes, so ``softmax`` gives class probabilities
    and the model plugs into ``predict`` and export like a ``PlaneClassifier``.

    Args:
        encoder: ``(B, C, T, H, W) -> (B, D)``.
        bank: (N, D) features of the labelled frames; bank_labels: (N,) their classes.
        n_classes: classes; k: neighbours; temperature: τ of the vote weights.
    """

    def __init__(self, encoder: nn.Module, bank: torch.Tensor, bank_labels: torch.Tensor, n_classes: int,
                 k: int = 20, temperature: float = 0.07) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"knn: k must be >= 1, got {k}")
        self.encoder, self.n_classes, self.k, self.temperature = encoder, n_classes, k, temperature
        self.register_buffer("bank", F.normalize(bank.float(), dim=1))
        self.register_buffer("bank_labels", bank_labels.long())

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video: (B, C, T, H, W) in [0, 1] → log vote fractions (B, n_classes)."""
        query = F.normalize(self.encoder((video - 0.5) / 0.25), dim=1)
        sim = query @ self.bank.T  # (B, N)
        top, idx = sim.topk(min(self.k, self.bank.shape[0]), dim=1)  # (B, k)
        votes = torch.zeros(query.shape[0], self.n_classes, device=query.device)
        votes.scatter_add_(1, self.bank_labels[idx], torch.exp(top / self.temperature))
        return torch.log(votes / votes.sum(1, keepdim=True) + 1e-12)


def fit_knn(encoder: nn.Module, dataset: Dataset, labels: np.ndarray, n_classes: int, k: int = 20,
            temperature: float = 0.07) -> KNNClassifier:
    """A ``KNNClassifier`` whose bank is the frozen features of ``dataset`` (no training)."""
    encoder.requires_grad_(False)
    feats = extract_features(encoder, dataset)
    return KNNClassifier(encoder, feats, torch.as_tensor(labels), n_classes, k, temperature)

"""The pieces of ``usssl compare`` that touch numbers: features encoded once and cached, the frozen
head chosen on validation, the structural frame-gap task, and rank correlation.

- :func:`cached_features`: an encoder's features of a dataset, stored as float16 under a key made of
  the encoder's weights digest (:func:`state_digest`) and the dataset's (cache digest, shards,
  frames): a second encoder × task cell with the same encoder and data reads them back;
- :func:`fit_head`: logistic regression on standardised features, for each learning rate of a grid,
  its epoch and rate chosen on **validation** macro F1. It receives no test data (structural: the
  caller scores test once with :func:`head_probs`);
- :func:`gap_pairs` / :func:`pair_features`: two frames of one recording, the label the index of the
  gap between them (labels that come free from time);
- :func:`spearman`: rank correlation with average ranks for ties.

    >>> head = fit_head(x_tr, y_tr, x_val, y_val, 3, [0.01, 0.03], epochs=100, eval_every=10, optimizer=opt)
    >>> head.selection
    {'lr': 0.03, 'epoch': 60, 'val_f1': 0.71, 'grid': {'0.01': 0.64, '0.03': 0.71}}
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from usssl.downstream.metrics import classification_scores
from usssl.engine.files import replace_atomic
from usssl.engine.optim import build_optimizer, build_scheduler


def state_digest(module: nn.Module) -> str:
    """sha256 hex of a module's weights and buffers (names, shapes, dtypes and bytes, sorted by name)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(json.dumps([name, list(t.shape), str(t.dtype)]).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def data_key(cache_digest: str, items: list[tuple[str, int]]) -> str:
    """sha256 hex of a dataset's identity: the cache's digest and its (shard, frame) items in order."""
    return hashlib.sha256(json.dumps([cache_digest, items]).encode()).hexdigest()


class CachedFrames(Dataset):
    """Every ``stride``-th cached frame of ``shards`` (labelled or not): ``{"video": (1, 1, H, W)}``."""

    def __init__(self, cache, shards: list[str], stride: int = 1) -> None:
        self.cache = cache
        self.items = [(s, int(f)) for s in shards for f in range(0, len(cache.shard(s).labels), stride)]
        self.subject_ids = np.array([cache.shard(s).subject for s, _ in self.items])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        shard, frame = self.items[index]
        image = np.array(self.cache.shard(shard).frames[frame], dtype=np.float32) / 255.0
        return {"video": torch.from_numpy(image)[None, None]}


def cached_features(folder: Path, encoder: nn.Module, encoder_digest: str, dataset, cache_digest: str,
                    batch_size: int = 128) -> np.ndarray:  # fmt: skip
    """(N, D) float32 features of ``dataset`` (``.items``: (shard, frame)) by ``encoder``, read from
    ``folder/<encoder>-<data>.npy`` (float16) when an earlier cell stored them, else computed and
    stored (atomically)."""
    from usssl.downstream.plane_detection import extract_features

    path = Path(folder) / f"{encoder_digest[:20]}-{data_key(cache_digest, dataset.items)[:20]}.npy"
    if path.is_file():
        return np.load(path).astype(np.float32)
    feats = extract_features(encoder, dataset, batch_size).numpy().astype(np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomic(path, lambda tmp: np.save(tmp, feats, allow_pickle=False))  # tmp ends in .npy
    return feats.astype(np.float32)


# ----------------------------------------------------------------------------- frame gap
def gap_pairs(lengths: dict[str, int], gaps: list[int], per_recording: int, seed: int) -> list[tuple[str, int, int, int]]:
    """(shard, frame a, frame b, gap class) pairs: per recording ``per_recording`` draws of a gap class
    and a start, ``b = a ± gaps[class]`` (the order is random, so only the gap's size is the label);
    a recording too short for a gap never draws it. ``lengths``: frames per shard, in the units of
    the feature rows (after any stride)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for shard in sorted(lengths):
        n = lengths[shard]
        usable = [c for c, g in enumerate(gaps) if g < n]
        for _ in range(per_recording if usable else 0):
            c = int(rng.choice(usable))
            a = int(rng.integers(0, n - gaps[c]))
            first, second = (a, a + gaps[c]) if rng.random() < 0.5 else (a + gaps[c], a)
            pairs.append((shard, first, second, c))
    return pairs


def pair_features(feats: np.ndarray, rows: dict[tuple[str, int], int], pairs) -> np.ndarray:
    """(P, 3D) features of ``pairs`` (from :func:`gap_pairs`): ``[f_a, f_b, |f_a − f_b|]``, with
    ``rows`` mapping (shard, position) to the row of ``feats``."""
    a = feats[[rows[(s, i)] for s, i, _, _ in pairs]]
    b = feats[[rows[(s, j)] for s, _, j, _ in pairs]]
    return np.concatenate([a, b, np.abs(a - b)], axis=1) if len(pairs) else np.zeros((0, 3 * feats.shape[1]))


# ----------------------------------------------------------------------------- the head
@dataclass
class Head:
    """A linear head on standardised features: ``softmax(((x − mean) / std) W^T + b)``."""

    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    selection: dict = field(default_factory=dict)


def head_probs(head: Head, x: np.ndarray) -> np.ndarray:
    """(N, C) probabilities of ``head`` on raw features ``x``."""
    z = (np.asarray(x, np.float64) - head.mean) / head.std @ head.weight.T + head.bias
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int,
             lr_grid: list[float], epochs: int, eval_every: int, optimizer, seed: int = 0) -> Head:  # fmt: skip
    """Class-balanced logistic regression (full batch) for each learning rate of ``lr_grid``, scored on
    validation every ``eval_every`` epochs; the (rate, epoch) with the best validation macro F1 wins
    (ties: the earlier rate, the earlier epoch). ``optimizer`` is an ``OptimizerConfig`` (its
    scheduler steps once per epoch; cosine anneals over ``epochs``)."""
    if len(y_val) == 0:
        raise ValueError("fit_head needs validation items: every choice is made on validation")
    x = torch.as_tensor(x_train, dtype=torch.float32)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    xv = (torch.as_tensor(x_val, dtype=torch.float32) - mean) / std
    from usssl.downstream.plane_detection import balanced_weights

    y = torch.as_tensor(y_train, dtype=torch.long)
    weights = balanced_weights(np.asarray(y_train, int), n_classes)  # the linear probe's class weights
    best: dict = {"val_f1": -1.0}
    grid: dict[str, float] = {}
    for lr in lr_grid:
        torch.manual_seed(seed)
        layer = nn.Linear(x.shape[1], n_classes)
        cfg = optimizer.model_copy(update={"lr": lr, "cosine_epochs": epochs})
        opt = build_optimizer(layer.parameters(), cfg)
        schedule = build_scheduler(opt, cfg)
        grid[f"{lr:g}"] = -1.0
        for epoch in range(1, epochs + 1):
            opt.zero_grad()
            F.cross_entropy(layer(x), y, weight=weights).backward()
            opt.step()
            if schedule is not None:
                schedule.step()
            if epoch % eval_every == 0 or epoch == epochs:
                with torch.no_grad():
                    f1 = classification_scores(y_val, layer(xv).argmax(1).numpy(), n_classes)["f1"]
                grid[f"{lr:g}"] = max(grid[f"{lr:g}"], f1)
                if f1 > best["val_f1"]:
                    best = {"lr": lr, "epoch": epoch, "val_f1": float(f1), "state": copy.deepcopy(layer.state_dict())}
    state = best.pop("state")
    return Head(state["weight"].numpy().astype(np.float64), state["bias"].numpy().astype(np.float64),
                mean.numpy().astype(np.float64), std.numpy().astype(np.float64), {**best, "grid": grid})  # fmt: skip


# ----------------------------------------------------------------------------- ranks
def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values`` (ascending), ties sharing their average rank."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: the Pearson correlation of the average ranks (NaN when either
    side is constant or fewer than 3 values)."""
    if len(a) < 3:
        return float("nan")
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")

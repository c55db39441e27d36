"""Gaze saliency: fixation maps from the cache's gaze, a map decoder on encoder features, KL training.

The protocol of Droste et al. (IPMI 2019), reused by both ultrasound papers (METHODS.md §3): the
ground truth of a frame is a sum of Gaussians at the sonographer's gaze points, normalised to sum
1; the transferred encoder's last layers are replaced by a 2-D map decoder trained with the
KL divergence; KL, CC, NSS, SIM and AUC-Judd are scored as the MIT benchmark defines them
(``usssl.downstream.saliency_metrics``). Baselines scored on the same frames: a centre-bias
Gaussian (its width fitted on the training split) and the uniform map.

The papers do not fix the gaze window, the decoder or the schedule: they are ``SaliencyConfig``
fields with small defaults.

    >>> cfg = SaliencyConfig(epochs=5, sigma_px=2.0)
    >>> summary = run_saliency(Cache("runs/demo/cache"), encoder, cfg, Path("runs/demo/saliency"))
    >>> summary["trained/kl"], summary["centre_bias/kl"]
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from usssl.config import SaliencyConfig
from usssl.data.cache import Cache
from usssl.data.saliency import SaliencyDataset, shard_sigma  # noqa: F401  (re-exported)
from usssl.downstream.saliency_metrics import kl_div, saliency_scores
from usssl.models.saliency import SaliencyModel  # noqa: F401  (re-exported)
from usssl.errors import DataError

log = logging.getLogger(__name__)

METRICS = ("kl", "cc", "nss", "sim", "auc_judd")
CENTRE_BIAS_FRACTIONS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)  # σ / image side, fitted on training maps


def kl_loss(log_pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(G ‖ S) = Σ G · (log G − log S); log_pred, gt: (B, H, W).

    The benchmark's KL without its ε: the log-softmax keeps S > 0 and 0 · log 0 is taken as 0.
    """
    return (torch.xlogy(gt, gt) - gt * log_pred).flatten(1).sum(dim=1).mean()


def train_saliency(model: SaliencyModel, dataset: Dataset, epochs: int = 5, lr: float = 1e-3,
                   batch_size: int = 16, weight_decay: float = 0.0, hflip: bool = False,
                   seed: int = 0, val: Dataset | None = None) -> list[float]:
    """Adam on ``kl_loss``; batch order and flips drawn from ``seed``. Returns each epoch's mean loss.

    ``hflip`` mirrors a random half of the frames left-right together with their ground truth. With
    ``val`` (frames of validation subjects) the model is scored (mean KL) after every epoch and the
    weights of the best epoch are restored at the end: the epoch count is chosen on validation;
    ``model.selection`` is then ``{"epoch", "val_kl"}``.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    flips = torch.Generator().manual_seed(seed + 1)
    model.train()
    history, best_state = [], None
    model.selection = {"epoch": epochs, "val_kl": float("nan")}
    for epoch in range(epochs):
        total, n = 0.0, 0
        for batch in loader:
            video, gt = batch["video"], batch["saliency"][:, 0]  # (B, C, T, H, W), (B, H, W)
            if hflip:
                flip = torch.rand(len(video), generator=flips) < 0.5  # (B,)
                video = torch.where(flip[:, None, None, None, None], video.flip(-1), video)
                gt = torch.where(flip[:, None, None], gt.flip(-1), gt)
            loss = kl_loss(model.log_saliency(video), gt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(batch["video"]), n + len(batch["video"])
        history.append(total / max(n, 1))
        log.info("saliency epoch %d/%d: KL %.4f", epoch + 1, epochs, history[-1])
        if val is not None and len(val):
            val_kl = float(evaluate_saliency(model, val)["kl"].mean())
            model.train()
            if best_state is None or val_kl < model.selection["val_kl"]:
                model.selection = {"epoch": epoch + 1, "val_kl": val_kl}
                best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


class CentreBias(nn.Module):
    """Baseline: one Gaussian at the image centre, σ = ``fraction`` × the image side (per axis)."""

    def __init__(self, fraction: float = 0.2) -> None:
        super().__init__()
        self.fraction = fraction

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video: (B, C, T, H, W) → (B, H, W) summing to 1 (the same map for every item)."""
        b, h, w = video.shape[0], video.shape[-2], video.shape[-1]
        ys = (torch.arange(h) - (h - 1) / 2) / (self.fraction * h)
        xs = (torch.arange(w) - (w - 1) / 2) / (self.fraction * w)
        g = torch.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2))  # (H, W)
        return (g / g.sum()).expand(b, h, w)


class UniformSaliency(nn.Module):
    """Baseline: the uniform map 1 / (H·W)."""

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video: (B, C, T, H, W) → (B, H, W) all 1 / (H·W)."""
        b, h, w = video.shape[0], video.shape[-2], video.shape[-1]
        return torch.full((b, h, w), 1.0 / (h * w))


def fit_centre_bias(dataset: Dataset, fractions: tuple[float, ...] = CENTRE_BIAS_FRACTIONS,
                    max_items: int = 256) -> CentreBias:
    """The ``CentreBias`` whose σ fraction has the lowest mean KL on (up to ``max_items``) maps of
    ``dataset`` — fit it on the training split."""
    idx = np.linspace(0, len(dataset) - 1, min(len(dataset), max_items)).round().astype(int)
    gts = [dataset[int(i)]["saliency"][0].numpy() for i in np.unique(idx)]
    video = torch.zeros(1, 1, 1, *gts[0].shape)
    kls = [np.mean([kl_div(CentreBias(f)(video)[0].numpy(), g) for g in gts]) for f in fractions]
    return CentreBias(fractions[int(np.argmin(kls))])


@torch.no_grad()
def evaluate_saliency(model: nn.Module, dataset: SaliencyDataset, batch_size: int = 32,
                      name: str = "trained") -> pd.DataFrame:
    """One row per frame: ``model`` (``name``), ``shard``, ``frame``, ``subject``, and KL, CC, NSS,
    SIM, AUC-Judd (``saliency_scores``) of the prediction against the frame's ground truth."""
    model.eval()
    rows = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        pred = model(batch["video"]).numpy()  # (B, H, W)
        for i, index in enumerate(batch["index"].tolist()):
            scores = saliency_scores(pred[i], batch["saliency"][i, 0].numpy(), batch["fixations"][i, 0].numpy())
            shard_id, frame = dataset.items[index]
            rows.append({"model": name, "shard": shard_id, "frame": frame,
                         "subject": dataset.cache.shard(shard_id).subject, **scores})
    return pd.DataFrame(rows, columns=["model", "shard", "frame", "subject", *METRICS])


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean of each metric per model over the frames, with ``n_frames``; one row per model."""
    summary = results.groupby("model", sort=False)[list(METRICS)].mean()
    return summary.assign(n_frames=results.groupby("model", sort=False).size()).reset_index()


@torch.no_grad()
def save_overlays(model: nn.Module, dataset: SaliencyDataset, out_dir: Path, n: int = 4) -> list[Path]:
    """``n`` test frames, evenly spread, as PNGs: frame | prediction | ground truth with gaze points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    paths = []
    for k, i in enumerate(np.unique(np.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().astype(int))):
        item = dataset[int(i)]
        frame = item["video"][0, item["video"].shape[1] // 2].numpy()  # (H, W)
        pred = model(item["video"][None])[0].numpy()
        gt, pts = item["saliency"][0].numpy(), item["points"].numpy()
        scores = saliency_scores(pred, gt, item["fixations"][0].numpy())
        shard_id, t = dataset.items[int(i)]
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
        panels = [("frame", None), (f"prediction (KL {scores['kl']:.2f}, CC {scores['cc']:.2f})", pred),
                  ("ground truth + gaze", gt)]
        for ax, (title, heat) in zip(axes, panels):
            ax.imshow(frame, cmap="gray", vmin=0, vmax=1)
            if heat is not None:
                ax.imshow(heat, cmap="jet", alpha=0.5)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        axes[2].scatter(pts[:, 0], pts[:, 1], s=12, c="white", edgecolors="black", linewidths=0.5)
        fig.suptitle(f"shard {shard_id} · frame {t}", fontsize=8)
        path = out_dir / f"saliency_overlay_{k:02d}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def run_saliency(cache: Cache | str | Path, encoder: nn.Module | Callable[[], nn.Module], cfg: SaliencyConfig,
                 out_dir: str | Path, seed: int = 0, model_meta: dict | None = None,
                 shards: dict[str, list[str]] | None = None) -> dict[str, float]:
    """Train a ``SaliencyModel`` on the training subjects (epochs chosen on the validation subjects when
    there are some), score it and the baselines once on the test subjects.

    Writes to ``out_dir``: ``saliency_results.csv`` (one row per test frame and model: trained,
    centre_bias, uniform), ``saliency_summary.csv`` (means per model) and ``saliency_overlay_XX.png``.

    Args:
        cache: the ingested cache (or its folder); its gaze must have been ingested.
        encoder: a transferred encoder (copied, never changed in place) or a factory returning one.
        cfg: the saliency settings.
        out_dir: output folder (created).
        seed: seeds the decoder's initialisation and the batch order.
        shards: {"train", "val", "test"} shard ids (a fold); None: the cache's train / test split,
            no validation.
        model_meta: when given (e.g. ``{"encoder_cfg": ...}``), the trained model is also saved as
            ``saliency_model.pt`` (state, decoder size, and this mapping) for export.

    Returns:
        ``{"<model>/<metric>": mean}`` for the three models and five metrics, plus
        ``n_train_frames``, ``n_test_frames`` and ``train_kl`` (the last epoch's training loss).
    """
    cache = cache if isinstance(cache, Cache) else Cache(cache)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if shards is None:
        train = SaliencyDataset.from_config(cache, cache.shard_ids("train"), cfg, split="train")
        test = SaliencyDataset.from_config(cache, cache.shard_ids("test"), cfg, split="test")
        val = None
    else:
        train, val, test = (SaliencyDataset.from_config(cache, shards.get(part, []), cfg) for part in ("train", "val", "test"))
    for split, ds in (("train", train), ("test", test)):
        if len(ds) == 0:
            raise DataError(f"{cache.root}: no {split} frame has gaze; saliency needs a gaze.csv at ingest "
                            "(columns video, frame, x, y beside the recordings)")
    torch.manual_seed(seed)
    enc = copy.deepcopy(encoder) if isinstance(encoder, nn.Module) else encoder()
    model = SaliencyModel(enc, cfg.decoder_channels, cfg.decoder_blocks, cfg.freeze_encoder)
    history = train_saliency(model, train, cfg.epochs, cfg.lr, cfg.batch_size, cfg.weight_decay, cfg.hflip, seed, val)
    baselines = {"centre_bias": fit_centre_bias(train), "uniform": UniformSaliency()}
    results = pd.concat([evaluate_saliency(m, test, name=name)
                         for name, m in {"trained": model, **baselines}.items()], ignore_index=True)
    summary = summarise(results)
    results.to_csv(out_dir / "saliency_results.csv", index=False)
    summary.to_csv(out_dir / "saliency_summary.csv", index=False)
    save_overlays(model, test, out_dir, cfg.n_overlays)
    if model_meta is not None:
        from usssl.downstream.checkpoint import save_saliency_model

        save_saliency_model(out_dir / "saliency_model.pt", model, cfg.decoder_channels, cfg.decoder_blocks,
                            cfg.clip_frames, **model_meta)
    log.info("saliency on %d test frames:\n%s", len(test), summary.to_string(index=False, float_format="%.3f"))
    out = {f"{row['model']}/{m}": float(row[m]) for _, row in summary.iterrows() for m in METRICS}
    return out | {"n_train_frames": float(len(train)), "n_test_frames": float(len(test)), "train_kl": history[-1],
                  "selected_epoch": float(model.selection["epoch"]), "val_kl": model.selection["val_kl"]}

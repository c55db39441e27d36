"""Checkpoints of fitted downstream models: each format written and read here, one pair per kind.

- **classifier** (``finetune/<tag>.pt``): a ``PlaneClassifier`` (linear or finetune protocol) or a
  ``KNNClassifier``, self-describing: ``{"model", "encoder_cfg", "classes", "protocol", ...}`` plus
  the manifest entry's fields, so ``evaluate`` and ``export`` rebuild it without the pipeline's config;
- **saliency model** (``saliency/<init>/saliency_model.pt``): a ``SaliencyModel`` with its decoder
  settings and the clip length it reads.

The encoder checkpoint (``pretrain/encoder.pt``) is ``usssl.models.checkpoint``.

    >>> save_classifier(path, model, enc_cfg, classes, protocol="linear", tag="random-linear-1")
    >>> model = load_classifier(path)              # in eval mode
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from usssl.config import EncoderConfig
from usssl.engine.files import save_atomic


def save_classifier(path: str | Path, model: nn.Module, encoder_cfg: EncoderConfig, classes: list[str],
                    **fields: Any) -> Path:
    """Write a fitted plane classifier; ``fields`` must hold ``protocol`` (and ``knn_k``,
    ``knn_temperature`` for knn) and may hold any JSON-like provenance (tag, fold, ...)."""
    assert "protocol" in fields, "a classifier checkpoint records its protocol"
    return save_atomic({"model": model.state_dict(), "encoder_cfg": encoder_cfg.model_dump(), "classes": classes,
                        **fields}, path)


def load_classifier(path: str | Path) -> nn.Module:
    """Rebuild a fitted model from its ``finetune/<tag>.pt`` file, in eval mode."""
    from usssl.downstream.plane_detection import KNNClassifier, PlaneClassifier
    from usssl.models.encoders import build_encoder

    saved = torch.load(path, map_location="cpu", weights_only=False)
    encoder = build_encoder(EncoderConfig(**saved["encoder_cfg"]))
    n_classes = len(saved["classes"])
    if saved["protocol"] == "knn":
        bank = saved["model"]["bank"]
        model = KNNClassifier(encoder, torch.zeros_like(bank), torch.zeros(bank.shape[0]), n_classes,
                              saved["knn_k"], saved["knn_temperature"])
    else:
        model = PlaneClassifier(encoder, n_classes, freeze_encoder=saved["protocol"] == "linear")
    model.load_state_dict(saved["model"])
    return model.eval()


def save_saliency_model(path: str | Path, model: nn.Module, channels: int, blocks: int, clip_frames: int,
                        **meta: Any) -> Path:
    """Write a trained ``SaliencyModel`` with its decoder settings (``meta``: encoder_cfg, init)."""
    return save_atomic({"model": model.state_dict(), "channels": channels, "blocks": blocks,
                        "clip_frames": clip_frames, **meta}, path)


def load_saliency_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """(the ``SaliencyModel`` in eval mode, everything saved with it) from ``path``."""
    from usssl.models.saliency import SaliencyModel
    from usssl.models.encoders import build_encoder

    saved = torch.load(path, map_location="cpu", weights_only=False)
    model = SaliencyModel(build_encoder(EncoderConfig(**saved["encoder_cfg"])), saved["channels"], saved["blocks"])
    model.load_state_dict(saved["model"])
    return model.eval(), saved

"""The encoder checkpoint: the one format a pretrained (or supervised reference) encoder is saved in.

A file holds ``{"encoder": state_dict, "encoder_cfg": EncoderConfig fields, **meta}`` (``meta``:
``method`` and ``name`` for a pretrain stage's ``encoder.pt``). It is written atomically and read
back strictly: a checkpoint that does not match its architecture is an error, never a silently
random encoder. Fitted downstream models (classifiers, saliency decoders) have their own pair in
``usssl.downstream.checkpoint``.

    >>> save_encoder(out / "encoder.pt", module.encoder, cfg.encoder, method="cvrl", name="cvrl")
    >>> encoder, enc_cfg, meta = load_encoder(out / "encoder.pt")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from usssl.config import EncoderConfig
from usssl.engine.files import save_atomic
from usssl.errors import DataError


def save_encoder(path: str | Path, encoder: nn.Module, encoder_cfg: EncoderConfig, **meta: Any) -> Path:
    """Write ``encoder``'s weights, its settings and ``meta`` to ``path`` (atomically)."""
    return save_atomic({"encoder": encoder.state_dict(), "encoder_cfg": encoder_cfg.model_dump(), **meta}, path)


def load_encoder(path: str | Path) -> tuple[nn.Module, EncoderConfig, dict[str, Any]]:
    """(encoder with the saved weights, its settings, the other saved fields) from ``path``.

    Raises:
        DataError: the file is not an encoder checkpoint, or its weights do not fit its settings
            (the message lists missing and unexpected keys).
    """
    from usssl.models.encoders import build_encoder

    saved = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(saved, dict) or "encoder" not in saved or "encoder_cfg" not in saved:
        raise DataError(f"{path}: not an encoder checkpoint (expected the keys 'encoder' and 'encoder_cfg')")
    enc_cfg = EncoderConfig(**saved["encoder_cfg"])
    encoder = build_encoder(enc_cfg)
    try:
        encoder.load_state_dict(saved["encoder"])  # strict: a mismatched checkpoint is an error
    except RuntimeError as exc:
        raise DataError(f"{path}: the weights do not fit encoder {enc_cfg.name!r}: {exc}") from None
    meta = {k: v for k, v in saved.items() if k not in ("encoder", "encoder_cfg")}
    return encoder, enc_cfg, meta

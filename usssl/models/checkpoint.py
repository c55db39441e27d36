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


def renamed_keys(state: dict[str, Any], key_map: dict[str, str]) -> dict[str, Any]:
    """``state`` with each key's first matching prefix of ``key_map`` replaced (longest prefix first;
    ``{"": "net."}`` prepends, ``{"module.": ""}`` strips a DataParallel prefix)."""
    prefixes = sorted(key_map, key=len, reverse=True)
    out = {}
    for key, value in state.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key_map[prefix] + key[len(prefix):]
                break
        out[key] = value
    return out


def load_foreign_encoder(path: str | Path, enc_cfg: EncoderConfig | None,
                         key_map: dict[str, str] | None = None) -> nn.Module:  # fmt: skip
    """An encoder from a checkpoint made elsewhere: a usssl ``encoder.pt`` (its own settings), or a
    plain state dict (``{"state_dict": ...}`` and ``{"model": ...}`` wrappers too) for the architecture
    ``enc_cfg`` with its keys renamed by ``key_map`` (:func:`renamed_keys`). Always strict.

    Raises:
        DataError: unreadable, no architecture for a plain state dict, or keys that do not fit (the
            message lists the missing and the unexpected keys, the first few of each).
    """
    from usssl.models.encoders import build_encoder

    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read this checkpoint ({exc})") from None
    if isinstance(saved, dict) and "encoder" in saved and "encoder_cfg" in saved and not key_map:
        return load_encoder(path)[0]
    for wrapper in ("state_dict", "model", "encoder"):
        if isinstance(saved, dict) and isinstance(saved.get(wrapper), dict):
            saved = saved[wrapper]
    if not isinstance(saved, dict) or not all(torch.is_tensor(v) for v in saved.values()):
        raise DataError(f"{path}: not a state dict of tensors (nor a usssl encoder.pt)")
    if enc_cfg is None:
        raise DataError(f"{path}: a plain state dict needs `architecture:` (the encoder settings it fits)")
    encoder = build_encoder(enc_cfg)
    state = renamed_keys(saved, key_map or {})
    expected = set(encoder.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise DataError(f"{path}: the weights do not fit encoder {enc_cfg.name!r} after key_map {key_map or {}}: "
                        f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. "
                        f"{unexpected[:3]}); fix key_map (key prefixes) or architecture")  # fmt: skip
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # the right keys with the wrong shapes
        raise DataError(f"{path}: the weights do not fit encoder {enc_cfg.name!r}: {exc}") from None
    return encoder

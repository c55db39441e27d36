"""Pretrained speech encoders (wav2vec2, HuBERT) loaded from a local directory, pooled to one vector.

Our extension to Jiao et al. (MICCAI 2020), who train their speech CNN from scratch. The weights
come from a directory written by ``transformers``' ``save_pretrained`` (``config.json`` plus
``model.safetensors`` or ``pytorch_model.bin``), named in the config. usssl never downloads:
loading uses ``local_files_only=True``, and a hub model name is an error that says how to fetch
the weights once on a connected machine.

wav2vec2: Baevski et al., NeurIPS 2020. HuBERT: Hsu et al., IEEE/ACM TASLP 2021.

    >>> enc = load_speech_model("hubert", "/models/hubert-base-ls960", freeze=2)
    >>> enc(torch.randn(4, 9600)).shape      # 16 kHz audio (B, N) -> (B, enc.out_dim)
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from usssl.errors import ConfigError

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("wav2vec2", "hubert")
_EXAMPLE = {"wav2vec2": "wav2vec2-base", "hubert": "hubert-base-ls960"}
RATE = 16000
"""Sample rate both model families were trained at."""

_HOW_TO = (
    "usssl never downloads weights. On a machine with internet access run once:\n"
    "    from transformers import AutoModel\n"
    "    AutoModel.from_pretrained({name!r}).save_pretrained('DIR')\n"
    "then copy DIR here and give its path in the config (speech model path)."
)


class PooledSpeechEncoder(nn.Module):
    """A transformers speech backbone whose last hidden states are averaged over time.

    Args:
        backbone: a ``Wav2Vec2Model`` or ``HubertModel``.
        normalize: standardise each waveform to zero mean / unit variance first, as the
            ``Wav2Vec2FeatureExtractor`` of the released base and large checkpoints does.

    Attributes:
        out_dim: embedding size D (the backbone's ``hidden_size``).
    """

    def __init__(self, backbone: nn.Module, normalize: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.normalize = normalize
        self.out_dim: int = int(backbone.config.hidden_size)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio: (B, N) float at 16 kHz → (B, D) mean of the last hidden states over time."""
        x = audio.float()
        if self.normalize:
            x = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1e-7)
        hidden = self.backbone(x).last_hidden_state  # (B, T', D)
        return hidden.mean(dim=1)  # (B, D)


def apply_freeze(model: PooledSpeechEncoder, freeze: bool | int) -> None:
    """Set ``requires_grad``: True freezes all, False none, an int N all but the top N layers.

    With ``do_stable_layer_norm`` (the large models) the encoder's final layer norm sits above the
    layers and is unfrozen with them.
    """
    backbone = model.backbone
    layers = backbone.encoder.layers
    if isinstance(freeze, bool):
        backbone.requires_grad_(not freeze)
        return
    if not isinstance(freeze, int) or not 0 <= freeze <= len(layers):
        raise ConfigError(
            f"speech model freeze must be true, false or a number of top layers to train "
            f"between 0 and {len(layers)}, got {freeze!r}"
        )
    backbone.requires_grad_(False)
    for layer in layers[len(layers) - freeze :]:
        layer.requires_grad_(True)
    if freeze > 0 and getattr(backbone.config, "do_stable_layer_norm", False):
        backbone.encoder.layer_norm.requires_grad_(True)


def _model_class(kind: str) -> type:
    try:
        from transformers import HubertModel, Wav2Vec2Model
    except ImportError as err:
        raise ConfigError(
            f"speech model {kind!r} needs the transformers package: `pip install transformers`"
        ) from err
    return {"wav2vec2": Wav2Vec2Model, "hubert": HubertModel}[kind]


def load_speech_model(
    kind: str,
    path: str | Path,
    freeze: bool | int = True,
    normalize: bool = True,
) -> PooledSpeechEncoder:
    """A wav2vec2 or HuBERT encoder ``(B, N) 16 kHz -> (B, D)`` from a local ``save_pretrained`` dir.

    SpecAugment-style time/feature masking and LayerDrop are switched off (our choice: the
    encoder embeds speech windows for contrastive learning, where random masking of the input
    would act as an undocumented augmentation).

    Args:
        kind: "wav2vec2" or "hubert"; must match the directory's ``config.json`` model type.
        path: directory holding ``config.json`` and the weights.
        freeze: True freezes all weights, False trains all, an int N trains the top N
            transformer layers only.
        normalize: standardise each waveform first (see :class:`PooledSpeechEncoder`).

    Returns:
        :class:`PooledSpeechEncoder` with ``out_dim``.

    Raises:
        ConfigError: unknown kind, a hub name or a missing directory, a directory of another model
            type, or transformers not installed.
    """
    if kind not in KINDS:
        raise ConfigError(f"speech model kind must be one of {', '.join(KINDS)}, got {kind!r}")
    directory = Path(path).expanduser()
    if not (directory / "config.json").is_file():
        what = ("does not exist" if not directory.exists() else
                "is not a directory" if not directory.is_dir() else "has no config.json")
        hub_like = not directory.exists() and re.fullmatch(r"[\w-][\w.-]*(/[\w.-]+)?", str(path))
        name = str(path) if hub_like else f"facebook/{_EXAMPLE[kind]}"
        raise ConfigError(
            f"speech model path {str(path)!r} {what}"
            + (" (it looks like a Hugging Face hub name)" if hub_like else "")
            + ". The weights must be in a local directory saved by transformers' save_pretrained. "
            + _HOW_TO.format(name=name)
        )
    cls = _model_class(kind)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    if config.model_type != kind:
        raise ConfigError(
            f"{directory / 'config.json'} describes a {config.model_type!r} model, "
            f"but the config asks for kind {kind!r}"
        )
    config.apply_spec_augment = False
    config.layerdrop = 0.0
    backbone = cls.from_pretrained(directory, config=config, local_files_only=True)
    model = PooledSpeechEncoder(backbone, normalize=normalize)
    apply_freeze(model, freeze)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("loaded %s from %s: D=%d, %d trainable parameters", kind, directory, model.out_dim, n_train)
    return model

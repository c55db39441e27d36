"""Self-supervised pretraining methods: one file per method, and the registry the pipeline reads.

Every method module exports

- ``make_dataset(cache, shards, split, cfg, seed) -> (Dataset, {metric: value})``: the training
  items of the given shards (``split`` names the cache split they must belong to, or None);
- ``make_module(cfg, cache) -> LightningModule``: the model, its heads and losses, with ``encoder``
  (the part that transfers) as an attribute;

where ``cfg`` is the pretrain stage's ``PretrainConfig``. ``METHODS`` maps a ``pretrain.method``
name to its module's import path (imported only when the method runs, so the CLI stays light);
the pretrain stage never branches on a method name.

Adding a method: ``usssl/methods/<name>.py`` with the two functions, its settings class plus one
line in ``usssl/config/methods.py: METHOD_SETTINGS``, and one line here.

    >>> method = method_module("cvrl")
    >>> dataset, metrics = method.make_dataset(cache, shards, "train", cfg, seed=0)
"""

from __future__ import annotations

import importlib
from types import ModuleType

METHODS: dict[str, str] = {
    "video_speech": "usssl.methods.video_speech",  # Jiao et al., MICCAI 2020
    "order_transform": "usssl.methods.order_transform",  # Jiao et al., ISBI 2020
    "cvrl": "usssl.methods.cvrl",  # Qian et al., CVPR 2021
    "frame_contrastive": "usssl.methods.frame_contrastive",  # SimCLR frames; ContraCAM (Mo et al., NeurIPS 2021)
    "tcgl": "usssl.methods.tcgl",  # Liu et al., IEEE TIP 2022
}


def method_module(name: str) -> ModuleType:
    """The module of method ``name`` (with ``make_dataset`` and ``make_module``)."""
    if name not in METHODS:
        raise KeyError(f"no pretraining method {name!r}; registered: {sorted(METHODS)}")
    return importlib.import_module(METHODS[name])


def register_method(name: str, module: str | None) -> None:
    """Register (or, with ``module=None``, remove) a method's module by import path, for a method
    kept outside the package; its settings go to ``usssl.config.register_method_settings``."""
    if module is None:
        METHODS.pop(name, None)
    else:
        METHODS[name] = module


__all__ = ["METHODS", "method_module", "register_method"]

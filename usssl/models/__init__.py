"""Networks: video encoders (2-D per frame, 3-D clip), speech encoders, heads, the saliency network,
and the encoder checkpoint.

Names are exported lazily: ``from usssl.models import build_encoder, mlp``.
"""

from usssl.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {  # name -> the module that defines it
    "build_encoder": "usssl.models.encoders",
    "build_speech_encoder": "usssl.models.encoders",
    "FrameEncoder": "usssl.models.encoders",
    "mlp": "usssl.models.heads",
    "SaliencyModel": "usssl.models.saliency",
    "save_encoder": "usssl.models.checkpoint",
    "load_encoder": "usssl.models.checkpoint",
})

"""Speech: spectrogram front-ends, voice activity (energy, silero), interval affinity and
pretrained speech models from a local folder.

Names are exported lazily: ``from usssl.speech import energy_vad, LogSpectrogram``.
"""

from usssl.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {  # name -> the module that defines it
    "energy_vad": "usssl.speech.vad",
    "speech_fraction": "usssl.speech.vad",
    "silero_vad": "usssl.speech.silero",
    "interval_affinity": "usssl.speech.affinity",
    "LogSpectrogram": "usssl.speech.frontend",
    "load_speech_model": "usssl.speech.pretrained",
})

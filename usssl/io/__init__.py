"""Readers, one per source format, each returning a :class:`~usssl.io.recording.Recording`, and the
registry (``usssl.io.registry``) that picks one for a file.

Names are exported lazily (the readers import their decoders only when used):
``from usssl.io import reader_for, Recording``.
"""

from usssl.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {  # name -> the module that defines it
    "Recording": "usssl.io.recording",
    "READERS": "usssl.io.registry",
    "media_extension": "usssl.io.registry",
    "reader_for": "usssl.io.registry",
    "recording_stem": "usssl.io.registry",
    "read_video": "usssl.io.video",
    "read_dicom": "usssl.io.dicom",
    "read_nifti": "usssl.io.nifti",
    "read_image": "usssl.io.image",
    "anatomy_mask_file": "usssl.io.masks",
    "read_anatomy_masks": "usssl.io.masks",
    "read_audio": "usssl.io.audio",
    "load_tables": "usssl.io.tables",
})

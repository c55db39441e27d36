"""Patient privacy: DICOM de-identification (PS3.15), pseudonymous subject ids (keyed hash), the
imaging-region crop and the masking of overlays inside it.

Names are exported lazily: ``from usssl.privacy import pseudonym, deidentify_tree``.
"""

from usssl.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {  # name -> the module that defines it
    "pseudonym": "usssl.privacy.pseudonym",
    "subject_key": "usssl.privacy.pseudonym",
    "crop_resize": "usssl.privacy.region",
    "detect_imaging_region": "usssl.privacy.region",
    "imaging_mask": "usssl.privacy.region",
    "map_points": "usssl.privacy.region",
    "static_mask": "usssl.privacy.region",
    "deidentify_file": "usssl.privacy.deid",
    "deidentify_tree": "usssl.privacy.deid",
})

"""Patient privacy: pseudonymous subject ids (keyed hash) and the imaging-region crop."""

from usssl.privacy.pseudonym import pseudonym, subject_key
from usssl.privacy.region import crop_resize, detect_imaging_region, imaging_mask, map_points

__all__ = ["crop_resize", "detect_imaging_region", "imaging_mask", "map_points", "pseudonym", "subject_key"]

"""The masks a shard stores beside its frames, in cached pixels (``usssl.data.cache``):

- ``region_mask.npy`` uint8 (H, W), 1 inside the imaging region: the region ingest found from
  motion (``ImagingGeometry.mask``), else all of the crop box (a DICOM ultrasound region, a manual
  box, ``crop: none``, a still image); cropped to the box and resized nearest-neighbour.
- ``masks.npy`` uint8 (T, H, W), 1 on the anatomy, for recordings whose dataset has anatomy masks
  (``usssl.io.masks``: the synthetic corpus, HC18): the source frame of each cached frame, cropped
  to the same box as the frames and resized nearest-neighbour (never blanked: the overlays ingest
  blanks in the frames are not anatomy).

    >>> region = cached_region(geo, (64, 64))                  # (64, 64) uint8 0/1
    >>> masks = cached_masks(source_masks, src_idx, geo.box, (64, 64))
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from usssl.errors import DataError

log = logging.getLogger(__name__)


def cached_region(geo, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) 0/1: ``geo``'s imaging region (a ``usssl.data.frames.ImagingGeometry``) in cached
    pixels (module docstring)."""
    x0, y0, x1, y1 = geo.box
    if geo.mask is None:
        return np.ones((int(size[0]), int(size[1])), np.uint8)
    crop = np.ascontiguousarray(geo.mask[y0:y1, x0:x1], np.uint8)
    return cv2.resize(crop, (int(size[1]), int(size[0])), interpolation=cv2.INTER_NEAREST)


def cached_masks(masks: np.ndarray | None, src_idx: np.ndarray, box, size: tuple[int, int]) -> np.ndarray | None:
    """uint8 (P, H, W) 0/1: ``masks`` (n, H0, W0) of the source frames, at the source frames
    ``src_idx`` (P,) of the cached frames, cropped to ``box`` (x0, y0, x1, y1) and resized
    nearest-neighbour to ``size`` (height, width); None when ``masks`` is None."""
    if masks is None:
        return None
    x0, y0, x1, y1 = box
    out = np.empty((len(src_idx), int(size[0]), int(size[1])), np.uint8)
    for k, i in enumerate(src_idx):
        crop = np.ascontiguousarray(masks[i, y0:y1, x0:x1], np.uint8)
        out[k] = cv2.resize(crop, (int(size[1]), int(size[0])), interpolation=cv2.INTER_NEAREST)
    return (out > 0).astype(np.uint8)


def mask_file_of(path: Path, stem: str) -> str | None:
    """The anatomy mask file of the recording ``path`` (``usssl.io.masks.anatomy_mask_file``) as a
    string (for the picklable ingest job), or None."""
    from usssl.io.masks import anatomy_mask_file

    found = anatomy_mask_file(Path(path), stem)
    return None if found is None else str(found)


def source_masks(mask_file: str | None, rec) -> np.ndarray | None:
    """The anatomy masks (n, H, W) of the recording ``rec`` from ``mask_file`` (``usssl.io.masks``), or
    None without one; a file that does not fit the recording is logged (the report's notes) and
    left out, so the recording is still ingested, without masks."""
    if mask_file is None:
        return None
    from usssl.io.masks import read_anatomy_masks

    try:
        return read_anatomy_masks(Path(mask_file), rec.n_frames, rec.height, rec.width)
    except DataError as exc:
        said = str(exc).replace(Path(mask_file).name, "the anatomy mask file")  # shard.json names no file
        log.warning("anatomy masks left out: %s", said)
        return None


__all__ = ["cached_region", "cached_masks", "mask_file_of", "source_masks"]

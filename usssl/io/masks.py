"""Anatomy masks beside a recording: where they are and how they are read.

A recording ``DIR/<stem>.<ext>`` has an anatomy mask when one of these exists (the first found wins):

- an image beside it: ``DIR/<stem>_mask.png`` or ``DIR/<stem>_Annotation.png`` (also ``.jpg``,
  ``.jpeg``, ``.bmp``, ``.tif``; ``_Annotation`` is HC18's naming), for a still image;
- an array beside it: ``DIR/<stem>_mask.npz`` / ``.npy``;
- an array in a sibling ``masks`` folder: ``DIR/../masks/<stem>.npz`` / ``.npy`` (the synthetic
  corpus: ``videos/scan_000.mp4`` and ``masks/scan_000.npz``).

An array is (T, H, W) in source pixels, one mask per source frame (an ``.npz`` holds it under
``masks`` or as its only array), or (H, W) for a one-frame recording. A mask image is binarised
(> 0 for PNG and other lossless formats, >= 128 for JPEG) and its outlines are filled: HC18 draws the
head as an ellipse outline, and a region's outline and the region give the same mask. A mask image
is never read as a recording itself (:func:`is_mask_image`).

    >>> anatomy_mask_file(Path("hc18/000_HC.png"), "000_HC")
    PosixPath('hc18/000_HC_Annotation.png')
    >>> read_anatomy_masks(path, n_frames=1, height=540, width=800).shape
    (1, 540, 800)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from usssl.errors import DataError

MASK_SUFFIXES = ("_mask", "_Annotation")  # <stem><suffix>.<ext> beside the recording (matched case-insensitively)
MASK_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_ARRAY_EXTENSIONS = (".npz", ".npy")
MASKS_FOLDER = "masks"  # DIR/../masks/<stem>.npz: the synthetic corpus's layout


def anatomy_mask_file(path: Path, stem: str) -> Path | None:
    """The anatomy mask file of the recording ``path`` whose table key is ``stem`` (module
    docstring), or None."""
    path = Path(path)
    folder = path.parent
    for suffix in MASK_SUFFIXES:
        for ext in MASK_IMAGE_EXTENSIONS + MASK_ARRAY_EXTENSIONS:
            found = _existing(folder, stem, suffix, ext)
            if found is not None and found != path:
                return found
    if folder.name != MASKS_FOLDER:
        for ext in MASK_ARRAY_EXTENSIONS:
            if (folder.parent / MASKS_FOLDER / f"{stem}{ext}").is_file():
                return folder.parent / MASKS_FOLDER / f"{stem}{ext}"
    return None


def _existing(folder: Path, stem: str, suffix: str, ext: str) -> Path | None:
    """``folder/<stem><suffix><ext>`` in the spellings people use (the suffix as given, lower case
    or capitalised; the extension lower or upper case), when one is a file."""
    for s in dict.fromkeys([suffix, suffix.lower(), "_" + suffix[1:].capitalize()]):
        for e in dict.fromkeys([ext, ext.upper()]):
            candidate = folder / f"{stem}{s}{e}"
            if candidate.is_file():
                return candidate
    return None


def is_mask_image(path: Path, image_extensions=MASK_IMAGE_EXTENSIONS) -> bool:
    """Whether ``path`` is the mask of an image beside it (``<stem>_mask.png`` next to
    ``<stem>.png`` or another image of ``image_extensions``): such a file is not a recording."""
    path = Path(path)
    name = path.name.lower()
    ext = next((e for e in image_extensions if name.endswith(e)), None)
    if ext is None:
        return False
    stem = path.name[: -len(ext)]
    for suffix in MASK_SUFFIXES:
        if stem.lower().endswith(suffix.lower()) and len(stem) > len(suffix):
            base = stem[: -len(suffix)]
            if any((path.parent / f"{base}{e}").is_file() or (path.parent / f"{base}{e.upper()}").is_file()
                   for e in image_extensions):
                return True
    return False


def read_anatomy_masks(path: Path, n_frames: int, height: int, width: int) -> np.ndarray:
    """uint8 (n_frames, height, width) 0/1 anatomy masks of a recording, in source pixels, from
    ``path`` (an image for a one-frame recording, or an array: module docstring).

    Raises:
        DataError: the file cannot be read, or its shape is not the recording's.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(MASK_ARRAY_EXTENSIONS):
        masks = _read_array(path)
    else:
        masks = _read_image_mask(path)[None]
    if masks.ndim == 2:
        masks = masks[None]
    if masks.shape != (n_frames, height, width):
        raise DataError(f"{path.name}: anatomy mask of shape {tuple(masks.shape)}, but the recording beside it "
                        f"has {n_frames} frame(s) of {height}x{width} pixels (height x width); fix or remove "
                        "the mask file")  # fmt: skip
    return (masks > 0).astype(np.uint8)


def _read_array(path: Path) -> np.ndarray:
    try:
        if path.name.lower().endswith(".npy"):
            return np.asarray(np.load(path, allow_pickle=False))
        with np.load(path, allow_pickle=False) as data:
            key = "masks" if "masks" in data.files else data.files[0] if len(data.files) == 1 else None
            if key is None:
                raise DataError(f"{path.name}: an anatomy mask .npz holds its array as 'masks' (or alone); it has "
                                f"{data.files}")  # fmt: skip
            return np.asarray(data[key])
    except (OSError, ValueError) as exc:
        raise DataError(f"{path.name}: unreadable anatomy mask ({type(exc).__name__}: {exc})") from None


def _read_image_mask(path: Path) -> np.ndarray:
    """(H, W) bool: the image's foreground, outlines filled."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DataError(f"{path.name}: unreadable anatomy mask image")
    lossy = path.name.lower().endswith((".jpg", ".jpeg"))
    fg = ((image >= 128) if lossy else (image > 0)).astype(np.uint8)
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(fg)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return (filled | fg).astype(bool)


__all__ = ["MASK_SUFFIXES", "MASK_IMAGE_EXTENSIONS", "MASK_ARRAY_EXTENSIONS", "MASKS_FOLDER", "anatomy_mask_file",
           "is_mask_image", "read_anatomy_masks"]

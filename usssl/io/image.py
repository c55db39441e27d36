"""Still images (PNG, JPEG, BMP, TIFF) as one-frame recordings.

Hospital exports and public image sets (HC18, BUSI) hold stills; each is read as a recording of one
frame, so it is ingested, split and trained on like a cine. Decoding is OpenCV's:

- 8-bit grey stays as stored; 16-bit is mapped to 8 bits (value / 257, rounded); an alpha channel
  is dropped; a palette image is expanded.
- a colour image whose three channels are equal everywhere is grey (``meta["photometric"]``
  ``MONOCHROME2``); any other is colour (``RGB``): decoded grey as BT.601 luma, or as RGB through
  :meth:`Recording.as_colour` (ingest's colour-Doppler probe).
- fps is ``STILL_FPS`` and the single timestamp 0; ingest keeps one frame whatever its fps
  (``usssl.data.frames.kept_frames``). No physical spacing is stated (``spacing_mm`` None).

A mask image beside it (``<stem>_mask.png``, ``<stem>_Annotation.png``: ``usssl.io.masks``) is its
anatomy mask, not a recording.

    >>> rec = read_image(Path("hc18/000_HC.png"), Path("hc18"))
    >>> rec.n_frames, rec.height, rec.width, next(rec.iter_frames()).shape
    (1, 540, 800, (1, 540, 800))
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from usssl.errors import DataError
from usssl.io.recording import Recording
from usssl.io.video import relative_source

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
STILL_FPS = 1.0  # the stated rate of a still (one frame: the rate only sets its 1 s duration)


class ImageFrames:
    """Picklable frame source of a still: one block (1, H, W) grey or (1, H, W, 3) RGB; the
    ``grayscale`` attribute makes it colour-capable (:meth:`Recording.as_colour`)."""

    def __init__(self, path: Path, grayscale: bool = True) -> None:
        self.path, self.grayscale = Path(path), grayscale

    def __call__(self, chunk: int) -> Iterator[np.ndarray]:
        import cv2

        rgb = _read_rgb(self.path)  # (H, W) grey or (H, W, 3) RGB
        if rgb.ndim == 3 and self.grayscale:
            rgb = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)  # BT.601, as usssl.data.frames.grey
        yield rgb[None]


def _read_rgb(path: Path) -> np.ndarray:
    """uint8 (H, W) when grey (also a colour file with equal channels), else (H, W, 3) RGB."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if image is None or image.size == 0:
        raise DataError(f"{path}: not a readable image (PNG, JPEG, BMP, TIFF); check that the file is complete")
    if image.dtype == np.uint16:
        image = np.round(image / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"{path}: {image.dtype} pixels; usssl reads 8- and 16-bit images")
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = image[..., :3]
        if image.shape[2] == 1:
            image = image[..., 0]
        elif (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all():
            image = np.ascontiguousarray(image[..., 0])
        else:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def read_image(path: str | Path, root: str | Path | None = None, *, grayscale: bool = True,
               audio: bool = True, audio_rate: int | None = None) -> Recording:  # fmt: skip
    """Open a still image as a one-frame :class:`Recording` (module docstring).

    Args:
        path: the image file; root: the ingest root (``Recording.source`` is relative to it).
        grayscale: decode colour as luma (the default) rather than (1, H, W, 3) RGB.
        audio, audio_rate: accepted for the common reader signature; a still has no narration.

    Raises:
        DataError: the file is not a readable 8- or 16-bit image.
    """
    path = Path(path)
    image = _read_rgb(path)
    height, width = image.shape[:2]
    return Recording(
        source=relative_source(path, Path(root) if root is not None else None),
        fps=STILL_FPS, n_frames=1, height=int(height), width=int(width), timestamps=np.zeros(1),
        meta={"format": "image", "photometric": "RGB" if image.ndim == 3 else "MONOCHROME2", "n_frames": 1,
              "notes": []},
        frame_source=ImageFrames(path, grayscale),
    )  # fmt: skip


__all__ = ["IMAGE_EXTENSIONS", "STILL_FPS", "ImageFrames", "read_image"]

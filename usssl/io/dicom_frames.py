"""DICOM pixel data to uint8 frames, decoded lazily (the rules are in ``usssl.io.dicom``).

:class:`DicomFrames` is the picklable frame source of a DICOM :class:`~usssl.io.recording.Recording`:
it decodes one frame at a time with :func:`pydicom.pixels.iter_pixels` on the file path and turns
each into uint8 (H, W) grey or (H, W, 3) RGB with :class:`FrameConverter`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, iter_pixels

from usssl.errors import DataError
from usssl.io.recording import FrameBlocks

YBR = ("YBR_FULL", "YBR_FULL_422")  # decoded as stored, converted to RGB by OpenCV (several x faster)
_YBR_TO_RGB = np.array([[1.0, 0.0, 1.402, -1.402 * 128],  # PS3.3 C.7.6.3.1.2 (YBR_FULL), inverted
                        [1.0, -0.344136, -0.714136, (0.344136 + 0.714136) * 128],
                        [1.0, 1.772, 0.0, -1.772 * 128]])  # fmt: skip


class DicomFrames:
    """Picklable frame source: decodes ``path`` from the first frame on every call.

    Yields uint8 blocks (t, H, W) grey (with ``grayscale`` colour as luma) or (t, H, W, 3) RGB, at
    most ``chunk`` frames each and ``n_frames`` in total; ``override``: the header's Number of Frames
    is wrong (``usssl.io.dicom.frame_count``), so pydicom is told ``n_frames`` instead. How each
    photometric interpretation becomes 8 bits: the docstring of ``usssl.io.dicom``.
    """

    def __init__(self, path: Path, n_frames: int, syntax: str, has_meta: bool,
                 grayscale: bool = True, override: bool = False) -> None:  # fmt: skip
        self.path, self.n_frames, self.syntax, self.has_meta = Path(path), n_frames, syntax, has_meta
        self.grayscale = grayscale
        self.override = override  # the header's Number of Frames is wrong: decode ``n_frames`` instead

    def _frames(self, as_rgb: bool) -> Iterator[np.ndarray]:
        options = {"as_rgb": as_rgb, **({"number_of_frames": self.n_frames} if self.override else {})}
        if self.has_meta:
            yield from iter_pixels(self.path, **options)
            return
        ds = pydicom.dcmread(self.path, force=True)  # no file meta: decode from memory
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = self.syntax
        yield from iter_pixels(ds, **options)

    def __call__(self, chunk: int) -> Iterator[np.ndarray]:
        ds = pydicom.dcmread(self.path, stop_before_pixels=True, force=True)
        to_uint8, blocks = FrameConverter(ds, self.grayscale), FrameBlocks(chunk, self.n_frames)
        try:
            frames = (to_uint8(f) for f in self._frames(as_rgb=to_uint8.photometric not in YBR))  # YBR: ours is faster
            yield from blocks(frames)
        except (ValueError, RuntimeError, OSError, KeyError, AttributeError) as exc:
            raise DataError(f"{self.path}: decoding failed after {blocks.count} frames ({exc}); the pixel data "
                            "is damaged or in an encoding no installed decoder reads: export the file again, "
                            "e.g. uncompressed") from None  # fmt: skip


class FrameConverter:
    """One decoded frame (pydicom's dtype and layout) -> uint8 (H, W), or (H, W, 3) RGB for colour
    unless ``grayscale`` (then luma: Y of YBR as stored, else 0.299 R + 0.587 G + 0.114 B)."""

    def __init__(self, ds: Dataset, grayscale: bool = True) -> None:
        self.ds, self.photometric = ds, str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        self.grayscale = grayscale
        self.bits = int(ds.get("BitsStored", 8) or 8)
        self.slope = float(ds.get("RescaleSlope", 1) or 1)
        self.intercept = float(ds.get("RescaleIntercept", 0) or 0)
        self.window = _first_window(ds)
        self.range: tuple[float, float] | None = None  # min-max fixed from the first frame

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if frame.ndim == 3 and self.grayscale:
            if self.photometric in YBR and frame.dtype == np.uint8:
                return np.ascontiguousarray(frame[..., 0])  # Y is the luma
            return cv2.cvtColor(self._colour(frame), cv2.COLOR_RGB2GRAY)
        return self._colour(frame) if frame.ndim == 3 else self._grey(frame)

    def _colour(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) decoded colour -> uint8 RGB."""
        if self.photometric in YBR and frame.dtype == np.uint8:  # Y, Cb, Cr -> R, G, B
            return cv2.transform(np.ascontiguousarray(frame), _YBR_TO_RGB)  # saturating, rounded uint8
        if frame.dtype == np.uint8:
            return frame
        # 16-bit palette entries span 0..65535; native colour spans BitsStored bits
        shift = 8 if self.photometric == "PALETTE COLOR" else max(self.bits - 8, 0)
        return np.clip(frame.astype(np.int64) >> shift, 0, 255).astype(np.uint8)

    def _grey(self, frame: np.ndarray) -> np.ndarray:
        """(H, W) one sample per pixel -> uint8 grey (a palette image -> uint8 RGB)."""
        if self.photometric == "PALETTE COLOR":
            rgb = self._colour(apply_color_lut(frame, self.ds))  # (H, W, 3)
            return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if self.grayscale else rgb
        if frame.dtype == np.uint8 and self.bits <= 8 and self.slope == 1 and self.intercept == 0:
            grey = frame
        else:
            grey = self._scale(frame.astype(np.float64) * self.slope + self.intercept)
        return 255 - grey if self.photometric == "MONOCHROME1" else grey

    def _scale(self, values: np.ndarray) -> np.ndarray:
        if self.window is not None:  # PS3.3 C.11.2.1.2.1, linear VOI window
            center, width = self.window
            out = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
        else:
            if self.range is None:
                self.range = (float(values.min()), float(values.max()))
            lo, hi = self.range
            out = (values - lo) * (255.0 / max(hi - lo, 1e-9))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _first_window(ds: Dataset) -> tuple[float, float] | None:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
    width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
    return (center, width) if width > 1 else None

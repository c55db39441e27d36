"""NIfTI 2-D+time (``.nii``, ``.nii.gz``) through nibabel: frames, spacing, frame rate.

Layouts read: (X, Y, T) and (X, Y, 1, T) (a 2-D plane over time; the third axis of a 3-D array
is taken as time), and (X, Y) as a single frame. Array axis 0 is the column (x) and axis 1 the
row (y), so frame t is ``data[:, :, t].T`` (H = Y, W = X); the affine is not applied (no
reorientation). Other shapes (a true 3-D or 3-D+time volume) are a :class:`DataError`.

- ``spacing_mm`` (row, column) = the header zooms of y and x, when the spatial unit is mm,
  micron or metre (converted to mm); None when the unit is unknown.
- fps = 1 / (time zoom), with the time zoom in the header's time unit (s, ms, us), when both are
  set; otherwise 30 fps with a logged warning (``meta["fps_source"]`` says which).
- uint8 data without scaling is kept as stored; anything else is mapped linearly to 0..255 with
  the min and max of up to 5 frames spread over the recording, fixed for the whole recording.

Frames are read lazily, ``chunk`` time points at a time, from the file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from usssl.errors import DataError
from usssl.io.recording import Recording
from usssl.io.video import relative_source

log = logging.getLogger(__name__)

NIFTI_EXTENSIONS = (".nii", ".nii.gz")
FALLBACK_FPS = 30.0
_TO_MM = {"mm": 1.0, "micron": 1e-3, "meter": 1e3}
_TO_S = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def _nibabel():
    try:
        import nibabel
    except ImportError:  # optional heavy dependency: a clear message
        raise DataError("reading NIfTI needs nibabel: pip install 'nibabel>=5.2'") from None
    return nibabel


def _load(path: Path):
    nib = _nibabel()
    try:
        return nib.load(str(path))
    except (OSError, ValueError, EOFError, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({exc}); check that the file is complete") from None


def _frames_axis(shape: tuple[int, ...], path: Path) -> int:
    """Number of time points of a 2-D+time shape, or DataError."""
    if len(shape) == 2:
        return 1
    if len(shape) == 3:
        return shape[2]
    if len(shape) == 4 and shape[2] == 1:
        return shape[3]
    raise DataError(f"{path}: NIfTI of shape {shape} is not 2-D+time ((X, Y, T) or (X, Y, 1, T)); "
                    "3-D volumes are not supported")  # fmt: skip


class NiftiFrames:
    """Picklable frame source: uint8 (t, Y, X) blocks read from ``path`` on every call."""

    def __init__(self, path: Path, n_frames: int, scale: tuple[float, float] | None) -> None:
        self.path, self.n_frames, self.scale = Path(path), n_frames, scale

    def __call__(self, chunk: int) -> Iterator[np.ndarray]:
        proxy = _load(self.path).dataobj
        for start in range(0, self.n_frames, chunk):
            yield self.to_uint8(_slab(proxy, start, min(start + chunk, self.n_frames)))

    def to_uint8(self, block: np.ndarray) -> np.ndarray:
        """(t, Y, X) values -> uint8 with the recording's fixed linear mapping."""
        if self.scale is None:
            return np.ascontiguousarray(block, dtype=np.uint8)
        lo, hi = self.scale
        out = (block.astype(np.float64) - lo) * (255.0 / max(hi - lo, 1e-9))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _slab(proxy, start: int, stop: int) -> np.ndarray:
    """Time points [start, stop) as (t, Y, X)."""
    shape = proxy.shape
    if len(shape) == 2:
        data = np.asarray(proxy[:, :])[..., None]
    elif len(shape) == 3:
        data = np.asarray(proxy[:, :, start:stop])
    else:
        data = np.asarray(proxy[:, :, 0, start:stop])
    return np.transpose(data, (2, 1, 0))  # (X, Y, t) -> (t, Y, X)


def read_nifti(path: str | Path, root: str | Path | None = None, *, grayscale: bool = True,
               audio: bool = True, audio_rate: int | None = None) -> Recording:  # fmt: skip
    """Open a 2-D+time NIfTI file and return its lazy :class:`Recording` (rules: module docstring).

    Args:
        path: the ``.nii`` / ``.nii.gz`` file.
        root: the ingest root; ``Recording.source`` is ``path`` relative to it.
        grayscale, audio, audio_rate: accepted for the common reader signature (NIfTI frames are
            grey and carry no narration).

    Raises:
        DataError: unreadable file, missing nibabel, or not a 2-D+time shape.
    """
    path = Path(path)
    img = _load(path)
    header = img.header
    shape = tuple(int(n) for n in img.shape)
    n_frames = _frames_axis(shape, path)
    if n_frames < 1 or shape[0] < 1 or shape[1] < 1:
        raise DataError(f"{path}: empty NIfTI image of shape {shape}")
    dtype = np.dtype(header.get_data_dtype())
    if dtype.kind not in "uif":
        raise DataError(f"{path}: NIfTI data type {dtype} is not supported (grey numbers only)")
    zooms = [float(z) for z in header.get_zooms()]
    space_unit, time_unit = header.get_xyzt_units()
    spacing = None
    if space_unit in _TO_MM and zooms[0] > 0 and zooms[1] > 0:
        spacing = (zooms[1] * _TO_MM[space_unit], zooms[0] * _TO_MM[space_unit])  # (row, column)
    time_zoom = zooms[len(shape) - 1] if len(shape) >= 3 and len(zooms) >= len(shape) else 0.0
    if time_unit in _TO_S and time_zoom > 0:
        fps, fps_source = 1.0 / (time_zoom * _TO_S[time_unit]), "pixdim"
    else:
        fps, fps_source = FALLBACK_FPS, "fallback"
        if n_frames > 1:
            log.warning("a NIfTI file states no time step: assuming %.0f fps", FALLBACK_FPS)
    slope, inter = header.get_slope_inter()
    scaled = slope not in (None, 1.0) or inter not in (None, 0.0)
    scale = None
    if dtype != np.uint8 or scaled:
        picks = np.unique(np.linspace(0, n_frames - 1, min(5, n_frames)).round().astype(int))
        values = [_slab(img.dataobj, int(t), int(t) + 1) for t in picks]
        scale = (float(min(v.min() for v in values)), float(max(v.max() for v in values)))
    return Recording(
        source=relative_source(path, Path(root) if root is not None else None),
        fps=float(fps),
        n_frames=n_frames,
        height=shape[1],
        width=shape[0],
        timestamps=np.arange(n_frames) / fps,
        spacing_mm=spacing,
        meta={"format": "nifti", "dtype": str(dtype), "fps_source": fps_source, "shape": list(shape)},
        frame_source=NiftiFrames(path, n_frames, scale),
    )
